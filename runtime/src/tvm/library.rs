//! Opening a kernel library (`dlopen`), installing the host hooks and calling kernels.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};

use ava_core::KernelTable;

use super::ffi::{
    self, DLDataType, DLDevice, DLTensor, SafeCall, TVMFFIAny, DL_CPU, TYPE_DLTENSOR_PTR,
    TYPE_FLOAT, TYPE_INT, TYPE_NONE,
};
use crate::error::{Error, Result};

/// Most dimensions of a tensor argument.
const MAX_DIMS: usize = 4;

/// Parses `kernels.json` (`label` names it in errors).
pub fn parse_table(bytes: &[u8], label: &Path) -> Result<KernelTable> {
    Ok(KernelTable::parse(bytes, label)?)
}

/// CPU features the library of `table` needs that this CPU lacks.
pub fn missing_features(table: &KernelTable) -> Vec<String> {
    table
        .requires
        .iter()
        .filter(|f| !cpu_has(f))
        .cloned()
        .collect()
}

#[cfg(target_arch = "x86_64")]
fn cpu_has(feature: &str) -> bool {
    match feature {
        "avx2" => std::is_x86_feature_detected!("avx2"),
        "fma" => std::is_x86_feature_detected!("fma"),
        "avx512f" => std::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
        "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
        _ => false,
    }
}

#[cfg(target_arch = "aarch64")]
fn cpu_has(feature: &str) -> bool {
    match feature {
        "neon" => std::arch::is_aarch64_feature_detected!("neon"),
        "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
        _ => false,
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_has(_feature: &str) -> bool {
    false
}

/// One argument of a kernel call.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A CPU tensor: data pointer, dtype, shape (`ndim` leading entries of `shape` used).
    Tensor {
        /// First element.
        data: *const u8,
        /// Element type.
        dtype: DLDataType,
        /// Dimensions.
        shape: [i64; MAX_DIMS],
        /// Number of dimensions.
        ndim: usize,
    },
    /// An integer scalar.
    Int(i64),
    /// A float scalar.
    Float(f64),
}

impl Arg {
    /// A tensor over `data` with `shape`; `code`/`bits` as in DLPack.
    pub fn tensor(data: *const u8, code: u8, bits: u8, shape: &[usize]) -> Arg {
        let mut s = [0i64; MAX_DIMS];
        for (d, &v) in s.iter_mut().zip(shape) {
            *d = v as i64;
        }
        Arg::Tensor {
            data,
            dtype: DLDataType {
                code,
                bits,
                lanes: 1,
            },
            shape: s,
            ndim: shape.len().min(MAX_DIMS),
        }
    }

    /// An f32 tensor the kernel reads.
    pub fn f32(data: &[f32], shape: &[usize]) -> Arg {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Arg::tensor(data.as_ptr().cast(), 2, 32, shape)
    }

    /// An f32 tensor the kernel writes.
    pub fn f32_out(data: &mut [f32], shape: &[usize]) -> Arg {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Arg::tensor(data.as_mut_ptr().cast_const().cast(), 2, 32, shape)
    }
}

/// Environment variable: when set (to anything but `0`), time every kernel call and print a
/// table of calls and milliseconds per kernel on stderr when the library is dropped.
pub const PROFILE_ENV: &str = "AVA_TVM_PROFILE";

/// An opened kernel library.
pub struct Library {
    handle: *mut c_void,
    kernels: HashMap<String, SafeCall>,
    /// Per-kernel (calls, seconds), when profiling.
    profile: Option<std::sync::Mutex<HashMap<String, (u64, f64)>>>,
}

// SAFETY: the handle and entry points are immutable after loading; the kernels are reentrant
// (they keep no state; the hooks they call are thread-safe).
unsafe impl Send for Library {}
// SAFETY: as above.
unsafe impl Sync for Library {}

impl Library {
    /// `dlopen`s the library at `path`, installs the host hooks, and resolves every kernel of
    /// `table`.
    pub fn open(path: &Path, table: &KernelTable) -> Result<Self> {
        let bad = |m: String| Error::Model(format!("{}: {m}", path.display()));
        let cpath = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| bad("path contains NUL".into()))?;
        // SAFETY: a plain dlopen of a library whose only initialisers are the C runtime's.
        let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(bad(format!("dlopen failed: {}", dl_error())));
        }
        let lib = Library {
            handle,
            kernels: HashMap::new(),
            profile: None,
        };
        lib.install_hooks();
        let mut kernels = HashMap::new();
        for name in table.kernels.iter().map(|k| &k.name) {
            let sym = lib
                .symbol(&format!("__tvm_ffi_{name}"))
                .ok_or_else(|| bad(format!("kernel {name} listed in the table is not exported")))?;
            // SAFETY: `__tvm_ffi_*` symbols are tvm-ffi safe-call functions.
            kernels.insert(name.clone(), unsafe {
                std::mem::transmute::<*mut c_void, SafeCall>(sym)
            });
        }
        let profile = std::env::var_os(PROFILE_ENV)
            .is_some_and(|v| v != "0" && !v.is_empty())
            .then(|| std::sync::Mutex::new(HashMap::new()));
        Ok(Library {
            kernels,
            profile,
            ..lib
        })
    }

    fn symbol(&self, name: &str) -> Option<*mut c_void> {
        let c = CString::new(name).ok()?;
        // SAFETY: `handle` is a live dlopen handle.
        let p = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        (!p.is_null()).then_some(p)
    }

    /// Fills the library's hook pointers (present only when some kernel uses them).
    fn install_hooks(&self) {
        let hooks: [(&str, *const c_void); 4] = [
            (
                "__TVMBackendParallelLaunch",
                super::pool::parallel_launch as *const c_void,
            ),
            (
                "__TVMBackendAllocWorkspace",
                ffi::alloc_workspace as *const c_void,
            ),
            (
                "__TVMBackendFreeWorkspace",
                ffi::free_workspace as *const c_void,
            ),
            (
                "__ava_error_hook",
                ffi::TVMFFIErrorSetRaisedFromCStrParts as *const c_void,
            ),
        ];
        for (name, f) in hooks {
            if let Some(slot) = self.symbol(name) {
                // SAFETY: each of these symbols is a pointer-sized variable holding a function
                // pointer of the matching signature.
                unsafe { *(slot as *mut *const c_void) = f };
            }
        }
    }

    /// Whether the library has kernel `name`.
    pub fn has(&self, name: &str) -> bool {
        self.kernels.contains_key(name)
    }

    /// Calls kernel `name`. The kernel checks dtypes and shapes and returns an error (with the
    /// kernel's message) on a mismatch; the caller guarantees the data pointers cover them.
    pub fn call(&self, name: &str, args: &[Arg]) -> Result<()> {
        let f = self
            .kernels
            .get(name)
            .ok_or_else(|| Error::Model(format!("tvm: no kernel {name} in the library")))?;
        let mut tensors: Vec<DLTensor> = Vec::with_capacity(args.len());
        for a in args {
            if let Arg::Tensor {
                data,
                dtype,
                ref shape,
                ndim,
            } = *a
            {
                tensors.push(DLTensor {
                    data: data as *mut c_void,
                    device: DLDevice {
                        device_type: DL_CPU,
                        device_id: 0,
                    },
                    ndim: ndim as i32,
                    dtype,
                    shape: shape.as_ptr(),
                    strides: std::ptr::null(),
                    byte_offset: 0,
                });
            }
        }
        let mut next = 0;
        let packed: Vec<TVMFFIAny> = args
            .iter()
            .map(|a| match *a {
                Arg::Tensor { .. } => {
                    let t = &tensors[next] as *const DLTensor;
                    next += 1;
                    any(TYPE_DLTENSOR_PTR, t as u64)
                }
                Arg::Int(v) => any(TYPE_INT, v as u64),
                Arg::Float(v) => any(TYPE_FLOAT, v.to_bits()),
            })
            .collect();
        let mut ret = any(TYPE_NONE, 0);
        let started = self.profile.as_ref().map(|_| std::time::Instant::now());
        // SAFETY: `packed` points at DLTensors (and their shapes in `args`) alive for the call.
        let rc = unsafe {
            f(
                std::ptr::null_mut(),
                packed.as_ptr(),
                packed.len() as i32,
                &mut ret,
            )
        };
        if let (Some(profile), Some(t)) = (&self.profile, started) {
            let mut p = profile.lock().unwrap_or_else(|e| e.into_inner());
            let e = p.entry(name.to_string()).or_default();
            e.0 += 1;
            e.1 += t.elapsed().as_secs_f64();
        }
        if rc != 0 {
            return Err(Error::Model(format!(
                "tvm kernel {name}: {}",
                ffi::take_error()
            )));
        }
        Ok(())
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        if let Some(profile) = &self.profile {
            let p = profile.lock().unwrap_or_else(|e| e.into_inner());
            let mut rows: Vec<_> = p.iter().collect();
            rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
            let total: f64 = rows.iter().map(|r| r.1 .1).sum();
            eprintln!("tvm kernel profile: {total:.3} s in kernels");
            for (name, (calls, secs)) in rows {
                eprintln!("{:>10.3} ms {calls:>8} calls  {name}", secs * 1e3);
            }
        }
        // The library stays loaded: worker threads may still hold pointers into it for a moment
        // after a launch returns, and unloading saves little.
    }
}

fn any(type_index: i32, value: u64) -> TVMFFIAny {
    TVMFFIAny {
        type_index,
        zero_padding: 0,
        value,
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns a thread-local C string or null.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null C string from dlerror.
        unsafe { std::ffi::CStr::from_ptr(e) }
            .to_string_lossy()
            .into_owned()
    }
}

/// A kernel library entry of a verified archive that the native-code policy allows to load.
pub(crate) struct LibraryEntry<'a> {
    /// Names the entry in messages.
    pub(crate) label: PathBuf,
    /// Its bytes (in the archive's mapping).
    pub(crate) bytes: &'a [u8],
    /// The sha256 the manifest records for it.
    pub(crate) sha256: &'a str,
}

/// A path `dlopen` can use for `entry`, holding exactly the bytes the manifest's sha256 names:
/// a sealed anonymous memory file (`/proc/self/fd/N`) on Linux and Android, else a file created
/// exclusively in a new private (0700) directory with an unguessable name. Nothing is written
/// under a predictable name; see `docs/security.md`.
pub(crate) fn library_on_disk(entry: LibraryEntry<'_>) -> Result<(PathBuf, Option<TempLibrary>)> {
    // A private copy: the mapping of an unpacked directory could change under us.
    let bytes = entry.bytes.to_vec();
    let (_, sha256) = ava_packaging::sha256_reader(bytes.as_slice()).map_err(|e| Error::Io {
        path: entry.label.clone(),
        source: e,
    })?;
    if sha256 != entry.sha256 {
        return Err(Error::Model(format!(
            "{}: changed since the archive was verified",
            entry.label.display()
        )));
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(path) = memfd::sealed(&bytes) {
        return Ok((path, None));
    }
    private_file(&std::env::temp_dir(), &entry.label, &bytes)
}

/// The fallback: `bytes` in a new 0700 directory of `base` (the temporary directory), both
/// with random names, the file created with `O_EXCL | O_NOFOLLOW`. Removed when the guard
/// drops.
fn private_file(base: &Path, label: &Path, bytes: &[u8]) -> Result<(PathBuf, Option<TempLibrary>)> {
    use std::io::Write;
    let io = |path: &Path, e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, PRIVATE_DIR_MODE);
    let mut attempt = 0;
    let dir = loop {
        let dir = base.join(format!("ava-kernels-{:016x}", random_u64()));
        match builder.create(&dir) {
            Ok(()) => break dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
            Err(e) => return Err(io(&dir, e)),
        }
    };
    let guard = TempLibrary(dir.clone());
    let path = dir.join(ava_core::kernel_table::LIBRARY_NAME);
    let mut file = create_exclusive(&path).map_err(|e| io(&path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io(label, e))?;
    Ok((path, Some(guard)))
}

/// A new file at `path` (`O_CREAT | O_EXCL | O_NOFOLLOW`): never an existing file, never
/// through a symbolic link.
fn create_exclusive(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    options.open(path)
}

/// Permissions of the private directory of the fallback.
#[cfg(unix)]
const PRIVATE_DIR_MODE: u32 = 0o700;

/// 64 random bits from the standard library's randomly seeded hasher.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod memfd {
    //! Anonymous, sealed memory files for `dlopen`.
    use std::ffi::CString;
    use std::io::Write;
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    use std::path::PathBuf;

    /// `bytes` in a sealed memory file; its `/proc/self/fd/N` path, or `None` when the kernel
    /// or the sandbox offers no memory files (the caller falls back to a private file).
    ///
    /// The descriptor is never closed: libraries are never unloaded, and a closed descriptor's
    /// number, reused for the next library, would make the dynamic loader return the library
    /// already loaded under the same `/proc/self/fd/N` name.
    pub(super) fn sealed(bytes: &[u8]) -> Option<PathBuf> {
        let name = CString::new("ava-kernels").ok()?;
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // SAFETY: memfd_create with a valid C string; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), flags) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut file = std::fs::File::from(owned);
        file.write_all(bytes).ok()?;
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor we own.
        if unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::F_ADD_SEALS,
                seals,
            )
        } != 0
        {
            return None;
        }
        let path = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ));
        if !path.exists() {
            return None;
        }
        // Kept open on purpose (see above).
        let _ = file.into_raw_fd();
        Some(path)
    }
}

/// The private directory of the fallback; removed on drop.
pub(crate) struct TempLibrary(pub(crate) PathBuf);

impl Drop for TempLibrary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(bytes: &'a [u8], sha256: &'a str) -> LibraryEntry<'a> {
        LibraryEntry {
            label: PathBuf::from("model.tar/lib/linux-x86_64/libmodel.so"),
            bytes,
            sha256,
        }
    }

    fn sha256(bytes: &[u8]) -> String {
        ava_packaging::sha256_reader(bytes).unwrap().1
    }

    #[test]
    fn bytes_that_do_not_match_the_manifest_are_refused() {
        let bytes = b"\x7fELF not really".to_vec();
        let other = sha256(b"something else");
        let err = library_on_disk(entry(&bytes, &other)).err().unwrap();
        assert!(err.to_string().contains("changed since"), "{err}");
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_memory_file_holds_the_bytes_sealed_and_touches_no_directory() {
        use std::io::Write;
        let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let (path, temp) = library_on_disk(entry(&bytes, &sha256(&bytes))).unwrap();
        assert!(temp.is_none(), "fell back to a file: {}", path.display());
        assert!(path.starts_with("/proc/self/fd"), "{}", path.display());
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Sealed: neither written nor grown through another descriptor.
        let write = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"patched"));
        assert!(write.is_err(), "a sealed memory file was written");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[cfg(unix)]
    #[test]
    fn the_fallback_file_lives_in_a_private_directory_and_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let bytes = b"kernel bytes".to_vec();
        let (path, guard) = private_file(base.path(), Path::new("lib"), &bytes).unwrap();
        let guard = guard.expect("a file needs its guard");
        let dir = path.parent().unwrap().to_path_buf();
        assert_eq!(dir, guard.0);
        assert_eq!(dir.parent().unwrap(), base.path());
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("ava-kernels-") && name.len() == 12 + 16,
            "{name}"
        );
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, PRIVATE_DIR_MODE);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // A second library gets its own directory.
        let (second, _guard2) = private_file(base.path(), Path::new("lib"), &bytes).unwrap();
        assert_ne!(second.parent(), path.parent());
        drop(guard);
        assert!(!dir.exists(), "the private directory was left behind");
        assert!(second.exists());
    }

    #[cfg(unix)]
    #[test]
    fn the_fallback_never_opens_an_existing_file_or_follows_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::write(&target, b"theirs").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for path in [&target, &link] {
            let err = create_exclusive(path).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        }
        let dangling = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("nothing"), &dangling).unwrap();
        assert!(create_exclusive(&dangling).is_err());
        assert!(!tmp.path().join("nothing").exists(), "followed a link");
        assert_eq!(std::fs::read(&target).unwrap(), b"theirs");
    }

    #[test]
    fn no_temporary_directory_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("no-such-dir");
        let err = private_file(&missing, Path::new("lib"), b"x")
            .err()
            .unwrap();
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }
}
