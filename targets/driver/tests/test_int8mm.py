"""Correctness test (and, with --bench, timings) of int8mm.py's kernels, built through build.py.

    .venv/bin/python targets/driver/tests/test_int8mm.py [--bench [--preset P]] [--quick] [--no-arm-run]

Every kernel goes through build.py's own path (OPS -> unaligned() -> global_symbol) with the
`_registers` / `_isa` that build.main() derives from the target, is compiled for each x86 preset
this machine can run and checked against numpy (float64) on random and extreme data:
- integer exactness: with unit scales (q4: S = XD = 1; qlinear: SC = 1, B = 0) the result is an
  integer the f32 path represents exactly, and must equal the reference bit for bit;
- realistic scales: max |Y - ref| / max |ref| < 1e-5;
- the object code has no TVMBackendAllocWorkspace (and has vpdpbusd / pmaddwd as its isa says).
Python can only pass aligned tensors (FromDLPack refuses others), so each x86 object is also linked
into a small C host (HOST_C: bare DLTensors, our own parallel launcher, as the Rust runtime calls
the kernels) that passes every tensor misaligned, 1-byte types at odd addresses.
The arm64 variants are compiled (dotprod: `sdot` must be in the asm, none without +dotprod) and,
when aarch64-linux-gnu-gcc and qemu-aarch64 are installed, run through the same C host under qemu.
--quick: fewer shapes and modes, no native C host.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.dirname(HERE)
sys.path.insert(0, DRIVER)

ap = argparse.ArgumentParser()
ap.add_argument("--bench", action="store_true", help="time the real Gemma 3 270M shapes")
ap.add_argument("--quick", action="store_true", help="fewer shapes")
ap.add_argument("--no-arm-run", action="store_true", help="compile arm64 only, do not run under qemu")
ap.add_argument("--no-test", action="store_true", help="skip the correctness tests")
ap.add_argument("--repeat", type=int, default=15)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--preset", default="cascadelake", help="x86 preset the benchmark compiles for")
# Defaults when imported (e.g. by a test collector), the command line when run.
ARGS = ap.parse_args() if __name__ == "__main__" else ap.parse_args([])
os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import tvm  # noqa: E402

import build  # noqa: E402
import int8mm  # noqa: E402

X86 = {
    "cascadelake": ({"kind": "llvm", "mcpu": "cascadelake"}, 32),
    "skylake-avx512": ({"kind": "llvm", "mcpu": "skylake-avx512"}, 32),
    "haswell": ({"kind": "llvm", "mcpu": "haswell"}, 16),
    "x86-64": ({"kind": "llvm", "mcpu": "x86-64"}, 8),
}
ARM = {
    "a76-dotprod": ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"],
                     "mcpu": "cortex-a76"}, 8),
    "neon": ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, 8),
}
FAILS = []


def host_flags():
    try:
        return set(open("/proc/cpuinfo").read().split())
    except OSError:
        return set()


def runnable(preset):
    fl = host_flags()
    need = {"cascadelake": {"avx512_vnni", "avx512bw"}, "skylake-avx512": {"avx512bw"},
            "haswell": {"avx2", "fma"}, "x86-64": set()}[preset]
    return need <= fl


def spec_for(op, name, tgt, lanes, **kw):
    """The spec dict as build.main() passes it to OPS."""
    arm = tgt.get("mtriple", "").startswith("aarch64")
    registers = 32 if arm or lanes >= 32 else 16
    return {"name": name, "op": op, **kw, "_registers": registers,
            "_isa": int8mm.isa_of_target(tgt)}, lanes


def make(op, name, tgt, lanes, **kw):
    spec, lanes = spec_for(op, name, tgt, lanes, **kw)
    f = build.unaligned(build.OPS[op](spec, lanes))
    return f.with_attr("global_symbol", name)


def compile_funcs(funcs, tgt):
    return tvm.compile(tvm.IRModule(funcs), target=tvm.target.Target(tgt))


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("  FAIL:", what)
    return cond


# ---------------------------------------------------------------- data and references

RNG = np.random.default_rng(1234)


def bf16_bits(x):
    return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def bf16_val(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def q4_data(n, rows, cols, group, mode):
    g = cols // group
    if mode == "extreme-neg":
        xq = np.full((n, cols), -128, np.int8)
        q = np.full((rows, cols // 2), 0xFF, np.uint8)
    elif mode == "extreme-mix":
        xq = RNG.choice(np.array([-128, 127], np.int8), (n, cols))
        q = RNG.choice(np.array([0x00, 0xFF, 0x0F, 0xF0], np.uint8), (rows, cols // 2))
    else:
        xq = RNG.integers(-128, 128, (n, cols)).astype(np.int8)
        q = RNG.integers(0, 256, (rows, cols // 2)).astype(np.uint8)
    xsum = xq.astype(np.int32).reshape(n, g, group).sum(-1).astype(np.int32)
    if mode == "unit" or mode.startswith("extreme"):
        xd = np.ones((n, g), np.float32)
        s = np.full((rows, g), 0x3F80, np.uint16)
    else:
        xd = (RNG.random((n, g)) * 0.05 + 0.001).astype(np.float32)
        s = bf16_bits(RNG.standard_normal((rows, g)).astype(np.float32) * 0.02)
    return [xq, xd, xsum, q, s]


def q4_ref(xq, xd, xsum, q, s, group):
    rows, half2 = q.shape
    cols = half2 * 2
    g, half = cols // group, group // 2
    qb = q.reshape(rows, g, half)
    codes = np.concatenate([qb & 15, qb >> 4], axis=2).reshape(rows, cols).astype(np.int64)
    x = xq.astype(np.int64)
    dots = np.einsum("tgk,rgk->trg", x.reshape(-1, g, group), codes.reshape(rows, g, group))
    dots = dots - 8 * xsum.astype(np.int64)[:, None, :]
    sc = bf16_val(s).astype(np.float64)
    return np.einsum("trg,rg,tg->tr", dots.astype(np.float64), sc, xd.astype(np.float64))


def ql_data(n, rows, cols, mode):
    if mode == "extreme-neg":
        xq = np.full((n, cols), -128, np.int8)
        w = np.full((rows, cols), -128, np.int8)
        zp = 127
    elif mode == "extreme-mix":
        xq = RNG.choice(np.array([-128, 127], np.int8), (n, cols))
        w = RNG.choice(np.array([-128, 127], np.int8), (rows, cols))
        zp = -128
    else:
        xq = RNG.integers(-128, 128, (n, cols)).astype(np.int8)
        w = RNG.integers(-128, 128, (rows, cols)).astype(np.int8)
        zp = int(RNG.integers(-128, 128))
    wsum = w.astype(np.int32).sum(1).astype(np.int32)
    if mode == "unit" or mode.startswith("extreme"):
        b = np.zeros(rows, np.float32)
        sc = np.ones(rows, np.float32)
    else:
        b = RNG.standard_normal(rows).astype(np.float32)
        sc = (RNG.random(rows) * 1e-3 + 1e-5).astype(np.float32)
    return [xq, w, wsum, b, sc], zp


def ql_ints(xq, w, wsum, zp):
    return xq.astype(np.int64) @ w.astype(np.int64).T - zp * wsum.astype(np.int64)[None, :]


def ql_ref(xq, w, wsum, b, sc, zp):
    return b.astype(np.float64)[None] + sc.astype(np.float64)[None] * ql_ints(xq, w, wsum, zp).astype(np.float64)


def compare(y, ref, exact, what):
    if exact:
        want = ref.astype(np.float32)
        ok = np.array_equal(y, want)
        if not ok:
            bad = np.argwhere(y != want)[:3]
            what += f" (first mismatches at {bad.tolist()}: {[float(y[tuple(i)]) for i in bad]} vs {[float(want[tuple(i)]) for i in bad]})"
        return check(ok, what + " exact")
    err = float(np.abs(y.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))
    return check(err < 1e-5, f"{what} rel err {err:.2e}")


# ---------------------------------------------------------------- cases

def q4_cases(quick):
    shapes = [(64, 640, 128), (48, 256, 64), (40, 96, 32), (37, 256, 128), (16, 128, 128), (5, 64, 32)]
    if quick:
        shapes = shapes[:2] + shapes[3:4]
    return shapes


def ql_cases(quick):
    shapes = [(256, 256), (151, 256), (64, 64), (37, 67), (20, 1030), (40, 2047), (16, 3), (3, 130)]
    if quick:
        shapes = [(151, 256), (37, 67), (20, 1030)]
    return shapes


NS = [1, 3, 17, 128]
NS_QL = [1, 3, 8, 17, 64]
MODES = ["random", "unit", "extreme-neg", "extreme-mix"]


def build_all(tgt, lanes):
    """Every test kernel for one target: {name: (op, kw, PrimFunc)}."""
    out = {}
    for rows, cols, group in q4_cases(ARGS.quick):
        kw = dict(format="q4bf16", rows=rows, cols=cols, group=group)
        for op in ("gemv_q4i8", "gemm_q4i8"):
            name = f"{op}_{rows}x{cols}g{group}"
            out[name] = (op, kw, make(op, name, tgt, lanes, **kw))
    for rows, cols in ql_cases(ARGS.quick):
        kw = dict(rows=rows, cols=cols)
        name = f"qlinear_i8_{rows}x{cols}"
        out[name] = ("qlinear_i8", kw, make("qlinear_i8", name, tgt, lanes, **kw))
    return out


def data_for(op, kw, n, mode):
    """(args, scalars, y shape, reference, exact?)"""
    if op in ("gemv_q4i8", "gemm_q4i8"):
        args = q4_data(n, kw["rows"], kw["cols"], kw["group"], mode)
        return args, [], (n, kw["rows"]), q4_ref(*args, kw["group"]), mode != "random"
    args, zp = ql_data(n, kw["rows"], kw["cols"], mode)
    return args, [zp], (n, kw["rows"]), ql_ref(*args, zp), mode != "random"


def test_isa():
    """build.main()'s `_isa` derivation (int8mm.isa_of_target) on the presets of targets/src/spec.rs."""
    cases = [
        ({"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu", "mcpu": "cascadelake"}, "x86-vnni"),
        ({"kind": "llvm", "mcpu": "znver4"}, "x86-vnni"),
        ({"kind": "llvm", "mattr": ["+avx512vnni"]}, "x86-vnni"),
        ({"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu", "mcpu": "skylake-avx512"}, "x86-avx512"),
        ({"kind": "llvm", "mattr": ["+avx512bw"]}, "x86-avx512"),
        ({"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu", "mcpu": "haswell"}, "x86-avx2"),
        ({"kind": "llvm", "mtriple": "x86_64-unknown-linux-gnu", "mcpu": "x86-64"}, "x86"),
        ({"kind": "llvm", "mtriple": "aarch64-linux-android", "mattr": ["+neon"]}, "arm64"),
        ({"kind": "llvm", "mtriple": "aarch64-linux-android", "mcpu": "cortex-a55",
          "mattr": ["+neon", "+dotprod"]}, "arm64-dotprod"),
        ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-x1"}, "arm64-dotprod"),
        ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76",
          "mattr": ["+neon", "-dotprod"]}, "arm64"),
    ]
    for tgt, want in cases:
        got = int8mm.isa_of_target(tgt)
        check(got == want, f"isa_of_target({tgt}) = {got}, want {want}")
    print(f"[isa] {len(cases)} targets mapped")


def test_x86():
    dev = tvm.cpu()
    for preset, (tgt, lanes) in X86.items():
        isa = int8mm.isa_of_target(tgt)
        t0 = time.time()
        kernels = build_all(tgt, lanes)
        lib = compile_funcs({k: v[2] for k, v in kernels.items()}, tgt)
        asm = lib.mod.inspect_source("asm")
        print(f"[{preset} / {isa}] {len(kernels)} kernels compiled in {time.time() - t0:.1f} s")
        check("AllocWorkspace" not in asm, f"{preset}: TVMBackendAllocWorkspace in the asm")
        if isa == "x86-vnni":
            check("vpdpbusd" in asm, f"{preset}: no vpdpbusd in the asm")
        if isa in ("x86-avx512", "x86-avx2", "x86"):
            check("vpdpbusd" not in asm and "pmaddwd" in asm, f"{preset}: expected pmaddwd, no vpdpbusd")
        if isa in ("x86-avx512", "x86-avx2"):
            check("vpmaddubsw" in asm, f"{preset}: expected vpmaddubsw (q4)")
        if not runnable(preset):
            print(f"  (this CPU cannot run {preset}: compiled only)")
            continue
        count = 0
        for name, (op, kw, _) in kernels.items():
            ns = [1] if op == "gemv_q4i8" else (NS_QL if op == "qlinear_i8" else NS)
            for n in ns:
                for mode in MODES:
                    if ARGS.quick and mode == "extreme-mix" and n > 3:
                        continue
                    args, scalars, yshape, ref, exact = data_for(op, kw, n, mode)
                    targs = [tvm.runtime.tensor(a, dev) for a in args]
                    y = tvm.runtime.tensor(np.full(yshape, np.nan, np.float32), dev)
                    if op == "qlinear_i8":
                        lib[name](*targs, y, *scalars)
                    else:
                        lib[name](*targs, y)
                    compare(y.numpy(), ref, exact, f"{preset} {name} n={n} {mode}")
                    count += 1
        print(f"  {count} runs checked")
        cc = shutil.which("cc") or shutil.which("gcc")
        inc = os.path.abspath(os.path.join(os.path.dirname(tvm.__file__), "..", "tvm_ffi", "include"))
        if cc and not ARGS.quick:
            run_c_host(preset, lib, kernels, cc, [], inc, "native")


# ---------------------------------------------------------------- arm64: compile, run under qemu

HOST_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <dlpack/dlpack.h>
typedef struct { int32_t type_index; uint32_t pad; union { int64_t v_int64; double v_float64; void* v_ptr; } u; } TVMFFIAny;
typedef struct { void* sync_handle; int32_t num_task; } TVMParallelGroupEnv;
typedef int (*FLambda)(int, TVMParallelGroupEnv*, void*);
typedef int (*Kernel)(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);
extern void* __TVMBackendParallelLaunch;
static char err[1024];
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n) {
  snprintf(err, sizeof err, "%s: ", kind);
  for (int i = 0; i < n; i++) if (parts[i]) strncat(err, parts[i], sizeof err - strlen(err) - 1);
}
typedef struct { FLambda f; void* cdata; int id; TVMParallelGroupEnv* env; int rc; } Job;
static void* run_job(void* p) { Job* j = p; j->rc = j->f(j->id, j->env, j->cdata); return NULL; }
static int launch(FLambda f, void* cdata, int num_task) {
  int nt = num_task > 0 ? num_task : 3;
  TVMParallelGroupEnv env = {NULL, nt};
  pthread_t th[16]; Job jobs[16]; int rc = 0;
  for (int i = 0; i < nt; i++) { jobs[i] = (Job){f, cdata, i, &env, 0}; pthread_create(&th[i], NULL, run_job, &jobs[i]); }
  for (int i = 0; i < nt; i++) { pthread_join(th[i], NULL); rc |= jobs[i].rc; }
  return rc;
}
KERNEL_DECLS
static Kernel find(const char* name) {
KERNEL_TABLE
  return NULL;
}
/* argv: kernel dir; dir/args.txt lines: "t code bits off ndim d0 d1" (tensor, data in dir/argI.bin
   at byte offset off of a fresh buffer) or "i value" (int scalar); the last tensor is written back. */
int main(int argc, char** argv) {
  __TVMBackendParallelLaunch = (void*)launch;
  Kernel k = find(argv[1]);
  if (!k) { fprintf(stderr, "no kernel %s\n", argv[1]); return 2; }
  char path[512]; snprintf(path, sizeof path, "%s/args.txt", argv[2]);
  FILE* f = fopen(path, "r"); if (!f) return 3;
  TVMFFIAny args[16]; DLTensor ts[16]; int64_t shapes[16][2]; void* bufs[16]; size_t sizes[16];
  int na = 0, last = -1; char kind[4];
  while (fscanf(f, "%3s", kind) == 1) {
    if (kind[0] == 'i') { long long v; fscanf(f, "%lld", &v); args[na].type_index = 1; args[na].pad = 0; args[na].u.v_int64 = v; na++; continue; }
    int code, bits, off, nd; fscanf(f, "%d %d %d %d", &code, &bits, &off, &nd);
    size_t cnt = 1;
    for (int d = 0; d < nd; d++) { long long v; fscanf(f, "%lld", &v); shapes[na][d] = v; cnt *= v; }
    size_t nbytes = cnt * bits / 8;
    char* raw = malloc(nbytes + 64); char* data = raw + off;
    snprintf(path, sizeof path, "%s/arg%d.bin", argv[2], na);
    FILE* g = fopen(path, "rb"); if (!g || fread(data, 1, nbytes, g) != nbytes) return 4; fclose(g);
    memset(&ts[na], 0, sizeof(DLTensor));
    ts[na].data = data; ts[na].device.device_type = kDLCPU; ts[na].ndim = nd;
    ts[na].dtype.code = code; ts[na].dtype.bits = bits; ts[na].dtype.lanes = 1; ts[na].shape = shapes[na];
    args[na].type_index = 7; args[na].pad = 0; args[na].u.v_ptr = &ts[na];
    bufs[na] = data; sizes[na] = nbytes; last = na; na++;
  }
  fclose(f);
  TVMFFIAny ret = {0};
  int rc = k(NULL, args, na, &ret);
  if (rc) { fprintf(stderr, "kernel failed: %s\n", err); return 5; }
  snprintf(path, sizeof path, "%s/out.bin", argv[2]);
  FILE* o = fopen(path, "wb"); fwrite(bufs[last], 1, sizes[last], o); fclose(o);
  return 0;
}
"""

DL_CODE = {"int8": (0, 8), "int32": (0, 32), "uint8": (1, 8), "uint16": (1, 16), "float32": (2, 32)}


def arm_tools():
    gcc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    inc = os.path.join(os.path.dirname(tvm.__file__), "..", "tvm_ffi", "include")
    if gcc and qemu and os.path.exists(os.path.join(inc, "dlpack", "dlpack.h")) \
            and os.path.isdir("/usr/aarch64-linux-gnu"):
        return gcc, qemu, os.path.abspath(inc)
    return None


def run_c_host(preset, lib, kernels, cc, prefix, inc, label):
    """Link the kernels' object into HOST_C with `cc` and run every case through it (`prefix`:
    e.g. qemu): tensors are passed as bare DLTensors whose data sit at misaligned addresses
    (1-byte types at odd addresses), as the runtime passes weights in place from archives."""
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "k.o")
        lib.mod.write_to_file(obj)
        decls = "".join(f"int __tvm_ffi_{k}(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);\n" for k in kernels)
        table = "".join(f'  if (!strcmp(name, "{k}")) return __tvm_ffi_{k};\n' for k in kernels)
        csrc = HOST_C.replace("KERNEL_DECLS", decls).replace("KERNEL_TABLE", table)
        open(os.path.join(tmp, "host.c"), "w").write(csrc)
        exe = os.path.join(tmp, "host")
        r = subprocess.run([cc, "-O1", "-I", inc, "-o", exe, os.path.join(tmp, "host.c"), obj,
                            "-lpthread", "-lm"], capture_output=True, text=True)
        if not check(r.returncode == 0, f"{preset}: link failed: {r.stderr[-2000:]}"):
            return
        for name, (op, kw, _) in kernels.items():
            ns = [1] if op == "gemv_q4i8" else ([1, 3, 17] if op == "qlinear_i8" else [1, 5, 17])
            for n in ns:
                for mode in (["random", "unit", "extreme-mix"] if not ARGS.quick else ["random", "unit"]):
                    args, scalars, yshape, ref, exact = data_for(op, kw, n, mode)
                    d = os.path.join(tmp, "case")
                    os.makedirs(d, exist_ok=True)
                    lines = []
                    for i, a in enumerate(list(args) + [np.full(yshape, np.nan, np.float32)]):
                        code, bits = DL_CODE[str(a.dtype)]
                        off = bits // 8  # misaligned: 1-byte types at odd addresses
                        lines.append(f"t {code} {bits} {off} {a.ndim} " + " ".join(map(str, a.shape)))
                        np.ascontiguousarray(a).tofile(os.path.join(d, f"arg{i}.bin"))
                    for sc in scalars:
                        lines.append(f"i {sc}")
                    open(os.path.join(d, "args.txt"), "w").write("\n".join(lines) + "\n")
                    r = subprocess.run(prefix + [exe, name, d], capture_output=True, text=True, timeout=300)
                    if not check(r.returncode == 0, f"{preset} {name} n={n} {mode}: {label} rc {r.returncode} {r.stderr[-500:]}"):
                        continue
                    y = np.fromfile(os.path.join(d, "out.bin"), np.float32).reshape(yshape)
                    compare(y, ref, exact, f"{preset} {name} n={n} {mode} ({label})")
                    count += 1
    print(f"  {count} runs checked through the C host ({label}, misaligned tensors)")


def test_arm():
    tools = None if ARGS.no_arm_run else arm_tools()
    for preset, (tgt, lanes) in ARM.items():
        isa = int8mm.isa_of_target(tgt)
        t0 = time.time()
        kernels = build_all(tgt, lanes)
        lib = compile_funcs({k: v[2] for k, v in kernels.items()}, tgt)
        asm = lib.mod.inspect_source("asm")
        print(f"[{preset} / {isa}] {len(kernels)} kernels compiled in {time.time() - t0:.1f} s")
        check("AllocWorkspace" not in asm, f"{preset}: TVMBackendAllocWorkspace in the asm")
        nsdot = len(re.findall(r"\bsdot\b", asm))
        if isa == "arm64-dotprod":
            check(nsdot > 0, f"{preset}: no sdot in the asm")
        else:
            check(nsdot == 0, f"{preset}: sdot without +dotprod")
        print(f"  sdot instructions: {nsdot}")
        if tools is None:
            print("  (no aarch64-linux-gnu-gcc / qemu-aarch64: not run)")
            continue
        gcc, qemu, inc = tools
        run_c_host(preset, lib, kernels, gcc, [qemu, "-L", "/usr/aarch64-linux-gnu"], inc, "qemu")


# ---------------------------------------------------------------- benchmark

GEMMA = [(2048, 640), (640, 2048), (1024, 640), (640, 1024), (256, 640)]
ALBERT = [(256, 256), (1024, 256), (256, 1024), (256, 64), (151, 256)]


def timeit(lib, name, args, repeat, min_ms=5):
    """ms per call: min over `repeat` runs of >= min_ms each (the machine is shared)."""
    dev = tvm.cpu()
    f = lib[name]
    f(*args)
    t0 = time.perf_counter()
    f(*args)
    one = max(time.perf_counter() - t0, 1e-6)
    number = max(1, int(min_ms / 1e3 / one))
    te = lib.mod.time_evaluator(name, dev, number=number, repeat=repeat)
    return min(te(*args).results) * 1e3


def best_of(cases, rounds):
    """{key: ms}: the cases (key -> (lib, name, args)) timed in turn, `rounds` times, min kept,
    so that a burst of load on the shared machine does not favour one kernel."""
    best = {k: float("inf") for k in cases}
    for _ in range(rounds):
        for k, (lib, name, args) in cases.items():
            best[k] = min(best[k], timeit(lib, name, args, ARGS.repeat))
    return best


def bench():
    tgt, lanes = X86[ARGS.preset]
    dev = tvm.cpu()
    T = lambda a: tvm.runtime.tensor(a, dev)  # noqa: E731
    rounds = ARGS.rounds
    print(f"\nBenchmark: {ARGS.preset} target ({int8mm.isa_of_target(tgt)}), TVM_NUM_THREADS="
          f"{os.environ.get('TVM_NUM_THREADS')}, ms per call, min over {rounds} rounds x "
          f"{ARGS.repeat} repeats, old and new interleaved")
    print(f"{'shape':>14} | {'n=128 f32 gemm':>14} {'gemm_q4i8':>10} {'speedup':>8} | "
          f"{'n=1 f32 gemv':>12} {'gemv_q4i8':>10} {'speedup':>8} | compile s")
    for rows, cols in GEMMA + [(262144, 640)]:
        group = 128
        kw = dict(format="q4bf16", rows=rows, cols=cols, group=group)
        big = rows > 100000
        funcs = {}
        if not big:
            funcs["old_gemm"] = make("gemm", "old_gemm", tgt, lanes, **kw)
            funcs["new_gemm"] = make("gemm_q4i8", "new_gemm", tgt, lanes, **kw)
        funcs["old_gemv"] = make("gemv", "old_gemv", tgt, lanes, **kw)
        funcs["new_gemv"] = make("gemv_q4i8", "new_gemv", tgt, lanes, **kw)
        t0 = time.time()
        lib = compile_funcs(funcs, tgt)
        ctime = time.time() - t0
        cases, outs = {}, {}
        for n, kind in ((128, "gemm"), (1, "gemv")):
            if big and n == 128:
                continue
            xq, xd, xs, q, s = q4_data(n, rows, cols, group, "random")
            # The f32 kernels get the same activations, dequantized: both must match the reference.
            x = xq.astype(np.float32) * np.repeat(xd, group, axis=1)
            tq, ts = T(q), T(s)
            yo, yn = T(np.zeros((n, rows), np.float32)), T(np.zeros((n, rows), np.float32))
            cases[f"old_{kind}"] = (lib, f"old_{kind}", [T(x), tq, ts, yo])
            cases[f"new_{kind}"] = (lib, f"new_{kind}", [T(xq), T(xd), T(xs), tq, ts, yn])
            outs[kind] = (yo, yn, q4_ref(xq, xd, xs, q, s, group))
        res = best_of(cases, rounds)
        for kind, (yo, yn, ref) in outs.items():
            err = np.abs(yn.numpy() - ref).max() / np.abs(ref).max()
            err_old = np.abs(yo.numpy() - ref).max() / np.abs(ref).max()
            check(err < 1e-5 and err_old < 1e-4, f"bench {kind} {rows}x{cols}: err {err:.1e} old {err_old:.1e}")
        g_old, g_new = res.get("old_gemm"), res.get("new_gemm")
        gs = f"{g_old:14.3f} {g_new:10.3f} {g_old / g_new:7.2f}x" if g_old else f"{'-':>14} {'-':>10} {'-':>8}"
        print(f"{rows:>6}x{cols:<7} | {gs} | {res['old_gemv']:12.4f} {res['new_gemv']:10.4f} "
              f"{res['old_gemv'] / res['new_gemv']:7.2f}x | {ctime:.1f}", flush=True)

    print("\ngemm_q4i8 vs f32 gemm at other n, 2048x640 (n < %d: decode layout):" % int8mm.NMIN)
    rows, cols, group = 2048, 640, 128
    kw = dict(format="q4bf16", rows=rows, cols=cols, group=group)
    lib = compile_funcs({"old_gemm": make("gemm", "old_gemm", tgt, lanes, **kw),
                         "new_gemm": make("gemm_q4i8", "new_gemm", tgt, lanes, **kw)}, tgt)
    for n in (1, 3, 4, 6, 8, 17, 32, 64, 256):
        xq, xd, xs, q, s = q4_data(n, rows, cols, group, "random")
        x = xq.astype(np.float32) * np.repeat(xd, group, axis=1)
        y = T(np.zeros((n, rows), np.float32))
        res = best_of({"old": (lib, "old_gemm", [T(x), T(q), T(s), y]),
                       "new": (lib, "new_gemm", [T(xq), T(xd), T(xs), T(q), T(s), y])}, rounds)
        print(f"  n={n:<4} f32 gemm {res['old']:8.3f} ms  gemm_q4i8 {res['new']:8.3f} ms  "
              f"{res['old'] / res['new']:5.2f}x", flush=True)

    print("\nqlinear_i8 (ALBERT shapes), ms per call:")
    ns = (8, 16, 32, 64)
    print(f"{'shape':>12} " + " ".join(f"{'n=' + str(n):>9}" for n in ns) + "   GOP/s at n=64")
    for rows, cols in ALBERT:
        lib = compile_funcs({"ql": make("qlinear_i8", "ql", tgt, lanes, rows=rows, cols=cols)}, tgt)
        cases = {}
        for n in ns:
            (xq, w, wsum, b, sc), zp = ql_data(n, rows, cols, "random")
            y = T(np.zeros((n, rows), np.float32))
            cases[n] = (lib, "ql", [T(xq), T(w), T(wsum), T(b), T(sc), y, zp])
        res = best_of(cases, rounds)
        gops = 2 * 64 * rows * cols / (res[64] * 1e-3) / 1e9
        print(f"{rows:>5}x{cols:<6} " + " ".join(f"{res[n]:9.4f}" for n in ns) + f"   {gops:8.1f}",
              flush=True)


def main():
    t0 = time.time()
    if not ARGS.no_test:
        test_isa()
        test_x86()
        test_arm()
    if ARGS.bench:
        bench()
    print(f"\n{'FAILED: ' + str(len(FAILS)) if FAILS else 'all passed'} ({time.time() - t0:.0f} s)")
    for f in FAILS[:30]:
        print("  ", f)
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
