#!/usr/bin/env python3
"""Run an exported ALBERT ONNX file in onnxruntime on a fixture's goldens.json and compare logits.

Usage: ort_check.py MODEL.onnx GOLDENS.json [--tol 1e-4] [--id-map IDS.json]

Checks every utterance alone and the padded batch. With --id-map (a JSON list: new id -> old id,
for a pruned vocabulary) the golden token ids are remapped first. Prints one JSON line with the
max abs difference and exits 1 when it exceeds --tol. Needs only numpy and onnxruntime.
"""

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("goldens")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--id-map")
    args = ap.parse_args()
    g = json.load(open(args.goldens, encoding="utf-8"))
    remap = None
    if args.id_map:
        remap = {old: new for new, old in enumerate(json.load(open(args.id_map)))}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}

    def run(ids, mask, types):
        if remap is not None:
            ids = [[remap[i] for i in row] for row in ids]
        feed = {"input_ids": np.array(ids, np.int64), "attention_mask": np.array(mask, np.int64),
                "token_type_ids": np.array(types, np.int64)}
        return sess.run(["logits"], {k: v for k, v in feed.items() if k in names})[0]

    worst = 0.0
    for u in g["utterances"]:
        out = run([u["input_ids"]], [u["attention_mask"]], [u["token_type_ids"]])[0]
        worst = max(worst, float(np.abs(out - np.array(u["logits"], np.float32)).max()))
    b = g["padded_batch"]
    out = run(b["input_ids"], b["attention_mask"], b["token_type_ids"])
    worst = max(worst, float(np.abs(out - np.array(b["logits"], np.float32)).max()))
    print(json.dumps({"model": args.model, "max_abs_diff": worst, "utterances": len(g["utterances"]) + len(b["logits"]),
                      "onnxruntime": ort.__version__}))
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
