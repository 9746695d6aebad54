#!/usr/bin/env python3
"""Inputs of exact token lengths for the aon latency benchmark (scripts/bench/aon.sh), and
onnxruntime's dynamic INT8 model. Needs only numpy and onnxruntime.

    aon_lengths.py words DATA.json LABELS.json N OUT.json
        every distinct word of the first N `test` utterances of DATA (CLINC150 layout), one
        utterance each, in CLINC150 layout (labelled with the first label, so `aon eval` keeps
        them); `aon eval --predictions` on it gives each word's token ids.
    aon_lengths.py texts DATA.json LABELS.json WORD_PREDICTIONS.json WORDS.json L N OUT.json
        N utterances of exactly L tokens ([CLS] and [SEP] included): each of the first N test
        utterances' words repeated until L - 2 pieces, the last gap filled with one-piece words
        (the tokenizer splits on whitespace first, so a text's pieces are its words' pieces).
    aon_lengths.py dynamic IN.onnx OUT.onnx
        onnxruntime.quantization.quantize_dynamic (int8 weights, per channel).
"""

import json
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def label_of(intent, labels):
    return intent if intent in labels else labels[0]


def words(data, labels, n, out):
    seen = []
    for text, _ in load(data)["test"][: int(n)]:
        for w in text.split():
            if w not in seen:
                seen.append(w)
    first = load(labels)[0]
    json.dump({"test": [[w, first] for w in seen]}, open(out, "w", encoding="utf-8"))


def texts(data, labels, word_pred, word_file, length, n, out):
    length, n = int(length), int(n)
    pieces = {}
    for (w, _), ids in zip(load(word_file)["test"], load(word_pred)["input_ids"]):
        pieces[w] = len(ids) - 2
    fillers = [w for w, k in pieces.items() if k == 1]
    if not fillers:
        sys.exit("no one-piece word to fill with")
    labels = load(labels)
    rows = []
    for text, intent in load(data)["test"][:n]:
        ws = [w for w in text.split() if pieces.get(w, 0) > 0]
        picked, total, i = [], 0, 0
        while ws and i < 4 * length:
            w = ws[i % len(ws)]
            if total + pieces[w] <= length - 2:
                picked.append(w)
                total += pieces[w]
            i += 1
        while total < length - 2:
            picked.append(fillers[total % len(fillers)])
            total += 1
        rows.append([" ".join(picked), label_of(intent, labels)])
    json.dump({"test": rows}, open(out, "w", encoding="utf-8"))


def dynamic(src, dst):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"words": words, "texts": texts, "dynamic": dynamic}[cmd](*args)


if __name__ == "__main__":
    main()
