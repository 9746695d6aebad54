"""The TVM kernel driver of `ava-targets`: one JSON spec in, one object file + kernel table out.

Usage: python build.py SPEC.json

SPEC (written by `ava_targets::driver`):
  {"target": {"name": ..., "tvm": {TVM JSON-dict target}, "lanes": 8},
   "out_dir": DIR,
   "kernels": [{"name": ..., "op": ..., ...op parameters}]}

Writes DIR/kernels.o (every kernel, for the target triple) and DIR/table.json (for each kernel:
its symbol and argument signature). Kernels are plain TIR PrimFuncs: no Relax VM, so the object
needs no libtvm_runtime, only the host hooks described in docs/tvm.md.

On failure the last line of stderr is `ava-driver-error: <kernel>: <message>` so the Rust side
can name the kernel that failed.
"""
import json
import os
import re
import sys
import time

import tvm
from tvm import s_tir, te, tirx
from tvm.script import tirx as T

import attention as attention_kernel
import encoder as encoder_kernels
import fastmath
import norms
import int8mm
import qmatmul

# Q4BF16 / Q8BF16 (docs/formats/q4bf16.md): groups of `group` elements along the input dim, one
# bf16 scale each. Q4: byte j of a group holds element j (low nibble) and element j + group/2
# (high nibble), value = (nibble - 8) * scale. Q8: value = int8 code * scale.
ROWS_PER_TASK = 16
# Elements of the gated GELU per parallel task.
GELU_CHUNK = 512


def u32(v):
    return tirx.const(v, "uint32")


def f32(v):
    return tirx.const(v, "float32")


def bf16_to_f32(bits):
    """A bf16 bit pattern (uint16) widened exactly to f32."""
    return tirx.reinterpret("float32", bits.astype("uint32") << u32(16))


# ---------------------------------------------------------------- weights


def weight_placeholders(spec):
    """Placeholders of one [rows, cols] weight in spec's format, and a function (r, k) -> f32."""
    fmt, rows, cols = spec["format"], spec["rows"], spec["cols"]
    if fmt == "f32":
        w = te.placeholder((rows, cols), "float32", name="W")
        return [w], lambda r, k: w[r, k]
    if fmt == "bf16":
        w = te.placeholder((rows, cols), "uint16", name="W")
        return [w], lambda r, k: bf16_to_f32(w[r, k])
    if fmt not in ("q4bf16", "q8bf16"):
        raise ValueError(f"unsupported weight format {fmt!r}")
    group = spec["group"]
    if group <= 0 or cols % group or group % 2:
        raise ValueError(f"{fmt} needs cols ({cols}) divisible by an even group ({group})")
    s = te.placeholder((rows, cols // group), "uint16", name="S")
    if fmt == "q8bf16":
        q = te.placeholder((rows, cols), "int8", name="Q")
        return [q, s], lambda r, k: q[r, k].astype("float32") * bf16_to_f32(s[r, k // group])
    half = group // 2
    q = te.placeholder((rows, cols // 2), "uint8", name="Q")

    def value(r, k):
        g, j = k // group, k % group
        byte = q[r, g * half + j % half].astype("uint32")
        nib = (byte >> ((j // half) * 4).astype("uint32")) & u32(15)
        return (nib.astype("float32") - f32(8.0)) * bf16_to_f32(s[r, g])

    return [q, s], value


def matmul(spec, lanes, n=None):
    """Y[t, r] = sum_k X[t, k] * W[r, k]; n=1 gives the decode GEMV, n=None a dynamic-n GEMM."""
    rows, cols = spec["rows"], spec["cols"]
    L = lanes if cols % lanes == 0 else 1
    n = te.var("n") if n is None else n
    x = te.placeholder((n, cols), "float32", name="X")
    ws, w = weight_placeholders(spec)
    b = te.reduce_axis((0, cols // L), "b")
    p = te.compute(
        (n, rows, L), lambda t, r, l: te.sum(x[t, b * L + l] * w(r, b * L + l), axis=b), name="P"
    )
    li = te.reduce_axis((0, L), "li")
    y = te.compute((n, rows), lambda t, r: te.sum(p[t, r, li], axis=li), name="Y")
    f = te.create_prim_func([x, *ws, y])
    sch = s_tir.Schedule(f)
    by, bp = sch.get_sblock("Y"), sch.get_sblock("P")
    t, r, _ = sch.get_loops(by)
    per = ROWS_PER_TASK if rows % ROWS_PER_TASK == 0 else 1
    ro, ri = sch.split(r, [None, per])
    sch.reorder(ro, t, ri)
    sch.parallel(ro)
    sch.compute_at(bp, ri)
    loops = sch.get_loops(bp)
    ll, lb = loops[-2], loops[-1]
    sch.reorder(lb, ll)
    if L > 1:
        sch.vectorize(ll)
    sch.decompose_reduction(bp, lb)
    sch.unroll(sch.get_loops(by)[-1])
    return sch.mod["main"]


# ---------------------------------------------------------------- element-wise and norms


def rms_norm(spec, lanes, add=False):
    """Y = [H +] X / sqrt(mean(X^2) + eps) * (1 + W), per row of `width` (norms.py); the te
    formulation where the width is not a multiple of 16 lanes."""
    v = min(16, lanes)
    if spec["width"] % v == 0:
        return tvm.script.from_source(norms.rms_norm_source(spec, v, add))
    width, eps = spec["width"], spec["eps"]
    n = te.var("n")
    x = te.placeholder((n, width), "float32", name="X")
    w = te.placeholder((width,), "float32", name="W")
    h = te.placeholder((n, width), "float32", name="H")
    k = te.reduce_axis((0, width), "k")
    ss = te.compute((n,), lambda t: te.sum(x[t, k] * x[t, k], axis=k), name="SS")

    def body(t, c):
        y = x[t, c] * (f32(1.0) / te.sqrt(ss[t] / f32(width) + f32(eps))) * (f32(1.0) + w[c])
        return h[t, c] + y if add else y

    y = te.compute((n, width), body, name="Y")
    return te.create_prim_func([x, w, h, y] if add else [x, w, y])


def add_rms_norm(spec, lanes):
    """H += rms_norm(X) * (1 + W): the post-norm and the residual add of one block."""
    return rms_norm(spec, lanes, add=True)


def gelu_gate(spec, lanes):
    """Y = gelu_tanh(G) * U."""
    width = spec["width"]
    n = te.var("n")
    g = te.placeholder((n, width), "float32", name="G")
    u = te.placeholder((n, width), "float32", name="U")

    # tanh through fastmath's vectorisable exp (te.tanh would be a libm call per element).
    y = te.compute((n, width), lambda t, c: fastmath.gelu_tanh(g[t, c]) * u[t, c], name="Y")
    f = te.create_prim_func([g, u, y])
    if width % GELU_CHUNK:
        return schedule_rows(f, ["Y"])
    # Chunks of GELU_CHUNK elements over the threads (a prefill has n * width of them),
    # 16-lane vectors inside.
    sch = s_tir.Schedule(f)
    t, c = sch.get_loops(sch.get_sblock("Y"))
    outer, inner = sch.split(sch.fuse(t, c), [None, GELU_CHUNK])
    sch.parallel(outer)
    _, lanes_loop = sch.split(inner, [None, 16])
    sch.vectorize(lanes_loop)
    return sch.mod["main"]


def rope(spec, lanes):
    """Rotate-half RoPE of X [n, heads * head_dim] with per-token tables COS/SIN [n, head_dim/2]."""
    heads, hd = spec["heads"], spec["head_dim"]
    half = hd // 2
    n = te.var("n")
    x = te.placeholder((n, heads * hd), "float32", name="X")
    cos = te.placeholder((n, half), "float32", name="COS")
    sin = te.placeholder((n, half), "float32", name="SIN")

    def body(t, c):
        i = c % hd
        base = c - i
        lo = i < half
        a = x[t, base + tirx.if_then_else(lo, i, i - half)]
        b = x[t, base + tirx.if_then_else(lo, i + half, i)]
        fi = tirx.if_then_else(lo, i, i - half)
        return tirx.if_then_else(
            lo, a * cos[t, fi] - b * sin[t, fi], b * cos[t, fi] + a * sin[t, fi]
        )

    y = te.compute((n, heads * hd), body, name="Y")
    return schedule_rows(te.create_prim_func([x, cos, sin, y]), [])


def embed(spec, lanes):
    """Y[t] = table[ids[t]] * scale, widened to f32 (ids are checked by the caller)."""
    cols = spec["cols"]
    n = te.var("n")
    ids = te.placeholder((n,), "int32", name="IDS")
    scale = te.var("scale", "float32")
    ws, w = weight_placeholders(spec)
    y = te.compute((n, cols), lambda t, c: w(ids[t], c) * scale, name="Y")
    return schedule_rows(te.create_prim_func([ids, *ws, scale, y]), [])


def schedule_rows(f, _blocks):
    """Row kernels are small next to the matrix products: left to LLVM's loop vectoriser."""
    return f


# ---------------------------------------------------------------- attention


def attention(spec, lanes):
    """Causal GQA attention of the chunk's queries over the cache and the chunk's own keys.

    Q [n, heads*hd]; K, V [n, kv*hd] (this chunk); KC, VC [cap, kv*hd] (ring: position j in
    slot j % cap); O [n, heads*hd]. `start` is the chunk's first position; a query at p sees
    keys max(0, p - window + 1) ..= p. Keys before `start` come from the cache.
    """
    heads, kvh, hd, scale = spec["heads"], spec["kv_heads"], spec["head_dim"], spec["scale"]
    width, group = kvh * hd, heads // kvh
    sc = f32(scale)

    @T.prim_func
    def attn(
        q: T.handle, k: T.handle, v: T.handle, kc: T.handle, vc: T.handle, o: T.handle,
        start: T.int32, window: T.int32,
    ):
        T.func_attr({"tirx.noalias": True})
        n = T.int32()
        c = T.int32()
        Q = T.match_buffer(q, (n, heads * hd), "float32")
        K = T.match_buffer(k, (n, width), "float32")
        V = T.match_buffer(v, (n, width), "float32")
        KC = T.match_buffer(kc, (c, width), "float32")
        VC = T.match_buffer(vc, (c, width), "float32")
        O = T.match_buffer(o, (n, heads * hd), "float32")
        for th in T.parallel(n * heads):
            acc = T.decl_buffer((hd,), "float32")
            st = T.decl_buffer((3,), "float32")
            t = th // heads
            h = th % heads
            g = h // group
            pos = start + t
            lo = T.max(pos + 1 - window, 0)
            st[0] = T.float32(-3.0e38)
            st[1] = T.float32(0)
            for d in range(hd):
                acc[d] = T.float32(0)
            for j in range(lo, pos + 1):
                st[2] = T.float32(0)
                if j < start:
                    for d in range(hd):
                        st[2] = st[2] + Q[t, h * hd + d] * KC[T.floormod(j, c), g * hd + d]
                else:
                    for d in range(hd):
                        st[2] = st[2] + Q[t, h * hd + d] * K[j - start, g * hd + d]
                st[0] = T.max(st[0], st[2] * sc)
            for j in range(lo, pos + 1):
                st[2] = T.float32(0)
                if j < start:
                    for d in range(hd):
                        st[2] = st[2] + Q[t, h * hd + d] * KC[T.floormod(j, c), g * hd + d]
                    st[2] = T.exp(st[2] * sc - st[0])
                    st[1] = st[1] + st[2]
                    for d in range(hd):
                        acc[d] = acc[d] + st[2] * VC[T.floormod(j, c), g * hd + d]
                else:
                    for d in range(hd):
                        st[2] = st[2] + Q[t, h * hd + d] * K[j - start, g * hd + d]
                    st[2] = T.exp(st[2] * sc - st[0])
                    st[1] = st[1] + st[2]
                    for d in range(hd):
                        acc[d] = acc[d] + st[2] * V[j - start, g * hd + d]
            for d in range(hd):
                O[t, h * hd + d] = acc[d] / st[1]

    return attn


def blocked_matmul(spec, lanes, decode):
    """The register-blocked kernels of qmatmul.py; the te formulation where they don't fit.

    `lanes` is two vector registers of f32 (8 for SSE/NEON, 16 for AVX2, 32 for AVX-512): the
    decode GEMV uses up to 16 lanes per accumulator, prefill one register per accumulator, in
    2 rows x TB tokens blocks (TB = 8 where there are 32 vector registers, else 4).
    """
    try:
        if decode:
            src = qmatmul.gemv_source(spec, min(16, lanes))
        else:
            tokens = 8 if spec["_registers"] >= 32 else 4
            src = qmatmul.gemm_source(spec, max(4, lanes // 2), 2, tokens)
    except qmatmul.Unsupported:
        return matmul(spec, lanes, n=1 if decode else None)
    return tvm.script.from_source(src)


OPS = {
    "gemv": lambda s, lanes: blocked_matmul(s, lanes, decode=True),
    "gemm": lambda s, lanes: blocked_matmul(s, lanes, decode=False),
    "rms_norm": rms_norm,
    "add_rms_norm": add_rms_norm,
    "gelu_gate": gelu_gate,
    "rope": rope,
    "embed": embed,
    "attention": lambda s, lanes: attention_fast(s, lanes),
    "gemv_q4i8": int8mm.gemv_q4i8,
    "gemm_q4i8": int8mm.gemm_q4i8,
    "qlinear_i8": int8mm.qlinear_i8,
}


def attention_fast(spec, lanes):
    """attention.py's one-pass vector kernel; the scalar two-pass one where head_dim doesn't fit."""
    v = min(16, lanes)
    if spec["head_dim"] % v:
        return attention(spec, lanes)
    return tvm.script.from_source(attention_kernel.attention_source(spec, v))

# The mALBERT encoder's row kernels and attention (`aon compile --target`).
OPS.update(encoder_kernels.OPS)


def unaligned(f):
    """The same PrimFunc with every tensor parameter at 1-byte alignment.

    TVM assumes 64-byte aligned tensors and emits aligned vector loads/stores; the runtime
    passes weights in place from archives (safetensors offsets are not 64-byte aligned) and
    plain Rust vectors, so the kernels must assume no alignment (bf16 and 4-bit data may sit at any even or odd offset).
    """
    src = re.sub(r'T\.Buffer\((\(.*?\)), "(\w+)"\)', r'T.Buffer(\1, "\2", align=1)', f.script())
    return tvm.script.from_source(src)



def signature(f):
    """Argument list of a PrimFunc: tensors (dtype, shape with symbolic dims by name) and scalars."""
    args = []
    for p in f.params:
        shape = getattr(p, "shape", None)
        if shape is not None:
            dims = [int(d.value) if hasattr(d, "value") else str(d) for d in shape]
            args.append({"name": p.name, "kind": "tensor", "dtype": str(p.dtype), "shape": dims})
        else:
            args.append({"name": p.name, "kind": "scalar", "dtype": str(p.ty)})
    return args


def main():
    spec = json.load(open(sys.argv[1]))
    out = spec["out_dir"]
    lanes = spec["target"].get("lanes", 4)
    # Vector registers of the ISA: AArch64 and AVX-512 have 32, SSE/AVX2 16.
    arm = spec["target"]["tvm"].get("mtriple", "").startswith("aarch64")
    registers = 32 if arm or lanes >= 32 else 16
    # Integer dot-product variant of the int8 kernels (int8mm.py): x86-vnni, x86-avx512,
    # x86-avx2, x86, arm64-dotprod or arm64.
    isa = int8mm.isa_of_target(spec["target"]["tvm"])
    funcs, table = {}, []
    for k in spec["kernels"]:
        name = k["name"]
        try:
            f = unaligned(OPS[k["op"]]({**k, "_registers": registers, "_isa": isa}, lanes))
            f = f.with_attr("global_symbol", name)
        except Exception as e:  # noqa: BLE001 - reported with the kernel's name
            fail(name, e)
        funcs[name] = f
        table.append({"name": name, "symbol": "__tvm_ffi_" + name, "op": k["op"], "args": signature(f)})
    target = tvm.target.Target(spec["target"]["tvm"])
    t0 = time.time()
    try:
        lib = tvm.compile(tvm.IRModule(funcs), target=target)
    except Exception as e:  # noqa: BLE001
        # Compile one by one to find the kernel that fails.
        for name, f in funcs.items():
            try:
                tvm.compile(tvm.IRModule({name: f}), target=target)
            except Exception as e2:  # noqa: BLE001
                fail(name, e2)
        fail("(all)", e)
    lib.mod.write_to_file(os.path.join(out, "kernels.o"))
    with open(os.path.join(out, "table.json"), "w") as fh:
        json.dump({"kernels": table, "compile_seconds": round(time.time() - t0, 3),
                   "tvm_version": tvm.__version__}, fh, indent=1)


def fail(kernel, err):
    msg = str(err).strip().splitlines()
    brief = msg[-1] if msg else type(err).__name__
    sys.stderr.write("".join(str(err)) + "\n")
    sys.stderr.write(f"ava-driver-error: {kernel}: {brief}\n")
    sys.exit(2)


if __name__ == "__main__":
    main()
