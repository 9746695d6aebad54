"""Register-blocked matrix kernels: Y[t, r] = sum_k X[t, k] * W[r, k] for every weight format.

The te + schedule formulation in build.py computes the dequantised weight at every (t, r, k)
through index arithmetic that LLVM cannot vectorise well (nibble shifts computed per lane), and
its per-row partial buffers became heap workspaces: 20-30x slower than the memory allows. These
kernels are written out as TVMScript text instead, with explicit vector loads, so the generated
code is exactly:

- decode (`gemv`, one token): per row, per weight group, V-lane partial sums of the unscaled
  codes times X in two independent accumulators, scaled once per group; a halving-tree
  horizontal sum at the end.
- prefill (`gemm`, n tokens): an RB rows x TB tokens micro-kernel: each V-lane weight vector is
  dequantised (and scaled) once and used for TB tokens; RB x TB accumulators stay in registers.
  Tokens past the last full block of TB go through the same kernel with TB = 1.

Every buffer is small and constant-sized (under TVM's 1 KiB stack-allocation limit) and no
scalar is bound to a name (TVMScript would store it in a workspace), so no
TVMBackendAllocWorkspace call is left in the loops. Weights are read as laid out in
docs/formats/q4bf16.md: Q4 byte j of a group holds element j (low nibble) and j + group/2
(high nibble), value (nibble - 8) * scale; Q8 value code * scale; scales are bf16.
"""

F32_ZERO = "T.float32(0)"


def bf16_f32(expr):
    """A bf16 bit pattern (uint16 expression) widened exactly to f32."""
    return f"T.reinterpret('float32', T.shift_left(T.Cast('uint32', {expr}), T.uint32(16)))"


class Layout:
    """How one weight format is read: argument declarations and V-lane weight vectors.

    `pieces(row, g, jb)` gives, for one step of the inner (unrolled) loop, a list of
    (unscaled f32 vector expression, first column) pairs; `scale(row, g)` the group's f32 scale
    or None for float formats. A step covers `step` columns; a group `group` columns.
    """

    def __init__(self, spec, v):
        fmt, rows, cols = spec["format"], spec["rows"], spec["cols"]
        self.fmt, self.rows, self.cols, self.v = fmt, rows, cols, v
        # Whether pieces(..., fold=True) gives raw codes whose offset the caller removes.
        self.folds = False
        vec = f"'float32x{v}'"
        ramp = lambda start: f"T.Ramp({start}, 1, {v})"  # noqa: E731
        bcast = lambda e: f"T.Broadcast({e}, {v})"  # noqa: E731
        self.ramp, self.bcast = ramp, bcast
        if fmt in ("f32", "bf16"):
            # No scales: a "group" is just a chunk of columns the inner loop unrolls over.
            steps = next(s for s in (8, 4, 2, 1) if cols % (v * s) == 0) if cols % v == 0 else 0
            if not steps:
                raise Unsupported(f"{fmt} cols {cols} not a multiple of {v} lanes")
            self.group, self.step = v * steps, v
            dt = "float32" if fmt == "f32" else "uint16"
            self.args = [("W", f"({rows}, {cols})", dt)]
            if fmt == "f32":
                self._piece = lambda r, c: f"W[{r}, {ramp(c)}]"
            else:
                self._piece = lambda r, c: (
                    f"T.reinterpret({vec}, T.shift_left(T.Cast('uint32x{v}', W[{r}, {ramp(c)}]),"
                    f" {bcast('T.uint32(16)')}))"
                )
            self.pieces = lambda r, g, jb: [
                (self._piece(r, f"{g} * {self.group} + {jb} * {v}"), None)
            ]
            self.scale = lambda r, g: None
            return
        group = spec["group"]
        if group <= 0 or cols % group:
            raise Unsupported(f"{fmt}: cols {cols} not a multiple of group {group}")
        self.group = group
        groups = cols // group
        self.args = []
        if fmt == "q8bf16":
            if group % v:
                raise Unsupported(f"q8 group {group} not a multiple of {v} lanes")
            self.step = v
            self.args.append(("Q", f"({rows}, {cols})", "int8"))
            self.pieces = lambda r, g, jb: [
                (f"T.Cast({vec}, Q[{r}, {ramp(f'{g} * {group} + {jb} * {v}')}])", None)
            ]
        elif fmt == "q4bf16":
            half = group // 2
            if group % 2 or half % v:
                raise Unsupported(f"q4 half-group {half} not a multiple of {v} lanes")
            self.step = 2 * v
            self.args.append(("Q", f"({rows}, {cols // 2})", "uint8"))

            def q4(r, g, jb, fold=False):
                byte = f"Q[{r}, {ramp(f'{g} * {half} + {jb} * {v}')}]"
                lo = f"T.Cast({vec}, T.bitwise_and({byte}, {bcast('T.uint8(15)')}))"
                hi = f"T.Cast({vec}, T.shift_right({byte}, {bcast('T.uint8(4)')}))"
                if fold:
                    # Raw codes: the caller subtracts 8 * sum(x) per group, and the high nibble
                    # stays in place (16 * code, one AND instead of shift + AND): the caller
                    # scales that partial sum by 1/16, exactly.
                    hi16 = f"T.Cast({vec}, T.bitwise_and({byte}, {bcast('T.uint8(240)')}))"
                    return [(lo, None), (hi16, half)]
                eight = bcast("T.float32(8)")
                return [(f"({lo} - {eight})", None), (f"({hi} - {eight})", half)]

            self.pieces = q4
            self.folds = True
        else:
            raise Unsupported(f"unsupported weight format {fmt!r}")
        self.args.append(("S", f"({rows}, {groups})", "uint16"))
        self.scale = lambda r, g: bf16_f32(f"S[{r}, {g}]")

    @property
    def steps(self):
        """Unrolled inner steps per group."""
        return self.group // self.step

    def column(self, g, jb, extra):
        """First column of a piece: its offset within the step, plus `extra` (q4 high half)."""
        base = f"{g} * {self.group} + {jb} * {self.v}"
        return base if extra is None else f"{base} + {extra}"


class Unsupported(ValueError):
    """The shape/format does not fit these kernels (the caller falls back to te)."""


def _params(lay, dynamic):
    """Parameter list and match_buffer lines: X, the weight planes, Y."""
    rows, cols = lay.rows, lay.cols
    if dynamic:
        head = ["x_handle: T.handle"]
        body = [
            "    n = T.int32()",
            f"    X = T.match_buffer(x_handle, (n, {cols}), 'float32', align=1)",
            f"    Y = T.match_buffer(y_handle, (n, {rows}), 'float32', align=1)",
        ]
        tail = ["y_handle: T.handle"]
    else:
        head = [f"X: T.Buffer((1, {cols}), 'float32', align=1)"]
        tail = [f"Y: T.Buffer((1, {rows}), 'float32', align=1)"]
        body = []
    planes = [f"{name}: T.Buffer({shape}, '{dt}', align=1)" for name, shape, dt in lay.args]
    return ", ".join(head + planes + tail), body


def _hsum(src, v, dst, ind, tmp="h", acc=False):
    """Halving-tree horizontal sum of the V-lane vector `src` into scalar `dst` (via buffer
    `tmp`); with `acc`, dst = (that sum) - 8 * dst (the q4 offset correction)."""
    h = tmp
    lines = [f"{ind}{h}[T.Ramp(0, 1, {v})] = {src}"]
    w = v
    while w > 2:
        w //= 2
        lines.append(f"{ind}{h}[T.Ramp(0, 1, {w})] = {h}[T.Ramp(0, 1, {w})] + {h}[T.Ramp({w}, 1, {w})]")
    total = f"{h}[0] + {h}[1]" if v > 1 else f"{h}[0]"
    if acc:
        total = f"{total} - T.float32(8) * {dst}"
    lines.append(f"{ind}{dst} = {total}")
    return lines


def gemv_source(spec, v):
    """Decode GEMV, one row per parallel iteration."""
    lay = Layout(spec, v)
    ramp0, zero = lay.ramp(0), lay.bcast(F32_ZERO)
    params, _ = _params(lay, dynamic=False)
    groups = lay.cols // lay.group
    r = "r"
    ind = "            "
    # q4: sum((q - 8) * x) = sum(q * x) - 8 * sum(x): the group sums of X are computed once
    # per call (xs), each row then carries one scalar correction instead of two vector
    # subtractions per 32 weights.
    fold = lay.folds
    lines = [
        "@T.prim_func",
        f"def main({params}):",
        '    T.func_attr({"tirx.noalias": True})',
    ]
    if fold:
        lines += [
            f"    xs = T.alloc_buffer(({groups},), 'float32')",
            f"    xv = T.alloc_buffer(({v},), 'float32')",
            f"    for g in range({groups}):",
            f"        xv[{ramp0}] = {zero}",
            f"        for jb in range({lay.group // v}):",
            f"            xv[{ramp0}] = xv[{ramp0}] + X[0, {lay.ramp(f'g * {lay.group} + jb * {v}')}]",
            *_hsum(f"xv[{ramp0}]", v, "xs[g]", "        ", tmp="xv"),
        ]
    lines += [
        f"    for r in T.parallel({lay.rows}):",
        f"        acc = T.alloc_buffer((2, {v}), 'float32')",
        f"        p = T.alloc_buffer((2, {v}), 'float32')",
        f"        h = T.alloc_buffer(({v},), 'float32')",
        # (2,), not (1,): a one-element buffer prints back as a scalar, which re-parses into a
        # workspace allocation per row.
        "        cs = T.alloc_buffer((2,), 'float32')",
        f"        acc[0, {ramp0}] = {zero}",
        f"        acc[1, {ramp0}] = {zero}",
        "        cs[0] = T.float32(0)",
        f"        for g in range({groups}):",
    ]
    scaled = lay.scale(r, "g") is not None
    target = "p" if scaled else "acc"
    if scaled:
        lines += [f"{ind}p[0, {ramp0}] = {zero}", f"{ind}p[1, {ramp0}] = {zero}"]
    lines.append(f"{ind}for jb in T.unroll({lay.steps}):")
    pieces = lay.pieces(r, "g", "jb", fold=True) if fold else lay.pieces(r, "g", "jb")
    for i, (w, extra) in enumerate(pieces):
        # One piece per step alternates accumulators by step parity; two pieces use one each.
        slot = i if len(pieces) == 2 else None
        col = lay.ramp(lay.column("g", "jb", extra))
        term = f"{w} * X[0, {col}]"
        if slot is None:
            for s in (0, 1):
                # Even steps into slot 0, odd into slot 1: independent FMA chains.
                lines.append(f"{ind}    if jb % 2 == {s}:")
                lines.append(f"{ind}        {target}[{s}, {ramp0}] = {target}[{s}, {ramp0}] + {term}")
        else:
            lines.append(f"{ind}    {target}[{slot}, {ramp0}] = {target}[{slot}, {ramp0}] + {term}")
    if scaled:
        s = lay.bcast(lay.scale(r, "g"))
        hi = f"p[1, {ramp0}] * {lay.bcast('T.float32(0.0625)')}" if fold else f"p[1, {ramp0}]"
        lines.append(f"{ind}acc[0, {ramp0}] = acc[0, {ramp0}] + (p[0, {ramp0}] + {hi}) * {s}")
    if fold:
        lines.append(f"{ind}cs[0] = cs[0] + {lay.scale(r, 'g')} * xs[g]")
        lines += _hsum(f"acc[0, {ramp0}] + acc[1, {ramp0}]", v, "cs[0]", "        ", acc=True)
        lines.append("        Y[0, r] = cs[0]")
    else:
        lines += _hsum(f"acc[0, {ramp0}] + acc[1, {ramp0}]", v, "Y[0, r]", "        ")
    return "\n".join(lines) + "\n"


def gemm_source(spec, v, rb, tb):
    """Prefill GEMM: RB rows x TB tokens per micro-kernel; a TB = 1 pass for the last tokens."""
    lay = Layout(spec, v)
    if lay.rows % rb:
        rb = 1
    ramp0, zero = lay.ramp(0), lay.bcast(F32_ZERO)
    params, match = _params(lay, dynamic=True)
    groups = lay.cols // lay.group
    npieces = len(lay.pieces("0", "g", "jb"))

    def block(tbk, tok, ind):
        out = []
        for i in range(rb):
            out.append(f"{ind}for i in T.unroll({tbk}):")
            out.append(f"{ind}    acc{i}[i, {ramp0}] = {zero}")
        out.append(f"{ind}for g in range({groups}):")
        out.append(f"{ind}    for jb in T.unroll({lay.steps}):")
        inner = ind + "        "
        for i in range(rb):
            row = f"ro * {rb} + {i}"
            scale = lay.scale(row, "g")
            for j, (w, _) in enumerate(lay.pieces(row, "g", "jb")):
                e = w if scale is None else f"{w} * {lay.bcast(scale)}"
                out.append(f"{inner}w[{i * npieces + j}, {ramp0}] = {e}")
        for i in range(rb):
            pieces = lay.pieces("0", "g", "jb")
            for t in range(tbk):
                acc = f"acc{i}[{t}, {ramp0}]"
                terms = " + ".join(
                    f"w[{i * npieces + j}, {ramp0}] * X[{tok(t)}, "
                    f"{lay.ramp(lay.column('g', 'jb', extra))}]"
                    for j, (_, extra) in enumerate(pieces)
                )
                out.append(f"{inner}{acc} = {acc} + {terms}")
        for i in range(rb):
            for t in range(tbk):
                out += _hsum(f"acc{i}[{t}, {ramp0}]", v, f"Y[{tok(t)}, ro * {rb} + {i}]", ind)
        return out

    lines = [
        "@T.prim_func",
        f"def main({params}):",
        '    T.func_attr({"tirx.noalias": True})',
        *match,
        f"    for ro in T.parallel({lay.rows // rb}):",
    ]
    for i in range(rb):
        lines.append(f"        acc{i} = T.alloc_buffer(({tb}, {v}), 'float32')")
    lines.append(f"        w = T.alloc_buffer(({rb * npieces}, {v}), 'float32')")
    lines.append(f"        h = T.alloc_buffer(({v},), 'float32')")
    lines.append(f"        for tb in range(n // {tb}):")
    lines += block(tb, lambda t: f"tb * {tb} + {t}", "            ")
    lines.append(f"        for tt in range(n // {tb} * {tb}, n):")
    lines += block(1, lambda t: "tt", "            ")
    return "\n".join(lines) + "\n"
