//! The C ABI of the runtime (feature `capi`): opaque engine and session handles, generation
//! with a streaming callback, cancellation from another thread, mALBERT intent classification,
//! and the JNI entry points of the Android bindings (feature `jni`). `runtime/include/ava_runtime.h` is generated from this
//! module by cbindgen (`runtime/cbindgen.toml`); see `docs/embedding.md`.
//!
//! Every entry point runs its body under `catch_unwind`: a panic becomes `AVA_STATUS_INTERNAL`
//! with its message as the last error, never an unwind into C.

mod classify;
mod error;
#[cfg(feature = "jni")]
mod jni;
mod session;
mod trust;

use std::ffi::{c_char, CString};
use std::path::Path;
use std::sync::Arc;

use crate::generate::{Engine, GenerateOptions, StopReason};
use crate::sampling::SamplingParams;

pub use classify::{
    ava_classification_free, ava_classifier_free, ava_classifier_label, ava_classifier_num_labels,
    ava_classifier_open, ava_classifier_threshold, ava_classify, AvaClassification, AvaClassifier,
    AvaIntent,
};
pub use error::{ava_last_error, AvaStatus};
pub use session::{
    ava_session_cancel, ava_session_chat, ava_session_free, ava_session_generate,
    ava_session_kv_cache_bytes, ava_session_last_result, ava_session_new,
    ava_session_new_with_kv_cache, ava_session_reset, AvaPieceCallback, AvaSession,
};

pub use trust::{
    ava_classifier_open_with, ava_classifier_open_with_threads, ava_engine_open_with,
    ava_engine_open_with_threads, ava_open_options_default, AvaOpenOptions,
};

use error::{c_slice, c_str, guard, guard_void, handle, out_ptr, CapiError, CapiResult};

/// Version of the C ABI: raised whenever a function or struct of the header changes
/// incompatibly.
pub const AVA_ABI_VERSION: u32 = 2;

const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
) {
    Ok(v) => v,
    Err(_) => panic!("version string"),
};

/// A loaded model and its tokenizer. Immutable once open: share it between threads freely.
pub struct AvaEngine {
    engine: Arc<Engine>,
    /// How `ava_session_new` stores a session's KV cache.
    kv: crate::KvDtype,
}

/// How a session's KV cache stores keys and values.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvaKvCache {
    /// 32-bit floats (exact).
    F32 = 0,
    /// Half floats: half the memory (the default of `ava_session_new` and of
    /// `ava_open_options_default`).
    F16 = 1,
    /// int8 with one scale per head row: about a quarter of f32.
    Q8 = 2,
}

impl AvaKvCache {
    /// The dtype an `AvaKvCache` value passed in as an integer names, if any.
    pub(crate) fn dtype(value: u32) -> Option<crate::KvDtype> {
        [
            (AvaKvCache::F32, crate::KvDtype::F32),
            (AvaKvCache::F16, crate::KvDtype::F16),
            (AvaKvCache::Q8, crate::KvDtype::Q8),
        ]
        .into_iter()
        .find(|(k, _)| *k as u32 == value)
        .map(|(_, d)| d)
    }
}

/// Why a generation stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvaStopReason {
    /// The model produced an end-of-sequence token.
    Eos = 0,
    /// The model produced `<end_of_turn>`.
    EndOfTurn = 1,
    /// `max_tokens` were generated.
    MaxTokens = 2,
    /// A stop string appeared (it is not emitted).
    StopString = 3,
    /// The callback returned non-zero or `ava_session_cancel` was called.
    Cancelled = 4,
}

impl From<StopReason> for AvaStopReason {
    fn from(r: StopReason) -> Self {
        match r {
            StopReason::Eos => AvaStopReason::Eos,
            StopReason::EndOfTurn => AvaStopReason::EndOfTurn,
            StopReason::MaxTokens => AvaStopReason::MaxTokens,
            StopReason::StopString => AvaStopReason::StopString,
            _ => AvaStopReason::Cancelled,
        }
    }
}

/// How tokens are picked. `ava_generate_options_default()` gives greedy decoding.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AvaSamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: off).
    pub top_k: u32,
    /// Keep the smallest set whose probability reaches `top_p` (1.0: off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0.0: off).
    pub min_p: f32,
    /// Penalise tokens seen among the last `repeat_last_n` (1.0: off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: u32,
    /// Seed of the random generator (runs repeat exactly on every platform).
    pub seed: u64,
}

/// What to generate. Start from `ava_generate_options_default()` and change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AvaGenerateOptions {
    /// Most tokens to generate (at least 1).
    pub max_tokens: u32,
    /// How to pick tokens.
    pub sampling: AvaSamplingParams,
    /// Keep going past end-of-sequence and `<end_of_turn>`.
    pub ignore_eos: bool,
    /// `n_stop_strings` UTF-8 strings: generation stops when one appears (not emitted).
    pub stop_strings: *const *const c_char,
    /// Number of `stop_strings` (0: none; `stop_strings` may then be NULL).
    pub n_stop_strings: usize,
}

/// Timings of one generation, in milliseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AvaTimings {
    /// Prompt tokens run.
    pub prefill_tokens: u32,
    /// Decode steps run (one token each).
    pub decode_tokens: u32,
    /// Time to run the prompt.
    pub prefill_ms: f64,
    /// Time spent in decode steps.
    pub decode_ms: f64,
    /// From the start of the call to the first generated token.
    pub time_to_first_token_ms: f64,
}

/// The outcome of the last generation of a session.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AvaGenerateResult {
    /// Why it stopped.
    pub stop_reason: AvaStopReason,
    /// Tokens generated (including a final end-of-sequence token).
    pub n_tokens: u32,
    /// Positions of the session's context now used.
    pub position: u32,
    /// The session's context length.
    pub context: u32,
    /// Timings.
    pub timings: AvaTimings,
}

/// An array of token ids owned by the library: free it with `ava_tokens_free`.
#[repr(C)]
#[derive(Debug)]
pub struct AvaTokens {
    /// The ids (NULL when `len` is 0).
    pub ids: *mut u32,
    /// How many.
    pub len: usize,
}

/// The version of the C ABI this library implements (`AVA_ABI_VERSION` of its header).
#[no_mangle]
pub extern "C" fn ava_abi_version() -> u32 {
    AVA_ABI_VERSION
}

/// The runtime's version, e.g. "0.1.0" (a static string: do not free).
#[no_mangle]
pub extern "C" fn ava_version() -> *const c_char {
    VERSION.as_ptr()
}

/// Generation options with the runtime's defaults: greedy, 256 tokens, stop at end of turn.
#[no_mangle]
pub extern "C" fn ava_generate_options_default() -> AvaGenerateOptions {
    let d = GenerateOptions::default();
    let s = d.sampling;
    AvaGenerateOptions {
        max_tokens: d.max_tokens.try_into().unwrap_or(u32::MAX),
        sampling: AvaSamplingParams {
            temperature: s.temperature,
            top_k: s.top_k.try_into().unwrap_or(u32::MAX),
            top_p: s.top_p,
            min_p: s.min_p,
            repeat_penalty: s.repeat_penalty,
            repeat_last_n: s.repeat_last_n.try_into().unwrap_or(u32::MAX),
            seed: s.seed,
        },
        ignore_eos: d.ignore_eos,
        stop_strings: std::ptr::null(),
        n_stop_strings: 0,
    }
}

/// Opens an archive `.tar` (mapped in place, every sha256 verified), an unpacked archive or a
/// checkpoint directory, and writes the engine to `*out`.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn ava_engine_open(
    path: *const c_char,
    out: *mut *mut AvaEngine,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { out_ptr(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: per this function's contract.
        let path = unsafe { c_str(path, "path") }?;
        let engine = Arc::new(Engine::open(Path::new(path))?);
        *out = Box::into_raw(Box::new(AvaEngine {
            engine,
            kv: crate::KvDtype::F16,
        }));
        Ok(())
    })
}

/// Frees an engine (NULL is ignored). Sessions made from it stay usable: the model is
/// released with the last of them. No call on `engine` may be running.
///
/// # Safety
/// `engine` is NULL or was returned by `ava_engine_open` and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ava_engine_free(engine: *mut AvaEngine) {
    guard_void(|| {
        if !engine.is_null() {
            // SAFETY: returned by `ava_engine_open` (Box::into_raw), freed once.
            drop(unsafe { Box::from_raw(engine) });
        }
    })
}

/// Token ids of `text`; `add_special` adds the model's special prefix (Gemma: `<bos>`).
///
/// # Safety
/// `engine` is a live engine; `text` is NUL-terminated; `out` points to an `AvaTokens`.
#[no_mangle]
pub unsafe extern "C" fn ava_tokenize(
    engine: *const AvaEngine,
    text: *const c_char,
    add_special: bool,
    out: *mut AvaTokens,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { out_ptr(out, "out") }?;
        *out = AvaTokens {
            ids: std::ptr::null_mut(),
            len: 0,
        };
        // SAFETY: per this function's contract.
        let engine = unsafe { handle(engine, "engine") }?;
        // SAFETY: per this function's contract.
        let text = unsafe { c_str(text, "text") }?;
        let ids = engine.engine.tokenizer().encode(text, add_special)?;
        let ids = Box::into_raw(ids.into_boxed_slice());
        *out = AvaTokens {
            len: ids.len(),
            ids: ids.cast::<u32>(),
        };
        Ok(())
    })
}

/// Frees the ids of an `AvaTokens` from `ava_tokenize` and zeroes it (NULL is ignored).
///
/// # Safety
/// `tokens` is NULL or holds ids from `ava_tokenize` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ava_tokens_free(tokens: *mut AvaTokens) {
    guard_void(|| {
        // SAFETY: per this function's contract.
        let Some(t) = (unsafe { tokens.as_mut() }) else {
            return;
        };
        if !t.ids.is_null() {
            let slice = std::ptr::slice_from_raw_parts_mut(t.ids, t.len);
            // SAFETY: made by `Box::into_raw` of a boxed slice of this length.
            drop(unsafe { Box::from_raw(slice) });
        }
        t.ids = std::ptr::null_mut();
        t.len = 0;
    })
}

/// The text of `len` token ids (special tokens skipped), written to `*out`: free it with
/// `ava_string_free`.
///
/// # Safety
/// `engine` is a live engine; `ids` points to `len` ids (or `len` is 0); `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn ava_detokenize(
    engine: *const AvaEngine,
    ids: *const u32,
    len: usize,
    out: *mut *mut c_char,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { out_ptr(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: per this function's contract.
        let engine = unsafe { handle(engine, "engine") }?;
        // SAFETY: per this function's contract.
        let ids = unsafe { c_slice(ids, len, "ids") }?;
        let text = engine.engine.tokenizer().decode(ids)?;
        *out = c_string(&text).into_raw();
        Ok(())
    })
}

/// Frees a string returned by this library (NULL is ignored).
///
/// # Safety
/// `s` is NULL or a string from `ava_detokenize` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ava_string_free(s: *mut c_char) {
    guard_void(|| {
        if !s.is_null() {
            // SAFETY: made by `CString::into_raw`, freed once.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// A C string of `text`; NUL characters (which the model can only produce as U+0000) are
/// dropped because C strings cannot hold them.
pub(crate) fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}

impl AvaGenerateOptions {
    /// The runtime's options; `stop_strings` are copied.
    ///
    /// # Safety
    /// `stop_strings` points to `n_stop_strings` NUL-terminated strings (or the count is 0).
    unsafe fn runtime_options(&self) -> CapiResult<GenerateOptions> {
        if self.max_tokens == 0 {
            return Err(CapiError::invalid("max_tokens must be at least 1"));
        }
        // SAFETY: per this function's contract.
        let ptrs = unsafe { c_slice(self.stop_strings, self.n_stop_strings, "stop_strings") }?;
        let stop_strings = ptrs
            .iter()
            // SAFETY: each entry is a NUL-terminated string per the contract.
            .map(|&p| unsafe { c_str(p, "stop_strings[i]") }.map(str::to_string))
            .collect::<CapiResult<Vec<_>>>()?;
        let s = &self.sampling;
        Ok(GenerateOptions {
            max_tokens: self.max_tokens as usize,
            sampling: SamplingParams {
                temperature: s.temperature,
                top_k: s.top_k as usize,
                top_p: s.top_p,
                min_p: s.min_p,
                repeat_penalty: s.repeat_penalty,
                repeat_last_n: s.repeat_last_n as usize,
                seed: s.seed,
            },
            stop_strings,
            ignore_eos: self.ignore_eos,
        })
    }
}
