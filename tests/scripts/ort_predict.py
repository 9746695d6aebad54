#!/usr/bin/env python3
"""Run an intent classifier ONNX file in onnxruntime on the token ids `aon eval --predictions`
wrote, and compare with our predictions and the gold labels.

Usage: ort_predict.py MODEL.onnx PREDICTIONS.json [--min-agreement 0.99] [--bench N]

Prints one JSON line: onnxruntime's accuracy, its agreement with our predictions, and (with
--bench N) its single-utterance latency p50/p95 over the first N utterances. Exits 1 when the
agreement is below --min-agreement. Needs only numpy and onnxruntime.
"""

import argparse
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("predictions")
    ap.add_argument("--min-agreement", type=float, default=0.99)
    ap.add_argument("--bench", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    d = json.load(open(args.predictions, encoding="utf-8"))
    opts = ort.SessionOptions()
    if args.threads:
        opts.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}

    def run(ids):
        ids = np.array([ids], np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        return sess.run(["logits"], {k: v for k, v in feed.items() if k in names})[0][0]

    preds = [int(np.argmax(run(ids))) for ids in d["input_ids"]]
    n = len(preds)
    agree = sum(p == q for p, q in zip(preds, d["predicted"])) / max(n, 1)
    acc = sum(p == g for p, g in zip(preds, d["gold"])) / max(n, 1)
    out = {"model": args.model, "utterances": n, "onnxruntime_accuracy": acc, "agreement": agree,
           "onnxruntime": ort.__version__}
    if args.bench:
        lat = []
        for ids in d["input_ids"][: args.bench]:
            t0 = time.perf_counter()
            run(ids)
            lat.append((time.perf_counter() - t0) * 1e3)
        out["latency_p50_ms"] = float(np.percentile(lat, 50))
        out["latency_p95_ms"] = float(np.percentile(lat, 95))
    print(json.dumps(out))
    return 0 if agree >= args.min_agreement else 1


if __name__ == "__main__":
    sys.exit(main())
