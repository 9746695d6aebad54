/*
 * Executes one instruction of the named instruction-set extension and exits 0; a CPU or a
 * virtual machine that does not let this process use it kills it with SIGILL (or, for AMX,
 * refuses the tile-data permission: exit 1). scripts/build-llama-cpp builds the peer with the
 * options whose probes pass, never from the CPU flags alone: a VM can list AMX in /proc/cpuinfo
 * and still fault on its first tile instruction.
 *   isa-probe FEATURE      (exit 0: usable; 1 or a signal: not; 2: unknown name)
 * Only the assembler has to know the instructions, so the probe builds with plain `cc`.
 */
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>

/* Linux: a process asks for the AMX tile-data state before using it (arch_prctl). */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
/* The 64-byte tile configuration: palette 1, tile 0 of 1 row of 4 bytes. */
#define TILE_CONFIG_BYTES 64
#define TILE_PALETTE 1

static int amx(const char *op) {
  if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return 1;
  unsigned char cfg[TILE_CONFIG_BYTES];
  memset(cfg, 0, sizeof cfg);
  cfg[0] = TILE_PALETTE;
  for (int t = 0; t < 3; t++) {
    cfg[16 + 2 * t] = 4; /* bytes per row of tiles 0..2 */
    cfg[48 + t] = 1;     /* rows */
  }
  __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
  __asm__ volatile("tilezero %%tmm0\n\ttilezero %%tmm1\n\ttilezero %%tmm2" ::: "memory");
  if (strcmp(op, "amx_int8") == 0) __asm__ volatile("tdpbssd %%tmm2, %%tmm1, %%tmm0" ::: "memory");
  if (strcmp(op, "amx_bf16") == 0) __asm__ volatile("tdpbf16ps %%tmm2, %%tmm1, %%tmm0" ::: "memory");
  __asm__ volatile("tilerelease" ::: "memory");
  return 0;
}

static int probe(const char *f) {
  if (!strcmp(f, "sse42")) __asm__ volatile("crc32l %%eax, %%eax" ::: "eax");
  else if (!strcmp(f, "avx")) __asm__ volatile("vxorps %%ymm0, %%ymm0, %%ymm0" ::: "xmm0");
  else if (!strcmp(f, "avx2")) __asm__ volatile("vpaddd %%ymm0, %%ymm0, %%ymm0" ::: "xmm0");
  else if (!strcmp(f, "fma")) __asm__ volatile("vfmadd231ps %%ymm0, %%ymm0, %%ymm0" ::: "xmm0");
  else if (!strcmp(f, "f16c")) __asm__ volatile("vcvtph2ps %%xmm0, %%ymm0" ::: "xmm0");
  else if (!strcmp(f, "bmi2")) __asm__ volatile("pdep %%eax, %%eax, %%eax" ::: "eax");
  else if (!strcmp(f, "avx_vnni"))
    __asm__ volatile("%{vex%} vpdpbusd %%ymm0, %%ymm0, %%ymm0" ::: "xmm0");
  else if (!strcmp(f, "avx512")) /* what GGML_AVX512 compiles for: F, CD, VL, DQ, BW */
    __asm__ volatile("vpaddd %%zmm0, %%zmm0, %%zmm0\n\tvplzcntd %%zmm0, %%zmm0\n\t"
                     "%{evex%} vpaddd %%xmm0, %%xmm0, %%xmm0\n\tvpmullq %%zmm0, %%zmm0, %%zmm0\n\t"
                     "vpaddb %%zmm0, %%zmm0, %%zmm0" ::: "xmm0");
  else if (!strcmp(f, "avx512_vbmi")) __asm__ volatile("vpermb %%zmm0, %%zmm0, %%zmm0" ::: "xmm0");
  else if (!strcmp(f, "avx512_vnni"))
    __asm__ volatile("vpdpbusd %%zmm0, %%zmm0, %%zmm0" ::: "xmm0");
  else if (!strcmp(f, "avx512_bf16"))
    __asm__ volatile("vdpbf16ps %%zmm0, %%zmm0, %%zmm0" ::: "xmm0");
  else if (!strcmp(f, "amx_tile") || !strcmp(f, "amx_int8") || !strcmp(f, "amx_bf16"))
    return amx(f);
  else return 2;
  return 0;
}
#elif defined(__aarch64__)
static int probe(const char *f) {
  if (!strcmp(f, "fp16")) __asm__ volatile(".arch_extension fp16\n\tfadd v0.8h, v0.8h, v0.8h" ::: "v0");
  else if (!strcmp(f, "dotprod"))
    __asm__ volatile(".arch_extension dotprod\n\tsdot v0.4s, v0.16b, v0.16b" ::: "v0");
  else if (!strcmp(f, "i8mm"))
    __asm__ volatile(".arch_extension i8mm\n\tsmmla v0.4s, v0.16b, v0.16b" ::: "v0");
  else if (!strcmp(f, "sve")) __asm__ volatile(".arch_extension sve\n\tptrue p0.b" ::: "p0");
  else return 2;
  return 0;
}
#else
static int probe(const char *f) {
  (void)f;
  return 2;
}
#endif

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: isa-probe FEATURE\n");
    return 2;
  }
  return probe(argv[1]);
}
