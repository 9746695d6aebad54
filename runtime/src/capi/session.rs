//! Sessions behind the C ABI: a conversation (KV cache) run one call at a time, generation
//! with a streaming callback, cancellation from any thread, reset and the last result.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use super::error::{c_slice, c_str, guard, guard_void, handle, out_ptr, CapiError, CapiResult};
use super::{
    c_string, AvaEngine, AvaGenerateOptions, AvaGenerateResult, AvaKvCache, AvaStatus, AvaTimings,
};
use crate::generate::{Engine, GenerateOptions, Generation, Piece, Session, DEFAULT_CONTEXT};
use crate::tokenizer::gemma_chat_turn;
use crate::KvDtype;

/// Receives each generated piece: `piece` is NUL-terminated UTF-8 (whole characters, possibly
/// empty), valid only during the call; `token` is the id behind it. Return 0 to go on, anything
/// else to stop (the generation then ends with `AVA_STOP_REASON_CANCELLED`).
pub type AvaPieceCallback =
    Option<unsafe extern "C" fn(piece: *const c_char, token: u32, user: *mut c_void) -> c_int>;

/// A conversation: its KV cache and the tokens it holds. Runs one call at a time; only
/// `ava_session_cancel` may be called while another call runs.
pub struct AvaSession {
    // Declared before `engine`: fields drop in order, and the session borrows the engine.
    state: Mutex<State>,
    cancel: AtomicBool,
    engine: Arc<Engine>,
}

struct State {
    session: Session<'static>,
    last: Option<AvaGenerateResult>,
}

/// What a generation starts from.
pub(crate) enum Prompt<'a> {
    /// Token ids, run as they are.
    Tokens(&'a [u32]),
    /// A user turn, wrapped in the chat template (the first turn also gets `<bos>`).
    Chat(&'a str),
}

impl AvaSession {
    /// A session of `context` positions (0: the default) on `engine`, its KV cache stored as
    /// `kv`.
    pub(crate) fn new(engine: Arc<Engine>, context: usize, kv: KvDtype) -> Self {
        let context = if context == 0 {
            DEFAULT_CONTEXT
        } else {
            context
        };
        // SAFETY: the engine lives in an `Arc` this struct holds, so its address is stable and
        // it outlives `state` (dropped first, see the field order); the reference never leaves
        // this struct with the `'static` lifetime.
        let engine_ref: &'static Engine = unsafe { &*Arc::as_ptr(&engine) };
        AvaSession {
            state: Mutex::new(State {
                session: engine_ref.session_as(context, kv),
                last: None,
            }),
            cancel: AtomicBool::new(false),
            engine,
        }
    }

    /// The engine.
    #[cfg(feature = "jni")]
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Asks the running generation to stop at its next token.
    pub(crate) fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// The state, or `Busy` when another call holds it. A state left by a caught panic is
    /// reset rather than trusted.
    fn lock(&self) -> CapiResult<MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(CapiError::new(
                AvaStatus::Busy,
                "another call is running on this session",
            )),
            Err(TryLockError::Poisoned(p)) => {
                let mut g = p.into_inner();
                g.session.reset();
                g.last = None;
                self.state.clear_poison();
                Ok(g)
            }
        }
    }

    /// Forgets the conversation.
    pub(crate) fn reset(&self) -> CapiResult<()> {
        let mut state = self.lock()?;
        state.session.reset();
        state.last = None;
        Ok(())
    }

    /// The last generation's outcome.
    pub(crate) fn last_result(&self) -> CapiResult<AvaGenerateResult> {
        self.lock()?
            .last
            .ok_or_else(|| CapiError::invalid("no generation has finished on this session"))
    }

    /// Generates after everything so far, calling `on_piece` for every piece until it returns
    /// `false`, the session is cancelled, or generation stops by itself.
    pub(crate) fn run(
        &self,
        prompt: Prompt<'_>,
        options: &GenerateOptions,
        on_piece: &mut dyn FnMut(Piece<'_>) -> bool,
    ) -> CapiResult<AvaGenerateResult> {
        let mut state = self.lock()?;
        self.cancel.store(false, Ordering::SeqCst);
        let ids = match prompt {
            Prompt::Tokens(ids) => ids.to_vec(),
            Prompt::Chat(text) => {
                let first = state.session.cache().position() == 0;
                self.engine
                    .tokenizer()
                    .encode(&gemma_chat_turn(text, first), first)?
            }
        };
        let cancel = &self.cancel;
        let generation = state.session.generate(&ids, options, &mut |piece| {
            !cancel.load(Ordering::SeqCst) && on_piece(piece) && !cancel.load(Ordering::SeqCst)
        })?;
        let result = result_of(&generation, state.session.cache());
        state.last = Some(result);
        Ok(result)
    }
}

fn result_of(g: &Generation, cache: &crate::gemma3::KvCache) -> AvaGenerateResult {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    let t = &g.timings;
    AvaGenerateResult {
        stop_reason: g.stop_reason.into(),
        n_tokens: n(g.tokens.len()),
        position: n(cache.position()),
        context: n(cache.max_context()),
        timings: AvaTimings {
            prefill_tokens: n(t.prefill_tokens),
            decode_tokens: n(t.decode_tokens),
            prefill_ms: ms(t.prefill),
            decode_ms: ms(t.decode),
            time_to_first_token_ms: ms(t.time_to_first_token),
        },
    }
}

/// A callback and its user pointer, called with each piece as a C string.
struct CCallback {
    f: AvaPieceCallback,
    user: *mut c_void,
}

impl CCallback {
    fn call(&self, piece: Piece<'_>) -> bool {
        let Some(f) = self.f else { return true };
        let text = c_string(piece.text);
        // SAFETY: the caller gave a function taking these arguments; `text` outlives the call.
        unsafe { f(text.as_ptr(), piece.token, self.user) == 0 }
    }
}

/// Starts a conversation on `engine` with a KV cache of `context` positions (0: 4096), stored
/// as the engine's open options said (f16 by default), and writes it to `*out`. The session
/// keeps the model alive after `ava_engine_free`.
///
/// # Safety
/// `engine` is a live engine; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn ava_session_new(
    engine: *const AvaEngine,
    context: u32,
    out: *mut *mut AvaSession,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (engine, out) = unsafe { (handle(engine, "engine")?, out_ptr(out, "out")?) };
        let session = AvaSession::new(engine.engine.clone(), context as usize, engine.kv);
        *out = Box::into_raw(Box::new(session));
        Ok(())
    })
}

/// Like `ava_session_new`, with the KV cache stored as `kv_cache` whatever the engine's open
/// options said.
///
/// # Safety
/// `engine` is a live engine; `out` points to writable storage for a pointer. `kv_cache` is
/// an `AvaKvCache` value (anything else is `AVA_STATUS_INVALID_ARGUMENT`).
#[no_mangle]
pub unsafe extern "C" fn ava_session_new_with_kv_cache(
    engine: *const AvaEngine,
    context: u32,
    kv_cache: u32,
    out: *mut *mut AvaSession,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (engine, out) = unsafe { (handle(engine, "engine")?, out_ptr(out, "out")?) };
        let kv = AvaKvCache::dtype(kv_cache).ok_or_else(|| {
            CapiError::invalid(format!("kv_cache {kv_cache} is not an AvaKvCache"))
        })?;
        let session = AvaSession::new(engine.engine.clone(), context as usize, kv);
        *out = Box::into_raw(Box::new(session));
        Ok(())
    })
}

/// Frees a session (NULL is ignored). No call on it may be running: cancel the generation and
/// wait for it to return first.
///
/// # Safety
/// `session` is NULL or was returned by `ava_session_new` and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn ava_session_free(session: *mut AvaSession) {
    guard_void(|| {
        if !session.is_null() {
            // SAFETY: returned by `ava_session_new` (Box::into_raw), freed once.
            drop(unsafe { Box::from_raw(session) });
        }
    })
}

/// Runs `prompt_len` token ids after everything the session holds and generates, calling
/// `on_piece(piece, token, user)` for each piece on this thread. The session keeps the turn:
/// the next call continues the conversation. `options` NULL means the defaults. Read the
/// outcome with `ava_session_last_result`.
///
/// # Safety
/// `session` is live; `prompt` points to `prompt_len` ids; `options` is NULL or valid;
/// `on_piece` is NULL or a function safe to call with `user` on this thread.
#[no_mangle]
pub unsafe extern "C" fn ava_session_generate(
    session: *mut AvaSession,
    prompt: *const u32,
    prompt_len: usize,
    options: *const AvaGenerateOptions,
    on_piece: AvaPieceCallback,
    user: *mut c_void,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (session, prompt) = unsafe {
            (
                handle(session, "session")?,
                c_slice(prompt, prompt_len, "prompt")?,
            )
        };
        // SAFETY: per this function's contract.
        let options = unsafe { options_or_default(options) }?;
        let cb = CCallback { f: on_piece, user };
        session.run(Prompt::Tokens(prompt), &options, &mut |p| cb.call(p))?;
        Ok(())
    })
}

/// Continues the conversation with a user turn `text`, wrapped in the Gemma chat template
/// (the first turn of a session also gets `<bos>`), and generates the model's answer as
/// `ava_session_generate` does.
///
/// # Safety
/// As `ava_session_generate`, with `text` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ava_session_chat(
    session: *mut AvaSession,
    text: *const c_char,
    options: *const AvaGenerateOptions,
    on_piece: AvaPieceCallback,
    user: *mut c_void,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (session, text) = unsafe { (handle(session, "session")?, c_str(text, "text")?) };
        // SAFETY: per this function's contract.
        let options = unsafe { options_or_default(options) }?;
        let cb = CCallback { f: on_piece, user };
        session.run(Prompt::Chat(text), &options, &mut |p| cb.call(p))?;
        Ok(())
    })
}

/// Asks the generation running on `session` to stop; it returns after the token in progress
/// with `AVA_STOP_REASON_CANCELLED`. Safe from any thread, at any time while the session is
/// live; a cancel that arrives when no generation runs has no effect on later ones.
///
/// # Safety
/// `session` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ava_session_cancel(session: *const AvaSession) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        unsafe { handle(session, "session") }?.cancel();
        Ok(())
    })
}

/// Forgets the conversation (the KV cache allocation is kept).
///
/// # Safety
/// `session` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ava_session_reset(session: *mut AvaSession) -> AvaStatus {
    // SAFETY: per this function's contract.
    guard(|| unsafe { handle(session, "session") }?.reset())
}

/// Writes the outcome of the session's last finished generation (stop reason, token count,
/// context used, timings) to `*out`.
///
/// # Safety
/// `session` is NULL or live; `out` points to an `AvaGenerateResult`.
#[no_mangle]
pub unsafe extern "C" fn ava_session_last_result(
    session: *const AvaSession,
    out: *mut AvaGenerateResult,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (session, out) = unsafe { (handle(session, "session")?, out_ptr(out, "out")?) };
        *out = session.last_result()?;
        Ok(())
    })
}

/// Writes the bytes the session's KV cache holds (keys, values, and the f32 copy of one
/// layer that attention reads a compact cache through, once used) to `*out`.
///
/// # Safety
/// `session` is NULL or live; `out` points to writable storage for a `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn ava_session_kv_cache_bytes(
    session: *const AvaSession,
    out: *mut u64,
) -> AvaStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (session, out) = unsafe { (handle(session, "session")?, out_ptr(out, "out")?) };
        *out = session.lock()?.session.cache().bytes() as u64;
        Ok(())
    })
}

/// # Safety
/// `options` is NULL or points to valid options.
unsafe fn options_or_default(options: *const AvaGenerateOptions) -> CapiResult<GenerateOptions> {
    // SAFETY: per this function's contract.
    match unsafe { options.as_ref() } {
        // SAFETY: the options' pointers are valid per the caller's contract.
        Some(o) => unsafe { o.runtime_options() },
        None => Ok(GenerateOptions::default()),
    }
}
