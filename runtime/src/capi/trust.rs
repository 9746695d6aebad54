//! Opening with a native-code policy: the keys an app trusts (its own CI key, pinned in the
//! app) and whether unsigned kernel libraries may load (docs/security.md).

use std::ffi::c_char;
use std::path::Path;
use std::sync::Arc;

use ava_packaging::signing::PUBLIC_KEY_TAG;
use ava_packaging::PublicKey;

use super::classify::AvaClassifier;
use super::error::{c_str, guard, out_ptr, CapiError, CapiResult};
use super::AvaEngine;
use crate::gemma3::KvDtype;
use crate::generate::Engine;
use crate::policy::KernelPolicy;
use crate::tvm::Backend;

/// Most trusted keys one call accepts.
const MAX_TRUSTED_KEYS: usize = 256;

/// How `ava_engine_open_with` and `ava_classifier_open_with` treat an archive's kernel
/// library (`lib/<target>/libmodel.so`, native code), and how the engine's sessions store
/// their KV cache. Start from `ava_open_options_default()`: a zeroed struct asks for f32.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AvaOpenOptions {
    /// Public keys whose valid signature lets an archive's kernel library load: each a
    /// NUL-terminated key file line (`ava-ed25519-public-key <64 hex>`) or the 64 hex digits.
    pub trusted_keys: *const *const c_char,
    /// Number of entries of `trusted_keys`.
    pub n_trusted_keys: usize,
    /// Also load the kernels of archives that are unsigned or signed by an untrusted key.
    pub allow_unsigned_kernels: bool,
    /// How `ava_session_new` stores the KV cache of this engine's sessions: an `AvaKvCache`
    /// value (the default's is `AVA_KV_CACHE_F16`; classifiers ignore it).
    pub kv_cache: u32,
}

/// Options that trust nothing: kernel libraries never load, models run on the native backend.
#[no_mangle]
pub extern "C" fn ava_open_options_default() -> AvaOpenOptions {
    AvaOpenOptions {
        trusted_keys: std::ptr::null(),
        n_trusted_keys: 0,
        allow_unsigned_kernels: false,
        kv_cache: super::AvaKvCache::F16 as u32,
    }
}

/// Parses one trusted key: a key file line or its 64 hex digits.
pub(crate) fn parse_key(text: &str) -> CapiResult<PublicKey> {
    let text = text.trim();
    let line = if text.starts_with(PUBLIC_KEY_TAG) {
        text.to_string()
    } else {
        format!("{PUBLIC_KEY_TAG} {text}")
    };
    PublicKey::parse(&line).map_err(|e| CapiError::invalid(format!("trusted key: {e}")))
}

/// The KV cache type `options` ask for (NULL: the default, f16).
///
/// # Safety
/// `options` is NULL or valid.
unsafe fn kv_cache(options: *const AvaOpenOptions) -> CapiResult<KvDtype> {
    // SAFETY: per this function's contract.
    let Some(o) = (unsafe { options.as_ref() }) else {
        return Ok(KvDtype::F16);
    };
    super::AvaKvCache::dtype(o.kv_cache)
        .ok_or_else(|| CapiError::invalid(format!("kv_cache {} is not an AvaKvCache", o.kv_cache)))
}

/// The policy `options` describe (NULL: trust nothing).
///
/// # Safety
/// `options` is NULL or valid; its `trusted_keys` holds `n_trusted_keys` C strings.
unsafe fn policy(options: *const AvaOpenOptions) -> CapiResult<KernelPolicy> {
    // SAFETY: per this function's contract.
    let Some(o) = (unsafe { options.as_ref() }) else {
        return Ok(KernelPolicy::default());
    };
    if o.n_trusted_keys > MAX_TRUSTED_KEYS {
        return Err(CapiError::invalid(format!(
            "more than {MAX_TRUSTED_KEYS} trusted keys"
        )));
    }
    if o.n_trusted_keys > 0 && o.trusted_keys.is_null() {
        return Err(CapiError::invalid("trusted_keys is NULL"));
    }
    let mut trusted = Vec::with_capacity(o.n_trusted_keys);
    for i in 0..o.n_trusted_keys {
        // SAFETY: `trusted_keys` holds `n_trusted_keys` pointers (contract).
        let ptr = unsafe { *o.trusted_keys.add(i) };
        // SAFETY: each is a NUL-terminated string (contract).
        trusted.push(parse_key(unsafe { c_str(ptr, "trusted key") }?)?);
    }
    Ok(KernelPolicy {
        trusted,
        allow_unsigned: o.allow_unsigned_kernels,
    })
}

/// `ava_engine_open` with a native-code policy: the archive's kernel library for this machine
/// is used when `options` allow it, otherwise the native backend runs the model. Sessions from
/// `ava_session_new` store their KV cache as `options->kv_cache` says.
///
/// # Safety
/// `path` is a NUL-terminated string; `options` is NULL or points to valid options;
/// `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn ava_engine_open_with(
    path: *const c_char,
    options: *const AvaOpenOptions,
    out: *mut *mut AvaEngine,
) -> super::AvaStatus {
    // SAFETY: the same contract.
    unsafe { ava_engine_open_with_threads(path, options, 0, out) }
}

/// `ava_engine_open_with`, the engine's forward passes running on `n_threads` threads of its
/// own (0: the process's threads, one per core; at most 1024).
///
/// # Safety
/// As `ava_engine_open_with`.
#[no_mangle]
pub unsafe extern "C" fn ava_engine_open_with_threads(
    path: *const c_char,
    options: *const AvaOpenOptions,
    n_threads: u32,
    out: *mut *mut AvaEngine,
) -> super::AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { out_ptr(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: per this function's contract.
        let path = unsafe { c_str(path, "path") }?;
        // SAFETY: per this function's contract.
        let (policy, kv) = unsafe { (policy(options)?, kv_cache(options)?) };
        let engine = engine_with(Path::new(path), &policy, n_threads as usize)?;
        *out = Box::into_raw(Box::new(AvaEngine { engine, kv }));
        Ok(())
    })
}

/// `ava_classifier_open` with a native-code policy, as `ava_engine_open_with`.
///
/// # Safety
/// As `ava_engine_open_with`.
#[no_mangle]
pub unsafe extern "C" fn ava_classifier_open_with(
    path: *const c_char,
    options: *const AvaOpenOptions,
    out: *mut *mut AvaClassifier,
) -> super::AvaStatus {
    // SAFETY: the same contract.
    unsafe { ava_classifier_open_with_threads(path, options, 0, out) }
}

/// `ava_classifier_open_with` on `n_threads` threads of its own, as
/// `ava_engine_open_with_threads`.
///
/// # Safety
/// As `ava_engine_open_with`.
#[no_mangle]
pub unsafe extern "C" fn ava_classifier_open_with_threads(
    path: *const c_char,
    options: *const AvaOpenOptions,
    n_threads: u32,
    out: *mut *mut AvaClassifier,
) -> super::AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { out_ptr(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: per this function's contract.
        let path = unsafe { c_str(path, "path") }?;
        // SAFETY: per this function's contract.
        let policy = unsafe { policy(options) }?;
        *out = Box::into_raw(Box::new(AvaClassifier::open_with_threads(
            Path::new(path),
            &policy,
            n_threads as usize,
        )?));
        Ok(())
    })
}

/// An engine opened under `policy`, on `n_threads` threads of its own (0: the process's).
pub(crate) fn engine_with(
    path: &Path,
    policy: &KernelPolicy,
    n_threads: usize,
) -> CapiResult<Arc<Engine>> {
    let threads = crate::threads::Threads::new(n_threads)?;
    Ok(Arc::new(
        Engine::open_with_policy(path, Backend::Auto, policy)?.with_threads(threads),
    ))
}
