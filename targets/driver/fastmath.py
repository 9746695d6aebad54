"""Vectorisable elementary functions for te kernels.

TVM lowers `te.exp`/`te.tanh` to libm calls on CPU (one `expf` per element: LLVM cannot
vectorise them without a vector math library), which made the gated GELU of Gemma's prefill
cost more than its matrix products. These are written in plain arithmetic instead, so LLVM
emits vector code.
"""
from tvm import te, tirx

LOG2E = 1.4426950408889634
# ln 2 split in two (Cody-Waite): n * LN2_HI is exact for the n that occur.
LN2_HI = 0.693359375
LN2_LO = -2.12194440e-4
# Minimax polynomial of (exp(r) - 1 - r) / r^2 on [-ln2/2, ln2/2] (Cephes expf), highest first.
EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
            1.6666665459e-1, 5.0000001201e-1)
GELU_C = 0.7978845608028654
GELU_K = 0.044715


def f32(v):
    return tirx.const(v, "float32")


def exp(z):
    """exp(z) for f32 `z`, relative error ~1e-7; clamped to [-87, 88] (no inf, no denormals)."""
    z = te.max(te.min(z, f32(88.0)), f32(-87.0))
    n = te.floor(z * f32(LOG2E) + f32(0.5))
    r = z - n * f32(LN2_HI) - n * f32(LN2_LO)
    p = f32(EXP_POLY[0])
    for c in EXP_POLY[1:]:
        p = p * r + f32(c)
    y = p * r * r + r + f32(1.0)
    two_n = tirx.reinterpret(
        "float32", (n.astype("int32") + tirx.const(127, "int32")) << tirx.const(23, "int32")
    )
    return y * two_n


def gelu_tanh(v):
    """0.5 v (1 + tanh(c (v + k v^3))), written as v * sigmoid(2 c (v + k v^3))."""
    inner = f32(GELU_C) * (v + f32(GELU_K) * v * v * v)
    return v / (f32(1.0) + exp(f32(-2.0) * inner))
