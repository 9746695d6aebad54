//! Linking an executable (`ava-runner`, the device half of `alc validate`) for
//! aarch64-linux-android without the NDK; [`crate::link`] does the same for kernel libraries.
//! clang targets Android and lld links (.cargo/config.toml) against what this module prepares
//! under `target/android-runner-link/`:
//!
//! - `crt.o`, the start-up object (`android_crt.c`: `_start` -> bionic's `__libc_init`);
//! - empty `libc.so`, `libm.so`, `libdl.so`, `liblog.so` with the right sonames (as
//!   scripts/android-lib makes them): the executable needs them, the device provides them;
//! - `libunwind.a`: Debian's aarch64 `libgcc_eh.a` plus `bindings/android/link/dl_find_object.c`
//!   (as scripts/android-lib).
//!
//! The stubs define no symbols, so the executable is linked with
//! `--unresolved-symbols=ignore-all`: lld then exports every libc/libm/libdl reference as an
//! undefined dynamic symbol, which bionic's linker resolves on the device (what the NDK's
//! stub libraries would have let lld check at link time is checked at load time instead).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use ava_core::Target;

use crate::error::{io, Error, Result};
use crate::link::{run, ANDROID_API};

/// The folder under `target/` holding the link inputs.
const LINK_DIR: &str = "android-runner-link";
/// Marks a finished link folder.
const DONE: &str = ".done";
/// The start-up object's source.
const CRT_SOURCE: &str = include_str!("android_crt.c");
/// System libraries the executable needs (stubs here, real on the device).
const STUB_LIBS: [&str; 4] = ["c", "m", "dl", "log"];
/// Where Debian's `libgcc-*-dev-arm64-cross` puts `libgcc_eh.a` (one folder per GCC version).
const GCC_CROSS_DIR: &str = "/usr/lib/gcc-cross/aarch64-linux-gnu";
/// glibc's `_dl_find_object` for bionic (libgcc_eh needs it), from the repository.
const DL_FIND_OBJECT: &str = "bindings/android/link/dl_find_object.c";

/// The rustc arguments that link an executable for Android from `root` (the checkout),
/// preparing the link folder first when it is not there yet.
pub fn rustc_link_args(root: &Path) -> Result<Vec<String>> {
    let target = root.join("target");
    let dir = target.join(LINK_DIR);
    if !dir.join(DONE).is_file() {
        std::fs::create_dir_all(&target).map_err(io(&target))?;
        let tmp = tempfile::Builder::new()
            .prefix(".android-runner-link-")
            .tempdir_in(&target)
            .map_err(io(&target))?;
        prepare(root, tmp.path())?;
        let done = tmp.path().join(DONE);
        std::fs::write(&done, b"").map_err(io(&done))?;
        let kept = tmp.keep();
        if std::fs::rename(&kept, &dir).is_err() {
            // Another run made it first (or an unfinished one is in the way).
            let _ = std::fs::remove_dir_all(&kept);
            if !dir.join(DONE).is_file() {
                return Err(Error::BadOutput {
                    path: dir,
                    message: "an unfinished Android link folder; remove it".into(),
                });
            }
        }
    }
    Ok(vec![
        "-C".into(),
        "link-arg=-nostdlib".into(),
        "-C".into(),
        format!("link-arg={}", dir.join("crt.o").display()),
        "-L".into(),
        format!("native={}", dir.display()),
        "-C".into(),
        "link-arg=-Wl,--no-as-needed,-lc,-lm,-ldl,--unresolved-symbols=ignore-all".into(),
    ])
}

fn prepare(root: &Path, dir: &Path) -> Result<()> {
    let empty = dir.join("empty.c");
    std::fs::write(&empty, b"").map_err(io(&empty))?;
    for lib in STUB_LIBS {
        let so = dir.join(format!("lib{lib}.so"));
        let soname = format!("-Wl,-soname,lib{lib}.so");
        let args = ["-fuse-ld=lld", "-shared", "-nostdlib", &soname, "-o"];
        clang(
            args.iter()
                .map(OsStr::new)
                .chain([so.as_os_str(), empty.as_os_str()]),
        )?;
    }
    let crt = dir.join("crt.c");
    std::fs::write(&crt, CRT_SOURCE).map_err(io(&crt))?;
    compile(&crt, &dir.join("crt.o"), &["-fno-emulated-tls"])?;
    let eh_dir = dir.join("eh");
    std::fs::create_dir(&eh_dir).map_err(io(&eh_dir))?;
    tool("ar", &eh_dir, [OsStr::new("x"), libgcc_eh()?.as_os_str()])?;
    let dl = dir.join("dl_find_object.o");
    compile(&root.join(DL_FIND_OBJECT), &dl, &[])?;
    let mut members: Vec<PathBuf> = std::fs::read_dir(&eh_dir)
        .map_err(io(&eh_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    members.sort();
    members.push(dl);
    let archive = dir.join("libunwind.a");
    let args = [OsStr::new("rcs"), archive.as_os_str()];
    tool(
        "ar",
        dir,
        args.into_iter()
            .chain(members.iter().map(|m| m.as_os_str())),
    )
}

/// The newest `libgcc_eh.a` of Debian's aarch64 cross GCC.
fn libgcc_eh() -> Result<PathBuf> {
    let missing = |message: &str| Error::Tool {
        tool: "libgcc_eh.a".into(),
        target: Target::AndroidArm64.name().into(),
        message: format!("{message} (Debian libgcc-12-dev-arm64-cross, `make setup`)"),
    };
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(GCC_CROSS_DIR)
        .map_err(|e| missing(&format!("{GCC_CROSS_DIR}: {e}")))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("libgcc_eh.a"))
        .filter(|p| p.is_file())
        .map(|p| {
            let version = p
                .parent()
                .and_then(Path::file_name)
                .map(|v| {
                    v.to_string_lossy()
                        .split('.')
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            (version, p)
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| missing(&format!("no libgcc_eh.a under {GCC_CROSS_DIR}")))
}

fn compile(source: &Path, object: &Path, extra: &[&str]) -> Result<()> {
    let args = ["-O2", "-fPIC", "-ffreestanding", "-Wall", "-Wextra", "-c"];
    let paths = [source.as_os_str(), OsStr::new("-o"), object.as_os_str()];
    clang(args.iter().chain(extra).map(OsStr::new).chain(paths))
}

fn clang<'a>(args: impl IntoIterator<Item = &'a OsStr>) -> Result<()> {
    let target = format!("--target=aarch64-linux-android{ANDROID_API}");
    let mut all = vec![std::ffi::OsString::from(target)];
    all.extend(args.into_iter().map(OsStr::to_os_string));
    tool("clang", Path::new("."), all.iter().map(|a| a.as_os_str()))
}

/// Runs `program` with `args` in `cwd`, failing with its stderr.
fn tool<'a>(program: &str, cwd: &Path, args: impl IntoIterator<Item = &'a OsStr>) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd);
    run(&mut cmd, Target::AndroidArm64)
}
