"""Kernels of the mALBERT encoder (`aon compile --target`) besides its matrix products.

The encoder's linear layers use `qlinear_i8` (int8 activations x int8 weights, int8mm.py) or the
f32 `gemm` of qmatmul.py (plus the bias, added by the runtime); these are the row kernels around
them, all over a dynamic number of tokens n (one utterance, no padding):

- `layer_norm`: Y = (X - mean) / sqrt(var + eps) * G + B per row of `width`;
- `add_layer_norm`: the same over X + R (the residual add fused in);
- `gelu`: the tanh approximation (`gelu_new`, what the export writes), via fastmath.py;
- `attention_full`: bidirectional multi-head attention of one sequence, Q, K, V [n, heads*hd]
  -> O [n, heads*hd], softmax(q.k * scale) v with the maximum subtracted (two passes over the
  keys: maximum, then weights and output), one parallel task per (query, head).

`eps` and `scale` are scalar arguments so one kernel serves every layer of a width.
"""
from tvm import s_tir, te, tirx
from tvm.script import tirx as T

import fastmath



def f32(v):
    return tirx.const(v, "float32")


def _norm(width, residual):
    n = te.var("n")
    x = te.placeholder((n, width), "float32", name="X")
    r = te.placeholder((n, width), "float32", name="R") if residual else None
    g = te.placeholder((width,), "float32", name="G")
    b = te.placeholder((width,), "float32", name="B")
    eps = te.var("eps", "float32")
    if residual:
        s = te.compute((n, width), lambda t, c: x[t, c] + r[t, c], name="S")
    else:
        s = x
    k = te.reduce_axis((0, width), "k")
    mean = te.compute((n,), lambda t: te.sum(s[t, k], axis=k), name="MEAN")
    k2 = te.reduce_axis((0, width), "k2")
    var = te.compute(
        (n,),
        lambda t: te.sum(
            (s[t, k2] - mean[t] / f32(width)) * (s[t, k2] - mean[t] / f32(width)), axis=k2
        ),
        name="VAR",
    )
    y = te.compute(
        (n, width),
        lambda t, c: (s[t, c] - mean[t] / f32(width))
        * (f32(1.0) / te.sqrt(var[t] / f32(width) + eps))
        * g[c]
        + b[c],
        name="Y",
    )
    args = [x, r, g, b, eps, y] if residual else [x, g, b, eps, y]
    # The row statistics are computed inside the row loop (no [n] buffers, which would be heap
    # workspaces). One thread: an utterance's few rows are not worth a parallel launch.
    sch = s_tir.Schedule(te.create_prim_func(args))
    t, _ = sch.get_loops(sch.get_sblock("Y"))
    for name in ("VAR", "MEAN"):
        sch.compute_at(sch.get_sblock(name), t)
    if residual:
        sch.compute_inline(sch.get_sblock("S"))
    return sch.mod["main"]


def layer_norm(spec, lanes):
    return _norm(spec["width"], residual=False)


def add_layer_norm(spec, lanes):
    return _norm(spec["width"], residual=True)


def gelu(spec, lanes):
    width = spec["width"]
    n = te.var("n")
    x = te.placeholder((n, width), "float32", name="X")

    y = te.compute((n, width), lambda t, c: fastmath.gelu_tanh(x[t, c]), name="Y")
    sch = s_tir.Schedule(te.create_prim_func([x, y]))
    if width % 16 == 0:
        _, c = sch.get_loops(sch.get_sblock("Y"))
        _, lanes_loop = sch.split(c, [None, 16])
        sch.vectorize(lanes_loop)
    return sch.mod["main"]


def attention_full(spec, lanes):
    heads, hd = spec["heads"], spec["head_dim"]
    width = heads * hd

    @T.prim_func
    def attn(q: T.handle, k: T.handle, v: T.handle, o: T.handle, scale: T.float32):
        T.func_attr({"tirx.noalias": True})
        n = T.int32()
        Q = T.match_buffer(q, (n, width), "float32")
        K = T.match_buffer(k, (n, width), "float32")
        V = T.match_buffer(v, (n, width), "float32")
        O = T.match_buffer(o, (n, width), "float32")
        for th in T.parallel(n * heads):
            # st: 0 maximum, 1 denominator, 2 score
            st = T.decl_buffer((3,), "float32")
            st[0] = T.float32(-3.0e38)
            st[1] = T.float32(0)
            for d in range(hd):
                O[th // heads, th % heads * hd + d] = T.float32(0)
            for j in range(n):
                st[2] = T.float32(0)
                for d in range(hd):
                    st[2] = st[2] + Q[th // heads, th % heads * hd + d] * K[j, th % heads * hd + d]
                st[0] = T.max(st[0], st[2] * scale)
            for j in range(n):
                st[2] = T.float32(0)
                for d in range(hd):
                    st[2] = st[2] + Q[th // heads, th % heads * hd + d] * K[j, th % heads * hd + d]
                st[2] = T.exp(st[2] * scale - st[0])
                st[1] = st[1] + st[2]
                for d in range(hd):
                    O[th // heads, th % heads * hd + d] = (
                        O[th // heads, th % heads * hd + d] + st[2] * V[j, th % heads * hd + d]
                    )
            for d in range(hd):
                O[th // heads, th % heads * hd + d] = O[th // heads, th % heads * hd + d] / st[1]

    return attn


OPS = {
    "layer_norm": layer_norm,
    "add_layer_norm": add_layer_norm,
    "gelu": gelu,
    "attention_full": attention_full,
}
