#!/usr/bin/env python3
"""gguf-py's dequantization of a few rows of the real Gemma 3 270M GGUF, for `make test-real`.

    python scripts/gguf_reference.py gemma-3-270m-q4_k_m.gguf gguf-reference.json

Needs the PyPI `gguf` package (and numpy). For one tensor of each type in the file it writes
the GGUF and Hugging Face names, the type, and selected rows as f32 bit patterns (u32), after
subtracting llama.cpp's +1 from norm weights in f32, exactly what `alc convert` must produce.
"""

import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

# (GGUF name, HF name, rows to keep; None = a 1-D tensor, kept whole)
PICKS = [
    ("token_embd.weight", "model.embed_tokens.weight", [0, 2, 1000, 262143]),
    ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", [0, 511, 1023]),
    ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", [0, 255]),
    ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight", [0, 639]),
    ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", [0, 639]),
    ("blk.17.ffn_up.weight", "model.layers.17.mlp.up_proj.weight", [2047]),
    ("blk.5.attn_k_norm.weight", "model.layers.5.self_attn.k_norm.weight", None),
    ("output_norm.weight", "model.norm.weight", None),
]


def main(gguf_path, out_path):
    reader = GGUFReader(gguf_path)
    by_name = {t.name: t for t in reader.tensors}
    out = []
    for name, hf, rows in PICKS:
        t = by_name[name]
        data = np.asarray(t.data)
        if rows is None:
            values = dequantize(data.reshape(1, -1), t.tensor_type).reshape(1, -1)
        else:
            values = dequantize(data[rows], t.tensor_type)
        values = values.astype(np.float32)
        if hf.endswith("norm.weight"):
            values = values - np.float32(1.0)
        out.append({
            "gguf_name": name,
            "hf_name": hf,
            "type": t.tensor_type.name,
            "gguf_dims": [int(d) for d in t.shape],
            "rows": rows if rows is not None else [0],
            "bits": [[int(b) for b in row.view(np.uint32)] for row in values],
        })
    Path(out_path).write_text(json.dumps({"gguf": Path(gguf_path).name, "tensors": out}) + "\n")
    print(f"gguf_reference: {len(out)} tensors -> {out_path}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
