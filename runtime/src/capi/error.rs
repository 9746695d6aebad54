//! Status codes, the thread-local last-error message, and the guard every entry point runs
//! its body in so that no panic crosses the C boundary.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{self, AssertUnwindSafe};

use crate::error::Error;

/// What a call returned. Every fallible function returns one; on anything but
/// `AVA_STATUS_OK`, `ava_last_error()` on the same thread says what went wrong.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvaStatus {
    /// Success.
    Ok = 0,
    /// A NULL pointer, a string that is not UTF-8, or a value out of range.
    InvalidArgument = 1,
    /// The file could not be read.
    Io = 2,
    /// The archive is malformed, compressed, or failed sha256 verification.
    Archive = 3,
    /// The weights or config do not fit the model family, or a needed file is missing.
    Model = 4,
    /// The tokenizer could not be loaded or failed.
    Tokenizer = 5,
    /// The request would go past the session's context length; the session is unchanged.
    ContextFull = 6,
    /// Another call is running on this session (sessions run one call at a time).
    Busy = 7,
    /// A bug in the runtime (a caught panic); the message has the details.
    Internal = 8,
}

/// A failure on its way to the caller: a status and a message.
#[derive(Debug)]
pub(crate) struct CapiError {
    pub status: AvaStatus,
    pub message: String,
}

impl CapiError {
    pub fn new(status: AvaStatus, message: impl Into<String>) -> Self {
        CapiError {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(AvaStatus::InvalidArgument, message)
    }
}

impl From<Error> for CapiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Io { .. } | Error::Package(ava_packaging::Error::Io { .. }) => AvaStatus::Io,
            Error::Compressed { .. } | Error::Package(_) => AvaStatus::Archive,
            Error::Tokenizer(_) => AvaStatus::Tokenizer,
            Error::ContextFull { .. } => AvaStatus::ContextFull,
            Error::Request(_) => AvaStatus::InvalidArgument,
            _ => AvaStatus::Model,
        };
        CapiError::new(status, e.to_string())
    }
}

/// Result of an entry point's body.
pub(crate) type CapiResult<T> = std::result::Result<T, CapiError>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error (NUL bytes dropped).
pub(crate) fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', "")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// This thread's last error message; empty when no call on this thread has failed. The
/// pointer stays valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn ava_last_error() -> *const c_char {
    panic::catch_unwind(|| LAST_ERROR.with(|e| e.borrow().as_ptr())).unwrap_or(EMPTY.as_ptr())
}

const EMPTY: &CStr = c"";

/// Runs `body`, turning its error or panic into a status and this thread's last error.
pub(crate) fn guard(body: impl FnOnce() -> CapiResult<()>) -> AvaStatus {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => AvaStatus::Ok,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(payload) => {
            set_last_error(&panic_message(payload.as_ref()));
            AvaStatus::Internal
        }
    }
}

/// Runs a body that cannot report failure (free, cancel): a panic is swallowed after being
/// recorded as the last error.
pub(crate) fn guard_void(body: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(body)) {
        set_last_error(&panic_message(payload.as_ref()));
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!("internal error (please report): {what}")
}

/// A borrowed UTF-8 string from C; `what` names the argument in errors.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives the call.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> CapiResult<&'a str> {
    if ptr.is_null() {
        return Err(CapiError::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| CapiError::invalid(format!("{what} is not valid UTF-8")))
}

/// A borrowed array from C; NULL is accepted when `len` is 0.
///
/// # Safety
/// `ptr` points to `len` initialised values that outlive the call (or `len` is 0).
pub(crate) unsafe fn c_slice<'a, T>(ptr: *const T, len: usize, what: &str) -> CapiResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(CapiError::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL with `len` elements per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A non-NULL pointer to write a result through.
///
/// # Safety
/// `ptr` is NULL or points to writable storage of a `T` that outlives the call.
pub(crate) unsafe fn out_ptr<'a, T>(ptr: *mut T, what: &str) -> CapiResult<&'a mut T> {
    // SAFETY: per the caller's contract; NULL is checked here.
    unsafe { ptr.as_mut() }.ok_or_else(|| CapiError::invalid(format!("{what} is NULL")))
}

/// A non-NULL handle.
///
/// # Safety
/// `ptr` is NULL or a handle this library returned and has not freed.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, what: &str) -> CapiResult<&'a T> {
    // SAFETY: per the caller's contract; NULL is checked here.
    unsafe { ptr.as_ref() }.ok_or_else(|| CapiError::invalid(format!("{what} is NULL")))
}
