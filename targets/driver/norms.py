"""RMSNorm kernels written out as TVMScript with explicit vectors.

The te formulation (a reduction into an [n] buffer, then the scaling) became a heap workspace
and a scalar loop: ~1 ns per element, more than some matrix products of a prefill. Here each
row is one task: V-lane partial sums of squares, a halving-tree horizontal sum, then the scaled
row written V lanes at a time. Rows go over the threads when there are enough of them to pay
for a parallel launch (a decode step has one).

  rms_norm:     Y = X / sqrt(mean(X^2) + eps) * (1 + W)
  add_rms_norm: Y = H + X / sqrt(mean(X^2) + eps) * (1 + W)
"""

# Fewer rows than this run on the calling thread.
PARALLEL_ROWS = 8


def rms_norm_source(spec, v, add):
    width, eps = spec["width"], spec["eps"]
    if width % v:
        raise ValueError(f"width {width} is not a multiple of {v} lanes")
    ramp = lambda c: f"T.Ramp({c} * {v}, 1, {v})"  # noqa: E731
    bc = lambda e: f"T.Broadcast({e}, {v})"  # noqa: E731
    params = "x: T.handle, w: T.handle, " + ("h: T.handle, " if add else "") + "y: T.handle"
    head = [
        "@T.prim_func",
        f"def main({params}):",
        '    T.func_attr({"tirx.noalias": True})',
        "    n = T.int32()",
        f"    X = T.match_buffer(x, (n, {width}), 'float32')",
        f"    W = T.match_buffer(w, ({width},), 'float32')",
    ]
    if add:
        head.append(f"    H = T.match_buffer(h, (n, {width}), 'float32')")
    head.append(f"    Y = T.match_buffer(y, (n, {width}), 'float32')")

    def body(ind):
        out = [
            f"{ind}acc = T.alloc_buffer(({v},), 'float32')",
            f"{ind}acc[T.Ramp(0, 1, {v})] = {bc('T.float32(0)')}",
            f"{ind}for c in range({width // v}):",
            f"{ind}    acc[T.Ramp(0, 1, {v})] = acc[T.Ramp(0, 1, {v})]"
            f" + X[t, {ramp('c')}] * X[t, {ramp('c')}]",
        ]
        w = v
        while w > 2:
            w //= 2
            out.append(
                f"{ind}acc[T.Ramp(0, 1, {w})] = acc[T.Ramp(0, 1, {w})] + acc[T.Ramp({w}, 1, {w})]"
            )
        out.append(
            f"{ind}acc[0] = T.float32(1) / T.sqrt((acc[0] + acc[1]) / T.float32({width})"
            f" + T.float32({eps!r}))"
        )
        value = (
            f"X[t, {ramp('c')}] * {bc('acc[0]')} * ({bc('T.float32(1)')} + W[{ramp('c')}])"
        )
        if add:
            value = f"H[t, {ramp('c')}] + {value}"
        out += [f"{ind}for c in range({width // v}):", f"{ind}    Y[t, {ramp('c')}] = {value}"]
        return out

    lines = head + [f"    if n < {PARALLEL_ROWS}:", "        for t in range(n):"]
    lines += body("            ")
    lines += ["    else:", "        for t in T.parallel(n):"]
    lines += body("            ")
    return "\n".join(lines) + "\n"
