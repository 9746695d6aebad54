/*
 * glibc's _dl_find_object (2.35) over dl_iterate_phdr, for linking libava_runtime.so for
 * Android without an NDK (scripts/android-lib).
 *
 * Rust unwinds panics (so that catch_unwind keeps them from crossing the C ABI) through
 * `-lunwind`, which the NDK provides as a static LLVM libunwind. Without the NDK, Debian's
 * aarch64 libgcc_eh.a stands in for it; built against glibc 2.36, it finds unwind tables
 * through _dl_find_object, which bionic lacks. This file gives it that function. No headers:
 * there is no Android sysroot here, so the few ELF and bionic types are spelled out (their
 * layouts are fixed by the ELF64 ABI and by bionic's <link.h>).
 */

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned short u16;

struct elf64_phdr {
  u32 p_type;
  u32 p_flags;
  u64 p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align;
};

/* The leading fields of bionic's (and glibc's) struct dl_phdr_info. */
struct dl_phdr_info {
  u64 dlpi_addr;
  const char *dlpi_name;
  const struct elf64_phdr *dlpi_phdr;
  u16 dlpi_phnum;
};

/* glibc's layout on aarch64 (no dlfo_eh_dbase, no dlfo_eh_count). */
struct dl_find_object {
  unsigned long long dlfo_flags;
  void *dlfo_map_start;
  void *dlfo_map_end;
  void *dlfo_link_map;
  void *dlfo_eh_frame;
  unsigned long long dlfo_reserved[7];
};

extern int dl_iterate_phdr(int (*cb)(struct dl_phdr_info *, unsigned long, void *), void *data);

#define PT_LOAD 1u
#define PT_GNU_EH_FRAME 0x6474e550u

struct query {
  u64 pc;
  struct dl_find_object *out;
  int found;
};

static int visit(struct dl_phdr_info *info, unsigned long size, void *data) {
  struct query *q = data;
  u64 lo = ~0ul, hi = 0;
  void *eh_frame = 0;
  int hit = 0;
  (void)size;
  for (u16 i = 0; i < info->dlpi_phnum; i++) {
    const struct elf64_phdr *p = &info->dlpi_phdr[i];
    u64 start = info->dlpi_addr + p->p_vaddr;
    if (p->p_type == PT_LOAD) {
      if (q->pc >= start && q->pc < start + p->p_memsz) hit = 1;
      if (start < lo) lo = start;
      if (start + p->p_memsz > hi) hi = start + p->p_memsz;
    } else if (p->p_type == PT_GNU_EH_FRAME) {
      eh_frame = (void *)start;
    }
  }
  if (!hit) return 0;
  q->out->dlfo_flags = 0;
  q->out->dlfo_map_start = (void *)lo;
  q->out->dlfo_map_end = (void *)hi;
  q->out->dlfo_link_map = 0;
  q->out->dlfo_eh_frame = eh_frame;
  q->found = 1;
  return 1;
}

__attribute__((visibility("hidden"))) int _dl_find_object(void *pc, struct dl_find_object *out) {
  struct query q = {(u64)pc, out, 0};
  dl_iterate_phdr(visit, &q);
  return q.found ? 0 : -1;
}
