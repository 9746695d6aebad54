"""Causal GQA attention over the KV cache, written out as TVMScript text with explicit vectors.

Q [n, heads*hd]; K, V [n, kv*hd] (this chunk); KC, VC [cap, kv*hd] (ring: position j in slot
j % cap); O [n, heads*hd]. `start` is the chunk's first position; a query at p sees keys
max(0, p - window + 1) ..= p. Keys before `start` come from the cache, the rest from the chunk.

One parallel task per (query, head), one pass over its keys with the online softmax: running
maximum m and denominator l, the output row rescaled by exp(m_old - m_new) when m grows. The
output row itself is the accumulator (it belongs to this task), so nothing is allocated but a
few scalars and one V-lane vector; q.k dot products are V-lane partial sums and a halving tree.
"""


def attention_source(spec, v):
    heads, kvh, hd, scale = spec["heads"], spec["kv_heads"], spec["head_dim"], spec["scale"]
    if hd % v:
        raise ValueError(f"head_dim {hd} is not a multiple of {v} lanes")
    width, group = kvh * hd, heads // kvh
    chunks = hd // v
    acc = next(a for a in (4, 2, 1) if chunks % a == 0)
    ramp = lambda start: f"T.Ramp({start}, 1, {v})"  # noqa: E731
    bcast = lambda e: f"T.Broadcast({e}, {v})"  # noqa: E731
    # Named scalars would become workspaces in TVMScript: the query, head, KV head and the key
    # range are written out as expressions of the task index.
    t, h = f"th // {heads}", f"th % {heads}"
    g = f"(th % {heads}) // {group}"
    pos = f"(start + th // {heads})"
    lo = f"T.max({pos} + 1 - window, 0)"

    def key_loop(lo, hi, kbuf, vbuf, row, ind):
        """Lines of the loop over keys j in [lo, hi) read from kbuf/vbuf at row expression."""
        out = [f"{ind}for j in range({lo}, {hi}):"]
        i2 = ind + "    "
        # q.k in `acc` independent V-lane partial sums (chunk ci into slot ci % acc), so the
        # FMAs do not wait on each other; then summed into slot 0 and reduced by a tree.
        for a in range(acc):
            out.append(f"{i2}d[{ramp(a * v)}] = {bcast('T.float32(0)')}")
        out.append(f"{i2}for ci in T.unroll({chunks // acc}):")
        for a in range(acc):
            col = f"(ci * {acc} + {a}) * {v}"
            out.append(
                f"{i2}    d[{ramp(a * v)}] = d[{ramp(a * v)}]"
                f" + Q[{t}, {ramp(f'({h}) * {hd} + {col}')}] * {kbuf}[{row}, {ramp(f'{g} * {hd} + {col}')}]"
            )
        for a in range(1, acc):
            out.append(f"{i2}d[{ramp(0)}] = d[{ramp(0)}] + d[{ramp(a * v)}]")
        w = v
        while w > 2:
            w //= 2
            out.append(f"{i2}d[T.Ramp(0, 1, {w})] = d[T.Ramp(0, 1, {w})] + d[T.Ramp({w}, 1, {w})]")
        # st: 0 running max, 1 denominator, 2 score, 3 rescale of the old terms, 4 new weight
        out.append(f"{i2}st[2] = (d[0] + d[1]) * T.float32({scale!r})")
        # The old terms are rescaled only when the maximum grows (exp(0) otherwise).
        out.append(
            f"{i2}st[3] = T.if_then_else(st[2] > st[0], T.exp(st[0] - st[2]), T.float32(1))"
        )
        out.append(f"{i2}st[0] = T.max(st[0], st[2])")
        out.append(f"{i2}st[4] = T.exp(st[2] - st[0])")
        out.append(f"{i2}st[1] = st[1] * st[3] + st[4]")
        out.append(f"{i2}for ci in range({chunks}):")
        o = f"O[{t}, {ramp(f'({h}) * {hd} + ci * {v}')}]"
        out.append(
            f"{i2}    {o} = {o} * {bcast('st[3]')} + {bcast('st[4]')}"
            f" * {vbuf}[{row}, {ramp(f'{g} * {hd} + ci * {v}')}]"
        )
        return out

    ind = "        "
    lines = [
        "@T.prim_func",
        "def main(q_h: T.handle, k_h: T.handle, v_h: T.handle, kc_h: T.handle, vc_h: T.handle,"
        " o_h: T.handle, start: T.int32, window: T.int32):",
        '    T.func_attr({"tirx.noalias": True})',
        "    n = T.int32()",
        "    c = T.int32()",
        f"    Q = T.match_buffer(q_h, (n, {heads * hd}), 'float32', align=1)",
        f"    K = T.match_buffer(k_h, (n, {width}), 'float32', align=1)",
        f"    V = T.match_buffer(v_h, (n, {width}), 'float32', align=1)",
        f"    KC = T.match_buffer(kc_h, (c, {width}), 'float32', align=1)",
        f"    VC = T.match_buffer(vc_h, (c, {width}), 'float32', align=1)",
        f"    O = T.match_buffer(o_h, (n, {heads * hd}), 'float32', align=1)",
        f"    for th in T.parallel(n * {heads}):",
        "        st = T.alloc_buffer((5,), 'float32')",
        f"        d = T.alloc_buffer(({acc * v},), 'float32')",
    ]
    lines.append(f"{ind}st[0] = T.float32(-3.0e38)")
    lines.append(f"{ind}st[1] = T.float32(0)")
    lines.append(f"{ind}for c0 in range({chunks}):")
    lines.append(f"{ind}    O[{t}, {ramp(f'({h}) * {hd} + c0 * {v}')}] = {bcast('T.float32(0)')}")
    cache_loop = key_loop(lo, f"T.min(start, {pos} + 1)", "KC", "VC", "T.floormod(j, c)", ind)
    chunk_loop = key_loop(f"T.max({lo}, start)", f"{pos} + 1", "K", "V", "j - start", ind)
    lines += cache_loop + chunk_loop
    lines.append(f"{ind}for c0 in range({chunks}):")
    o = f"O[{t}, {ramp(f'({h}) * {hd} + c0 * {v}')}]"
    lines.append(f"{ind}    {o} = {o} / {bcast('st[1]')}")
    return "\n".join(lines) + "\n"
