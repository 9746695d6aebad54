//! The encoder on an archive's TVM kernel library (`aon compile --target`, docs/tvm.md).
//!
//! The kernel list is derived from the encoder itself ([`super::Encoder::kernel_specs`]): `aon
//! compile` hands that list to `ava-targets`, and at load time the runtime checks the library
//! has every kernel the same derivation names, so builder and runtime cannot disagree.
//!
//! | kernel | op | arguments |
//! |---|---|---|
//! | `qlinear_i8_{rows}x{cols}` | int8 activations x int8 weights | XQ, W, WSUM, B, SC, Y, zp |
//! | `gemm_f32_{rows}x{cols}` | f32 linear (bias added after) | X, W, Y |
//! | `layer_norm_{w}` / `add_layer_norm_{w}` | LayerNormalization (of X + R) | X, [R,] G, B, eps, Y |
//! | `gelu_{w}` | tanh GELU | X, Y |
//! | `attention_full_{heads}x{head_dim}` | bidirectional attention | Q, K, V, O, scale |

use std::path::Path;

use ava_core::Target;

use crate::error::{Error, Result};
use crate::package::Package;
use crate::tvm::Backend;
use crate::tvm::{
    library_on_disk, library_path, missing_features, parse_table, table_path, Arg, Library,
};

/// DLPack type code of signed integers.
const DL_INT: u8 = 0;

/// A loaded encoder kernel library.
pub struct EncoderKernels {
    lib: Library,
    target: Target,
}

impl std::fmt::Debug for EncoderKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderKernels")
            .field("target", &self.target)
            .finish()
    }
}

impl EncoderKernels {
    /// The library of `pkg` for this machine, as `backend` asks: `None` for native (asked, or
    /// `Auto` without a usable library); an error when `Tvm` is asked and there is none.
    pub fn load(pkg: &Package, archive: &Path, backend: Backend) -> Result<Option<Self>> {
        if backend == Backend::Native {
            return Ok(None);
        }
        let strict = backend == Backend::Tvm;
        let Some(target) = Target::host() else {
            return if strict {
                Err(Error::Model(
                    "tvm: no kernel target for this machine".into(),
                ))
            } else {
                Ok(None)
            };
        };
        let Some(table_bytes) = pkg.entry(&table_path(target)) else {
            return if strict {
                Err(Error::Model(format!(
                    "tvm: {} has no kernel library for {target} (compile it with `aon compile --target {target}`)",
                    archive.display()
                )))
            } else {
                Ok(None)
            };
        };
        let table = parse_table(table_bytes, &archive.join(table_path(target)))?;
        let missing = missing_features(&table);
        if !missing.is_empty() {
            return if strict {
                Err(Error::Model(format!(
                    "tvm: the {target} kernels need CPU features this machine lacks: {}",
                    missing.join(", ")
                )))
            } else {
                Ok(None)
            };
        }
        let entry = match pkg.library_entry(&library_path(target)) {
            Ok(entry) => entry,
            Err(Error::KernelsRefused(_)) if !strict => return Ok(None),
            Err(e) => return Err(e),
        };
        let (path, temp) = library_on_disk(entry)?;
        let lib = Library::open(&path, &table)?;
        // Loaded: a fallback file is not needed any more.
        drop(temp);
        Ok(Some(EncoderKernels { lib, target }))
    }

    /// The target the library was built for.
    pub fn target(&self) -> Target {
        self.target
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.lib.has(name)
    }

    pub(super) fn call(&self, name: &str, args: &[Arg]) -> Result<()> {
        self.lib.call(name, args)
    }
}

/// Why the kernel library `pkg` has for this machine is refused, if it has one and it is.
pub(super) fn refused_note(pkg: &Package) -> Option<String> {
    let target = Target::host()?;
    pkg.entry(&table_path(target))?;
    pkg.kernel_permission().clone().err()
}

/// An int8 tensor argument.
pub(super) fn i8_arg(data: &[i8], shape: &[usize]) -> Arg {
    debug_assert_eq!(data.len(), shape.iter().product::<usize>());
    Arg::tensor(data.as_ptr().cast(), DL_INT, 8, shape)
}

/// An int32 tensor argument.
pub(super) fn i32_arg(data: &[i32], shape: &[usize]) -> Arg {
    debug_assert_eq!(data.len(), shape.iter().product::<usize>());
    Arg::tensor(data.as_ptr().cast(), DL_INT, 32, shape)
}
