#!/usr/bin/env python3
"""Last-position logits of a Gemma 3 checkpoint in plain NumPy: the reference for the runtime.

    python scripts/reference_forward.py CHECKPOINT_DIR --prompt "The capital of France is" \
        --out logits.npy [--greedy 12]
    python scripts/reference_forward.py CHECKPOINT_DIR --ids 2,651,6037 --out logits.npy

Reads config.json (either key style) and model.safetensors (f32 or bf16, memory-mapped) and
runs the float32 forward of fixtures/gen/check_numpy.py (which matches transformers on the tiny
fixtures). Writes the logits after the last token as a float32 .npy and, beside it, a .json
with the ids, the top-5 next tokens and the greedy continuation. --prompt needs the PyPI
`tokenizers` package and the checkpoint's tokenizer.json: the ids are BOS + the encoding of
the text without special tokens. NumPy is the only other dependency.
"""

import argparse
import json
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures" / "gen"))
from check_numpy import gemma_logits  # noqa: E402


def load_safetensors_mmap(path):
    """name -> float32 array; f32 tensors stay memory-mapped, bf16 ones are widened."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, meta in header.items():
        a, b = meta["data_offsets"]
        if meta["dtype"] == "F32":
            arr = raw[a:b].view("<f4")
        elif meta["dtype"] == "BF16":
            arr = (raw[a:b].view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{name}: dtype {meta['dtype']}")
        out[name] = arr.reshape(meta["shape"])
    return out


def prompt_ids(checkpoint, prompt, bos):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    return tok, [bos] + tok.encode(prompt, add_special_tokens=False).ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--prompt")
    ap.add_argument("--ids", help="comma-separated token ids (BOS included)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--greedy", type=int, default=12, help="greedy tokens to append to the .json")
    args = ap.parse_args()
    cfg = json.loads((args.checkpoint / "config.json").read_text())
    weights = load_safetensors_mmap(args.checkpoint / "model.safetensors")
    tok = None
    if args.prompt is not None:
        tok, ids = prompt_ids(args.checkpoint, args.prompt, cfg.get("bos_token_id", 2))
    elif args.ids:
        ids = [int(i) for i in args.ids.split(",")]
    else:
        ap.error("give --prompt or --ids")
    start = time.monotonic()
    logits = gemma_logits(cfg, weights, ids).astype(np.float32)
    seconds = time.monotonic() - start
    np.save(args.out, logits)
    seq, greedy = list(ids), []
    step_logits = logits
    for _ in range(args.greedy):
        nxt = int(np.argmax(step_logits))
        greedy.append(nxt)
        seq.append(nxt)
        step_logits = gemma_logits(cfg, weights, seq)
    top = np.argsort(-logits)[:5]
    decode = (lambda t: tok.decode(t, skip_special_tokens=False)) if tok else (lambda t: None)
    report = {
        "checkpoint": str(args.checkpoint),
        "prompt": args.prompt,
        "ids": ids,
        "top5": [{"id": int(i), "logit": float(logits[i]), "token": decode([int(i)])} for i in top],
        "next_token": int(top[0]),
        "greedy_ids": greedy,
        "greedy_text": decode(greedy),
        "forward_seconds": round(seconds, 2),
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
