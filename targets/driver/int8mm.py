"""Int8-activation matrix kernels: exact integer dot products, f32 only for the scales.

Two families, written out as TVMScript text with explicit vectors (like qmatmul.py):

- `gemv_q4i8` (n = 1) / `gemm_q4i8` (dynamic n): 4-bit weights (docs/formats/q4bf16.md) times
  activations quantized per group to int8 by the caller:
      XQ int8 [n, cols]; XD f32 [n, cols/G]; XSUM int32 [n, cols/G] (sum of XQ over the group);
      Q uint8 [rows, cols/2]; S uint16 (bf16) [rows, cols/G]; Y f32 [n, rows]
      Y[t, r] = sum_g f32(S[r, g]) * XD[t, g] * f32(sum_{k in g} nib(r, k) * XQ[t, k] - 8 * XSUM[t, g])
  with the raw nibble 0..15 (byte j of a group: element j low, element j + G/2 high): the
  (nibble - 8) offset is one integer correction per (token, group), so the codes stay
  non-negative bytes, the unsigned operand of VNNI.
- `qlinear_i8` (dynamic n): int8 x int8 with per-row scale and bias (the ALBERT encoder):
      XQ int8 [n, cols]; W int8 [rows, cols]; WSUM int32 [rows]; B, SC f32 [rows]; Y f32 [n, rows]; zp
      Y[t, r] = B[r] + SC[r] * f32(sum_k XQ[t, k] * W[r, k] - zp * WSUM[r])

The integer part is exact int32 on every ISA (checked bit for bit by tests/test_int8mm.py); only
the scaling is f32.

## The dot step
Integers are handled as int32 vectors whose lanes hold 4 bytes each; one step adds, per lane,
the dot product of the 4 bytes of `a` with the 4 bytes of `s` (s signed). By `_isa` (build.py
derives it from the target with `isa_of_target`):
- x86-vnni: `vpdpbusd` (a unsigned, s signed): 64 products per instruction.
- x86-avx512 / x86-avx2: q4 with `pmaddubsw` (nibble x int8 pair sums fit int16: |.| <= 3840,
  the low and high halves added in int16) then `pmaddwd` by ones; qlinear with `pmaddwd` on the
  even and odd bytes widened to int16 (pmaddubsw could saturate with int8 x int8).
- x86 (SSE2 baseline): `pmaddwd` on even/odd bytes (every x86-64 has it).
- arm64-dotprod: `sdot` (signed x signed; the nibbles are valid signed bytes).
- arm64 (no dotprod): the four bytes extracted with shifts and multiplied as int32 (portable).

## gemv_q4i8 (and gemm_q4i8 for n < NMIN): lanes over k
One row per parallel iteration. Per group the G/2 bytes are loaded as they lie: low nibbles
(`& 0x0F0F0F0F`) pair with XQ[gG .. gG + G/2), high nibbles (`>> 4 & 0x0F0F0F0F`) with the
second half; -8 * XSUM starts lane 0 of the int32 accumulator; one int32 -> f32 conversion and
one FMA by S * XD per group; a halving-tree sum per row. Memory bound (about one vector
instruction per 8 weight bytes); 256/128-bit vpdpbusd for G = 64 / 32.

## gemm_q4i8 (prefill): lanes over rows
A task owns RB = lanes x RV rows. Per group it transposes its rows' G/2 bytes into "quads": quad
q = bytes 4q .. 4q+3 of every row, one RB-dword vector (lanes x lanes blocks transposed in
registers with log2(lanes) two-input shuffle stages when G/8 is a multiple of the lanes, else
copied dword by dword), stored already split into low and high nibbles in stack buffers under
1 KiB. Then for every block of TB tokens and every quad: the quad's nibble vectors times the
token's 4 activation bytes broadcast to all lanes (`vpdpbusd zmm, zmm, m32{1to16}`: the
broadcast folds into the instruction; arm64: a 16-byte load and the lane-indexed `sdot`).
RV x TB int32 accumulators start at -8 * XSUM[t, g]; each nibble vector serves TB tokens, each
broadcast RV row vectors; a lane is a row, so there are no horizontal sums and the per-group f32
result (S[r, g] of each lane times XD[t, g]) is added into Y[t, r0 .. r0 + RB) directly (Y's rows
of a task belong to it; zeroed first). Tokens go in blocks of TB, then 4, then 1; a last partial
row block runs the same code with zero rows and per-lane stores. On this Zen 4 the inner loop is
~90% vpdpbusd; below NMIN tokens the transposition does not pay and the decode layout is used.

## qlinear_i8: lanes over k, tree reductions
A task owns RB rows; for each block of TB tokens, RB x TB int32 accumulators (one per (row,
token)) run along k in vectors of 4 x lanes bytes: on VNNI, x ^ 0x80 (= x + 128 as unsigned) is
the first operand and W (signed) the second, loaded straight from the weights, so the sum
carries 128 * WSUM[r], removed with the zero point: acc - (zp + 128) * WSUM[r]. No transposition:
the small n of the encoder (8..64 tokens) would not amortize it. Each group of `lanes`
accumulators is reduced at the end by pairwise shuffles + adds into one vector whose lane j is
accumulator j's total ((token, row) pairs), stored with bias and scale as runs of rows.
cols % (4 x lanes) leftovers are scalar products added into lane 0 (no read past a row).

## Rules of this TVM build that shaped the code
No scalar is bound to a name (TVMScript turns it into a workspace allocation); every local buffer
is under 1024 bytes (TVM's stack-allocation limit: larger ones become TVMBackendAllocWorkspace),
none has one element; accumulators and register blocks are buffers indexed by constants only, so
LLVM keeps them in registers; tensors are declared align=1 (build.py's `unaligned()`: weights sit
at odd offsets); the intrinsic is chosen from `_isa` (one the CPU lacks aborts LLVM). x86-vnni
assumes AVX512VL too (every VNNI CPU has it) for the 256/128-bit vpdpbusd of G = 64 / 32.
"""

# isa: (int32 lanes of one vector, vector registers, dot kind)
ISAS = {
    "x86-vnni": (16, 32, "vnni"),
    "x86-avx512": (16, 32, "pmaddwd"),
    "x86-avx2": (8, 16, "pmaddwd"),
    "x86": (4, 16, "pmaddwd"),
    "arm64-dotprod": (4, 32, "sdot"),
    "arm64": (4, 32, "int32"),
}
# Below this many tokens gemm_q4i8 uses the decode layout (the transposition would not pay).
NMIN = 5
# Largest local buffer (TVM puts buffers of >= 1024 bytes in workspaces).
BUF_BYTES = 1020
# gemm_q4i8 blocking per isa: (row vectors RV, tokens TB): RV x TB int32 accumulators.
Q4_BLOCKS = {
    "x86-vnni": (2, 4),
    "x86-avx512": (2, 4),
    "x86-avx2": (2, 4),
    "x86": (2, 2),
    "arm64-dotprod": (2, 4),
    "arm64": (2, 4),
}
# qlinear_i8 blocking per isa: (rows RB, tokens TB); RB * TB accumulators (lanes over k).
QL_BLOCKS = {
    "x86-vnni": (8, 2),
    "x86-avx512": (4, 4),
    "x86-avx2": (4, 2),
    "x86": (4, 2),
    "arm64-dotprod": (4, 4),
    "arm64": (4, 2),
}

M0F = 0x0F0F0F0F


class Unsupported(ValueError):
    """The shape does not fit these kernels."""


def _i32(v):
    v &= 0xFFFFFFFF
    return f"T.int32({v - (1 << 32) if v >= 1 << 31 else v})"


def _bc(e, n):
    return f"T.Broadcast({e}, {n})"


def _ramp(s, n):
    return f"T.Ramp({s}, 1, {n})"


def bf16_f32(expr):
    """A bf16 bit pattern (uint16 expression) widened exactly to f32."""
    return f"T.reinterpret('float32', T.shift_left(T.Cast('uint32', {expr}), T.uint32(16)))"


class Dot:
    """The dot step of one ISA on int32 vectors of `n` lanes (4 bytes per lane).

    a_parts(a, signed) / s_parts(s): the pieces a vector is split into before the step
    (computed once and kept); step(acc, aps, sps): acc + per-lane 4-byte dot products;
    steps(acc, [(aps, sps), ...]): several steps (fused where the ISA allows).
    `nibbles`: `a` holds 4-bit codes (0..15), which lets AVX-512/AVX2 use pmaddubsw.
    """

    def __init__(self, isa, n, nibbles=False):
        self.isa, self.n = isa, n
        self.kind = ISAS[isa][2]
        if nibbles and isa in ("x86-avx512", "x86-avx2") and n >= 8:
            # a holds 4-bit codes: pmaddubsw (u8 x s8 -> s16 pair sums, |.| <= 2*15*128) cannot
            # saturate, and two of them (|.| <= 7680) add in int16 before one pmaddwd by ones.
            self.kind = "maddubs"
        if self.kind == "sdot" and n != 4:
            raise ValueError("sdot works on 4 int32 lanes")

    def _bits(self):
        return self.n * 32

    def a_parts(self, a, signed):
        n, k = self.n, self.kind
        if k == "maddubs":
            if signed:
                raise ValueError("pmaddubsw: the first operand is unsigned")
            return [a]
        if k in ("vnni", "sdot"):
            if signed and k == "vnni":
                raise ValueError("vpdpbusd: the first operand is unsigned")
            return [a]
        if k == "pmaddwd":
            if not signed:
                m = _bc(_i32(0x00FF00FF), n)
                return [
                    f"T.bitwise_and({a}, {m})",
                    f"T.bitwise_and(T.shift_right({a}, {_bc(_i32(8), n)}), {m})",
                ]
            h = f"T.reinterpret('int16x{2 * n}', {a})"
            e8 = _bc("T.int16(8)", 2 * n)
            return [
                f"T.reinterpret('int32x{n}', T.shift_right(T.shift_left({h}, {e8}), {e8}))",
                f"T.reinterpret('int32x{n}', T.shift_right({h}, {e8}))",
            ]
        # int32: one part per byte.
        if not signed:
            return [
                f"T.bitwise_and(T.shift_right({a}, {_bc(_i32(8 * b), n)}), {_bc(_i32(255), n)})"
                if b < 3 else f"T.bitwise_and(T.shift_right({a}, {_bc(_i32(24), n)}), {_bc(_i32(255), n)})"
                for b in range(4)
            ]
        return [
            f"T.shift_right(T.shift_left({a}, {_bc(_i32(24 - 8 * b), n)}), {_bc(_i32(24), n)})"
            if b < 3 else f"T.shift_right({a}, {_bc(_i32(24), n)})"
            for b in range(4)
        ]

    def s_parts(self, s):
        return [s] if self.kind in ("vnni", "sdot", "maddubs") else self.a_parts(s, True)

    def steps(self, acc, pairs):
        """acc + the dot steps of every (a parts, s parts) pair."""
        if self.kind == "maddubs":
            n = self.n
            mb = {8: "llvm.x86.avx2.pmadd.ub.sw", 16: "llvm.x86.avx512.pmaddubs.w.512"}[n]
            wd = {8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}[n]
            s16 = " + ".join(
                f"T.call_llvm_pure_intrin('int16x{2 * n}', '{mb}', T.reinterpret('int8x{4 * n}', {a[0]}),"
                f" T.reinterpret('int8x{4 * n}', {s[0]}))"
                for a, s in pairs
            )
            return (
                f"({acc} + T.call_llvm_pure_intrin('int32x{n}', '{wd}', {s16}, "
                f"{_bc('T.int16(1)', 2 * n)}))"
            )
        for a, s in pairs:
            acc = self.step(acc, a, s)
        return acc

    def step(self, acc, aps, sps):
        n, k = self.n, self.kind
        if k == "vnni":
            return (
                f"T.call_llvm_pure_intrin('int32x{n}', 'llvm.x86.avx512.vpdpbusd.{self._bits()}', {acc},"
                f" T.reinterpret('int8x{4 * n}', {aps[0]}), T.reinterpret('int8x{4 * n}', {sps[0]}))"
            )
        if k == "sdot":
            return (
                f"T.call_llvm_pure_intrin('int32x4', 'llvm.aarch64.neon.sdot.v4i32.v16i8', {acc},"
                f" T.reinterpret('int8x16', {aps[0]}), T.reinterpret('int8x16', {sps[0]}))"
            )
        if k == "pmaddwd":
            name = {4: "llvm.x86.sse2.pmadd.wd", 8: "llvm.x86.avx2.pmadd.wd",
                    16: "llvm.x86.avx512.pmaddw.d.512"}[n]
            terms = [
                f"T.call_llvm_pure_intrin('int32x{n}', '{name}', T.reinterpret('int16x{2 * n}', {a}),"
                f" T.reinterpret('int16x{2 * n}', {s}))"
                for a, s in zip(aps, sps)
            ]
        else:
            terms = [f"{a} * {s}" for a, s in zip(aps, sps)]
        return f"({acc} + " + " + ".join(terms) + ")"


def _nib(w, n, hi):
    """Low or high nibbles of an int32 vector of packed q4 bytes, as bytes 0..15."""
    m = _bc(_i32(M0F), n)
    if hi:
        return f"T.bitwise_and(T.shift_right({w}, {_bc(_i32(4), n)}), {m})"
    return f"T.bitwise_and({w}, {m})"


def _hsum(buf, n, dst, ind):
    """Halving-tree sum of the n-lane vector in buf[0:n] into dst."""
    lines, w = [], n
    while w > 2:
        w //= 2
        lines.append(f"{ind}{buf}[{_ramp(0, w)}] = {buf}[{_ramp(0, w)}] + {buf}[{_ramp(w, w)}]")
    lines.append(f"{ind}{dst} = {buf}[0] + {buf}[1]" if n > 1 else f"{ind}{dst} = {buf}[0]")
    return lines


ACC_TOKENS = 8  # token rows per accumulator buffer (16-lane int32: 512 bytes)


def _acc(i, t):
    """Start of the accumulator of row vector i, token t: `acc{i}_{t // 8}[t % 8, `."""
    return f"acc{i}_{t // ACC_TOKENS}[{t % ACC_TOKENS}, "


def _acc_alloc(i, tb, n, ind):
    return [
        f"{ind}acc{i}_{h} = T.alloc_buffer(({max(2, min(ACC_TOKENS, tb - h * ACC_TOKENS))}, {n}), 'int32')"
        for h in range(-(-tb // ACC_TOKENS))
    ]


def _xword(tok, k):
    """4 activation bytes XQ[tok, k .. k+4) as one int32."""
    return f"T.reinterpret('int32', XQ[{tok}, T.Ramp({k}, 1, 4)])"


def _isa_of(spec):
    isa = spec.get("_isa", "x86")
    if isa not in ISAS:
        raise Unsupported(f"unknown isa {isa!r}")
    return isa


def _token_blocks(tb):
    """Token block sizes, largest first: TB, then 4, then 1."""
    return [b for b in dict.fromkeys([tb, 4, 1]) if b <= tb]


def _emit_token_blocks(tb, body, ind):
    """Loops over the n tokens in blocks; body(tbk, tok, ind) gives the lines of one block."""
    lines, start = [], "0"
    for b in _token_blocks(tb):
        v = f"tb{b}"
        count = f"(n - {start}) // {b}" if start != "0" else f"n // {b}"
        lines.append(f"{ind}for {v} in range({count}):")
        lines += body(b, lambda t, v=v, s=start, b=b: f"{s} + {v} * {b} + {t}", ind + "    ")
        start = f"({start} + ({count}) * {b})" if start != "0" else f"(n // {b} * {b})"
    return lines


class VRegs:
    """`count` vectors of `n` lanes kept in buffers of 8 (each under TVM's 1 KiB stack limit):
    LLVM keeps them in registers when every index is a constant."""

    def __init__(self, name, count, n, dtype="int32"):
        self.name, self.count, self.n, self.dtype = name, count, n, dtype

    def alloc(self, ind):
        return [
            f"{ind}{self.name}{h} = T.alloc_buffer(({max(2, min(8, self.count - 8 * h))}, {self.n}), '{self.dtype}')"
            for h in range(-(-self.count // 8))
        ]

    def at(self, j, lanes=None):
        """Vector j (or the lane slice `lanes` = (start, length) of it)."""
        start, length = (0, self.n) if lanes is None else lanes
        idx = _ramp(start, length) if length > 1 else str(start)
        return f"{self.name}{j // 8}[{j % 8}, {idx}]"


def _transpose(inputs, n, outputs, ra, rb, ind):
    """(lines, results) transposing n vectors of n int32 lanes: lane c of input r goes to lane r
    of result c. Stage k swaps bit k of the vector index with bit k of the lane index: one
    two-input shuffle per output vector (vpermt2d / unpck on AVX-512, zip/trn on arm64), stages
    alternating between the register sets ra and rb; the last one writes outputs[c] (lvalues),
    or stays in ra/rb when outputs is None."""
    cur, lines = list(inputs), []
    stages = n.bit_length() - 1
    for k in range(stages):
        s = 1 << k
        last = k == stages - 1
        dst = ra if k % 2 == 0 else rb
        idx0 = [lane if not lane & s else n + lane - s for lane in range(n)]
        idx1 = [lane + s if not lane & s else n + lane for lane in range(n)]
        new = [None] * n
        for i0 in range(n):
            if i0 & s:
                continue
            for i, idx in ((i0, idx0), (i0 + s, idx1)):
                target = outputs[i] if last and outputs is not None else dst.at(i)
                lines.append(f"{ind}{target} = T.Shuffle([{cur[i0]}, {cur[i0 + s]}], {idx})")
                new[i] = target
        cur = new
    return lines, cur


# ---------------------------------------------------------------- q4 x int8


def _q4_check(spec):
    if spec.get("format", "q4bf16") != "q4bf16":
        raise Unsupported(f"format {spec.get('format')!r}: int8 kernels read q4bf16")
    group, cols = spec["group"], spec["cols"]
    if group not in (32, 64, 128) or cols % group:
        raise Unsupported(f"q4i8: cols {cols} / group {group}")
    return spec["rows"], cols, group


def _q4_params(rows, cols, group, dynamic):
    groups = cols // group
    if not dynamic:
        return (
            f"XQ: T.Buffer((1, {cols}), 'int8', align=1), XD: T.Buffer((1, {groups}), 'float32', align=1), "
            f"XSUM: T.Buffer((1, {groups}), 'int32', align=1), Q: T.Buffer(({rows}, {cols // 2}), 'uint8', align=1), "
            f"S: T.Buffer(({rows}, {groups}), 'uint16', align=1), Y: T.Buffer((1, {rows}), 'float32', align=1)"
        ), []
    return (
        f"xq_handle: T.handle, xd_handle: T.handle, xs_handle: T.handle, "
        f"Q: T.Buffer(({rows}, {cols // 2}), 'uint8', align=1), S: T.Buffer(({rows}, {groups}), 'uint16', align=1), "
        f"y_handle: T.handle"
    ), [
        "    n = T.int32()",
        f"    XQ = T.match_buffer(xq_handle, (n, {cols}), 'int8', align=1)",
        f"    XD = T.match_buffer(xd_handle, (n, {groups}), 'float32', align=1)",
        f"    XSUM = T.match_buffer(xs_handle, (n, {groups}), 'int32', align=1)",
        f"    Y = T.match_buffer(y_handle, (n, {rows}), 'float32', align=1)",
    ]


def _q4_decode_rows(isa, rows, cols, group, ntok, ind):
    """Decode layout: lines of `for r in T.parallel(rows)` computing Y[t, r] for t < ntok."""
    half, groups = group // 2, cols // group
    n = min(ISAS[isa][0], half // 4)
    dot = Dot(isa, n, nibbles=True)
    chunks = half // (4 * n)
    na = len(dot.a_parts("a", False))
    tl = "t" if ntok != "1" else "0"
    lines = [
        f"{ind}for r in T.parallel({rows}):",
        f"{ind}    ia = T.alloc_buffer(({n},), 'int32')",
        f"{ind}    fa = T.alloc_buffer(({n},), 'float32')",
        f"{ind}    wv = T.alloc_buffer(({2 * na}, {n}), 'int32')",
    ]
    i2 = ind + "    "
    if ntok != "1":
        lines.append(f"{i2}for t in range({ntok}):")
        i2 += "    "
    r0 = _ramp(0, n)
    lines.append(f"{i2}fa[{r0}] = {_bc('T.float32(0)', n)}")
    lines.append(f"{i2}for g in range({groups}):")
    i3 = i2 + "    "
    lines.append(
        f"{i3}ia[{r0}] = T.Select({_ramp(0, n)} == {_bc('0', n)}, "
        f"{_bc(f'T.int32(-8) * XSUM[{tl}, g]', n)}, {_bc('T.int32(0)', n)})"
    )
    lines.append(f"{i3}for c in T.unroll({chunks}):")
    i4 = i3 + "    "
    w = f"T.reinterpret('int32x{n}', Q[r, {_ramp(f'g * {half} + c * {4 * n}', 4 * n)}])"
    for h in (0, 1):
        for p, e in enumerate(dot.a_parts(_nib(w, n, h), False)):
            lines.append(f"{i4}wv[{h * na + p}, {r0}] = {e}")
    pairs = []
    for h in (0, 1):
        x = f"T.reinterpret('int32x{n}', XQ[{tl}, {_ramp(f'g * {group} + {h * half} + c * {4 * n}', 4 * n)}])"
        pairs.append(([f"wv[{h * na + p}, {r0}]" for p in range(na)], dot.s_parts(x)))
    lines.append(f"{i4}ia[{r0}] = {dot.steps(f'ia[{r0}]', pairs)}")
    lines.append(
        f"{i3}fa[{r0}] = fa[{r0}] + T.Cast('float32x{n}', ia[{r0}]) * "
        + _bc(bf16_f32("S[r, g]") + f" * XD[{tl}, g]", n)
    )
    lines += _hsum("fa", n, f"Y[{tl}, r]", i2)
    return lines


def gemv_q4i8_source(spec):
    """Decode: Y[0, r] for one token, one row per parallel iteration (lanes over k)."""
    isa = _isa_of(spec)
    rows, cols, group = _q4_check(spec)
    params, _ = _q4_params(rows, cols, group, dynamic=False)
    lines = ["@T.prim_func", f"def main({params}):", '    T.func_attr({"tirx.noalias": True})']
    lines += _q4_decode_rows(isa, rows, cols, group, "1", "    ")
    return "\n".join(lines) + "\n"


def _row_blocks(full, part, rb, body, ind):
    """The task body: full blocks of rb rows, then (task index `full`) the last `part` rows."""
    if not part:
        return body(rb, ind)
    if not full:
        return body(part, ind)
    return [f"{ind}if rb < {full}:", *body(rb, ind + "    "), f"{ind}else:", *body(part, ind + "    ")]


def _largest_divisor(total, cap):
    return max(d for d in range(1, total + 1) if total % d == 0 and d <= cap)


def gemm_q4i8_source(spec):
    """Prefill: RB rows x TB tokens micro-kernel over transposed weights (lanes over rows)."""
    isa = _isa_of(spec)
    rows, cols, group = _q4_check(spec)
    n_l, regs, kind = ISAS[isa]
    rv, tb = Q4_BLOCKS[isa]
    rv = max(1, min(rv, -(-rows // n_l)))
    rb = n_l * rv
    half, groups = group // 2, cols // group
    quads = half // 4
    qb = _largest_divisor(quads, BUF_BYTES // (4 * rb))
    nbuf = quads // qb
    dot = Dot(isa, n_l, nibbles=True)
    na = len(dot.a_parts("a", False))
    full, part = rows // rb, rows % rb
    params, match = _q4_params(rows, cols, group, dynamic=True)
    lines = ["@T.prim_func", f"def main({params}):", '    T.func_attr({"tirx.noalias": True})', *match]
    lines.append(f"    if n < {NMIN}:")
    lines += _q4_decode_rows(isa, rows, cols, group, "n", "        ")
    lines.append("    else:")
    ind = "        "
    nblocks = full + (1 if part else 0)
    lines.append(f"{ind}for rb in T.parallel({nblocks}):")
    ind += "    "
    pre = quads % n_l == 0
    wp = lambda h, p, j: f"wp{h}{p}_{j}"  # noqa: E731 - decoded quads (shuffle transposition)
    for j in range(nbuf):
        if pre:
            for h in (0, 1):
                for p in range(na):
                    lines.append(f"{ind}{wp(h, p, j)} = T.alloc_buffer(({qb * rb},), 'int32')")
        else:
            lines.append(f"{ind}wt{j} = T.alloc_buffer(({qb * rb},), 'int32')")
    lines.append(f"{ind}wv = T.alloc_buffer(({2 * na * rv}, {n_l}), 'int32')")
    lines.append(f"{ind}sv = T.alloc_buffer(({max(rb, 2)},), 'float32')")
    for i in range(rv):
        lines += _acc_alloc(i, tb, n_l, ind)
    tra, trb = VRegs("tra", n_l, n_l), VRegs("trb", n_l, n_l)
    if quads % n_l == 0:
        lines += tra.alloc(ind) + trb.alloc(ind)

    def body(valid, ind):
        """One row block with `valid` real rows (rb: full block)."""
        out = []
        r0 = f"rb * {rb}"
        fz = _bc("T.float32(0)", n_l)
        # Zero this block's part of Y (the group loop accumulates into it).
        out.append(f"{ind}for t in range(n):")
        for i in range(rv):
            if valid == rb:
                out.append(f"{ind}    Y[t, {_ramp(f'{r0} + {i * n_l}', n_l)}] = {fz}")
        if valid < rb:
            out.append(f"{ind}    for l in range({valid}):")
            out.append(f"{ind}        Y[t, {r0} + l] = T.float32(0)")
            # Padding lanes: zero weights and scales, set once.
            for j in range(nbuf if not pre else 0):
                out.append(f"{ind}for l in range({qb * rb}):")
                out.append(f"{ind}    wt{j}[l] = T.int32(0)")
            out.append(f"{ind}for l in range({rb}):")
            out.append(f"{ind}    sv[l] = T.float32(0)")
        out.append(f"{ind}for g in range({groups}):")
        i2 = ind + "    "
        if quads % n_l == 0:
            # Blocks of n_l rows x n_l quads transposed in registers (log2(n_l) shuffle stages).
            for i in range(rv):
                for b in range(quads // n_l):
                    rowv = [
                        f"T.reinterpret('int32x{n_l}', Q[{r0} + {i * n_l + r}, "
                        f"{_ramp(f'g * {half} + {b * 4 * n_l}', 4 * n_l)}])"
                        if i * n_l + r < valid else _bc("T.int32(0)", n_l)
                        for r in range(n_l)
                    ]
                    tl, fin = _transpose(rowv, n_l, None, tra, trb, i2)
                    out += tl
                    # Stored decoded: the nibble halves (and their dot parts), once per group.
                    for c in range(n_l):
                        q = b * n_l + c
                        for h in (0, 1):
                            for p, e in enumerate(dot.a_parts(_nib(fin[c], n_l, h), False)):
                                out.append(f"{i2}{wp(h, p, q // qb)}[{_ramp((q % qb) * rb + i * n_l, n_l)}] = {e}")
        else:
            # Quads copied one by one.
            out.append(f"{i2}for q in range({qb}):")
            out.append(f"{i2}    for i in T.unroll({valid}):")
            for j in range(nbuf):
                out.append(
                    f"{i2}        wt{j}[q * {rb} + i] = "
                    f"T.reinterpret('int32', Q[{r0} + i, T.Ramp(g * {half} + (q + {j * qb}) * 4, 1, 4)])"
                )
        out.append(f"{i2}for i in range({valid}):")
        out.append(f"{i2}    sv[i] = {bf16_f32(f'S[{r0} + i, g]')}")

        def block(tbk, tok, ind):
            o = []
            for t in range(tbk):
                for i in range(rv):
                    o.append(f"{ind}{_acc(i, t)}{_ramp(0, n_l)}] = {_bc(f'T.int32(-8) * XSUM[{tok(t)}, g]', n_l)}")
            # arm64 dotprod: 4 quads of a token's activations in one 16-byte load, each used
            # through a lane splat (LLVM's indexed `sdot v.4s, v.16b, v.4b[i]`).
            lanex = dot.kind == "sdot" and qb % 4 == 0
            for j in range(nbuf):
                if lanex:
                    o.append(f"{ind}for qq in range({qb // 4}):")
                    subs = [(f"(qq * 4 + {ql})", ql) for ql in range(4)]
                else:
                    o.append(f"{ind}for q in range({qb}):")
                    subs = [("q", None)]
                i3 = ind + "    "
                for q, ql in subs:
                    if pre:
                        wpart = lambda i, h, p, j=j, q=q: f"{wp(h, p, j)}[{_ramp(f'{q} * {rb} + {i * n_l}', n_l)}]"  # noqa: E731
                    else:
                        wpart = lambda i, h, p: f"wv[{(i * 2 + h) * na + p}, {_ramp(0, n_l)}]"  # noqa: E731
                        for i in range(rv):
                            w = f"wt{j}[{_ramp(f'{q} * {rb} + {i * n_l}', n_l)}]"
                            for h in (0, 1):
                                for p, e in enumerate(dot.a_parts(_nib(w, n_l, h), False)):
                                    o.append(f"{i3}wv[{(i * 2 + h) * na + p}, {_ramp(0, n_l)}] = {e}")
                    for t in range(tbk):
                        if lanex:
                            xs = [
                                [f"T.Shuffle([T.reinterpret('int32x4', XQ[{tok(t)}, "
                                 f"{_ramp(f'g * {group} + {h * half} + (qq * 4 + {j * qb}) * 4', 16)}])], {[ql] * 4})"]
                                for h in (0, 1)
                            ]
                        else:
                            xs = [
                                dot.s_parts(_bc(_xword(tok(t), f"g * {group} + {h * half} + ({q} + {j * qb}) * 4"), n_l))
                                for h in (0, 1)
                            ]
                        for i in range(rv):
                            acc = f"{_acc(i, t)}{_ramp(0, n_l)}]"
                            pairs = [([wpart(i, h, p) for p in range(na)], xs[h]) for h in (0, 1)]
                            o.append(f"{i3}{acc} = {dot.steps(acc, pairs)}")
            for t in range(tbk):
                for i in range(rv):
                    conv = (
                        f"T.Cast('float32x{n_l}', {_acc(i, t)}{_ramp(0, n_l)}]) * "
                        f"(sv[{_ramp(i * n_l, n_l)}] * {_bc(f'XD[{tok(t)}, g]', n_l)})"
                    )
                    if valid == rb:
                        yv = f"Y[{tok(t)}, {_ramp(f'{r0} + {i * n_l}', n_l)}]"
                        o.append(f"{ind}{yv} = {yv} + {conv}")
                    elif i * n_l < valid:
                        o.append(f"{ind}for l in range({min(n_l, valid - i * n_l)}):")
                        o.append(
                            f"{ind}    Y[{tok(t)}, {r0} + {i * n_l} + l] = Y[{tok(t)}, {r0} + {i * n_l} + l]"
                            f" + T.Cast('float32', {_acc(i, t)}l]) * (sv[{i * n_l} + l] * XD[{tok(t)}, g])"
                        )
            return o

        out += _emit_token_blocks(tb, block, i2)
        return out

    lines += _row_blocks(full, part, rb, body, ind)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- int8 x int8


def _tree(regs, base, n, ind):
    """Lines reducing vectors regs[base .. base+n) (n lanes each) to one vector in regs[base]
    whose lane j is the sum of the lanes of the input vector j: pairwise shuffles + adds."""
    lines, count, b = [], n, n // 2
    while count > 1:
        lo = [seg * 2 * b + i for seg in range(n // (2 * b)) for i in range(b)]
        lo = lo + [i + n for i in lo]
        hi = [i + b for i in lo]
        for p in range(count // 2):
            u, v = regs.at(base + 2 * p), regs.at(base + 2 * p + 1)
            lines.append(
                f"{ind}{regs.at(base + p)} = T.Shuffle([{u}, {v}], {lo}) + T.Shuffle([{u}, {v}], {hi})"
            )
        count //= 2
        b //= 2
    return lines


def qlinear_i8_source(spec):
    """Y = B + SC * (XQ . W - zp * WSUM): RB rows x TB tokens, lanes over k, tree reductions."""
    isa = _isa_of(spec)
    rows, cols = spec["rows"], spec["cols"]
    n_l, regs, kind = ISAS[isa]
    rb, tb = QL_BLOCKS[isa]
    vnni = kind == "vnni"
    dot = Dot(isa, n_l)
    kv = cols // (4 * n_l)
    full, part = rows // rb, rows % rb
    # vnni: x ^ 0x80 (= x + 128 as unsigned) is the first operand, W the second: the products
    # carry an extra 128 * WSUM[r]. Other ISAs: W's parts (signed) and x's parts.
    na = 1 if vnni else len(dot.a_parts("a", True))
    nx = 1 if vnni else len(dot.s_parts("s"))
    acc = VRegs("acc", -(-rb * tb // n_l) * n_l, n_l)
    wv = VRegs("wv", na * rb, n_l)
    xv = VRegs("xv", nx * tb, n_l)
    corr = "(zp + T.int32(128))" if vnni else "zp"
    lines = [
        "@T.prim_func",
        f"def main(xq_handle: T.handle, W: T.Buffer(({rows}, {cols}), 'int8', align=1), "
        f"WSUM: T.Buffer(({rows},), 'int32', align=1), B: T.Buffer(({rows},), 'float32', align=1), "
        f"SC: T.Buffer(({rows},), 'float32', align=1), y_handle: T.handle, zp: T.int32):",
        '    T.func_attr({"tirx.noalias": True})',
        "    n = T.int32()",
        f"    XQ = T.match_buffer(xq_handle, (n, {cols}), 'int8', align=1)",
        f"    Y = T.match_buffer(y_handle, (n, {rows}), 'float32', align=1)",
        f"    for rb in T.parallel({full + (1 if part else 0)}):",
    ]
    ind = "        "
    lines += acc.alloc(ind) + xv.alloc(ind)
    if not vnni:
        lines += wv.alloc(ind)

    def body(valid, ind):
        r0 = f"rb * {rb}"

        def block(tbk, tok, ind):
            o = []
            nacc = -(-rb * tbk // n_l) * n_l
            for j in range(nacc):
                o.append(f"{ind}{acc.at(j)} = {_bc('T.int32(0)', n_l)}")
            if kv:
                o.append(f"{ind}for c in range({kv}):")
                i2 = ind + "    "
                for t in range(tbk):
                    x = f"T.reinterpret('int32x{n_l}', XQ[{tok(t)}, {_ramp(f'c * {4 * n_l}', 4 * n_l)}])"
                    if vnni:
                        o.append(f"{i2}{xv.at(t)} = T.bitwise_xor({x}, {_bc(_i32(0x80808080), n_l)})")
                    else:
                        for p, e in enumerate(dot.s_parts(x)):
                            o.append(f"{i2}{xv.at(t * nx + p)} = {e}")
                wexpr = lambda r: f"T.reinterpret('int32x{n_l}', W[{r0} + {r}, {_ramp(f'c * {4 * n_l}', 4 * n_l)}])"  # noqa: E731
                if not vnni:
                    for r in range(valid):
                        for p, e in enumerate(dot.a_parts(wexpr(r), True)):
                            o.append(f"{i2}{wv.at(r * na + p)} = {e}")
                for t in range(tbk):
                    for r in range(valid):
                        a = acc.at(t * rb + r)
                        if vnni:
                            e = dot.step(a, [xv.at(t)], [wexpr(r)])
                        else:
                            e = dot.step(a, [wv.at(r * na + p) for p in range(na)],
                                         [xv.at(t * nx + p) for p in range(nx)])
                        o.append(f"{i2}{a} = {e}")
            if cols % (4 * n_l):
                # The last cols % (4 lanes) bytes: scalar products into lane 0.
                o.append(f"{ind}for k in range({kv * 4 * n_l}, {cols}):")
                for t in range(tbk):
                    x = f"T.Cast('int32', XQ[{tok(t)}, k])"
                    if vnni:
                        x = f"({x} + T.int32(128))"
                    for r in range(valid):
                        a = acc.at(t * rb + r, (0, 1))
                        o.append(f"{ind}    {a} = {a} + {x} * T.Cast('int32', W[{r0} + {r}, k])")
            for g in range(nacc // n_l):
                o += _tree(acc, g * n_l, n_l, ind)
                # Lane j of the result is accumulator g*n + j = (token, row): runs of rows.
                j = 0
                while j < n_l:
                    t, r = divmod(g * n_l + j, rb)
                    ln = min(n_l - j, rb - r)
                    if t < tbk and r < valid:
                        ln_v = min(ln, valid - r)
                        rows_ = _ramp(f"{r0} + {r}", ln_v) if ln_v > 1 else f"{r0} + {r}"
                        cast = f"'float32x{ln_v}'" if ln_v > 1 else "'float32'"
                        zc = _bc(corr, ln_v) if ln_v > 1 else corr
                        o.append(
                            f"{ind}Y[{tok(t)}, {rows_}] = B[{rows_}] + SC[{rows_}] * T.Cast({cast}, "
                            f"{acc.at(g * n_l, (j, ln_v))} - {zc} * WSUM[{rows_}])"
                        )
                    j += ln
            return o

        return _emit_token_blocks(tb, block, ind)

    lines += _row_blocks(full, part, rb, body, ind)
    return "\n".join(lines) + "\n"


def gemv_q4i8(spec, lanes=None):
    import tvm

    return tvm.script.from_source(gemv_q4i8_source(spec))


def gemm_q4i8(spec, lanes=None):
    import tvm

    return tvm.script.from_source(gemm_q4i8_source(spec))


def qlinear_i8(spec, lanes=None):
    import tvm

    return tvm.script.from_source(qlinear_i8_source(spec))


def isa_of_target(tvm_target):
    """The `_isa` of a TVM JSON target dict (see the module docstring)."""
    triple = str(tvm_target.get("mtriple", ""))
    mcpu = str(tvm_target.get("mcpu", ""))
    mattr = tvm_target.get("mattr", [])
    if isinstance(mattr, str):
        mattr = mattr.split(",")
    attrs = {a.strip() for a in mattr}
    if triple.startswith(("aarch64", "arm64")):
        dot_cpus = ("cortex-a55", "cortex-a75", "cortex-a76", "cortex-a77", "cortex-a78",
                    "cortex-a510", "cortex-a710", "cortex-a715", "cortex-x1", "cortex-x2",
                    "cortex-x3", "neoverse-n1", "neoverse-n2", "neoverse-v1", "apple-")
        if "-dotprod" not in attrs and ("+dotprod" in attrs or mcpu.startswith(dot_cpus)):
            return "arm64-dotprod"
        return "arm64"
    if mcpu in ("cascadelake", "cooperlake", "icelake-client", "icelake-server", "tigerlake",
                "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5") \
            or mcpu.startswith("icelake") or "+avx512vnni" in attrs:
        if "-avx512vnni" not in attrs:
            return "x86-vnni"
    if mcpu in ("skylake-avx512", "cannonlake") or "+avx512bw" in attrs:
        return "x86-avx512"
    if mcpu in ("haswell", "broadwell", "skylake", "alderlake", "znver1", "znver2", "znver3") \
            or "+avx2" in attrs:
        return "x86-avx2"
    return "x86"
