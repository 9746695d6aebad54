/*
 * The start-up object of an Android executable, for linking `ava-runner` without the NDK
 * (targets/src/android_runner.rs). It does what the NDK's crtbegin_dynamic.o does for a
 * dynamically linked executable: `_start` hands the kernel's argument block to bionic's
 * `__libc_init`, which runs `main` and exits with its result. No headers: there is no Android
 * sysroot here, so bionic's `structors_array_t` is spelled out.
 *
 * - The dynamic linker runs the executable's own DT_INIT_ARRAY before `_start`; bionic's
 *   dynamic `__libc_init` only registers `fini_array` (when not NULL) to run at exit. Rust
 *   registers nothing there, so all three arrays are NULL.
 * - `__dso_handle` is what `__cxa_atexit` / `__cxa_thread_atexit_impl` callers pass to name
 *   this module (std's thread-local destructors use it).
 * - Bionic refuses an arm64 executable whose PT_TLS segment is aligned to less than 64 bytes;
 *   the one 64-aligned thread-local here makes the segment (and its alignment) exist whatever
 *   else is linked in.
 */

typedef struct {
  void (**preinit_array)(void);
  void (**init_array)(void);
  void (**fini_array)(void);
} structors_array_t;

extern int main(int argc, char **argv, char **envp);
extern void __libc_init(void *raw_args, void (*onexit)(void),
                        int (*slingshot)(int, char **, char **),
                        const structors_array_t *structors) __attribute__((noreturn));

__attribute__((visibility("hidden"))) void *__dso_handle = &__dso_handle;

__attribute__((used, retain, aligned(64))) __thread char __ava_tls_align;

__attribute__((used)) static void _start_main(void *raw_args) {
  static const structors_array_t structors = {0, 0, 0};
  __libc_init(raw_args, 0, &main, &structors);
}

__asm__(".text\n"
        ".globl _start\n"
        ".type _start, %function\n"
        "_start:\n"
        ".cfi_startproc\n"
        ".cfi_undefined x30\n"
        "  mov x0, sp\n"
        "  b _start_main\n"
        ".cfi_endproc\n"
        ".size _start, .-_start\n");
