//! The C ABI of TVM-generated kernels (tvm-ffi safe calls on DLPack tensors) and the host
//! hooks they call back into: errors, parallel launch, workspaces.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Mutex;

use super::pool;

/// `DLDevice`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

/// `DLDataType`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

/// `DLTensor` (dlpack 1.x).
#[repr(C)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *const i64,
    pub strides: *const i64,
    pub byte_offset: u64,
}

/// `TVMFFIAny`: 16 bytes, a type index and a 64-bit payload.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TVMFFIAny {
    pub type_index: i32,
    pub zero_padding: u32,
    pub value: u64,
}

const _: () = assert!(std::mem::size_of::<TVMFFIAny>() == 16);

pub const TYPE_NONE: i32 = 0;
pub const TYPE_INT: i32 = 1;
pub const TYPE_FLOAT: i32 = 3;
pub const TYPE_DLTENSOR_PTR: i32 = 7;
pub const DL_CPU: i32 = 1;

/// A kernel entry point: `int f(void* self, const TVMFFIAny* args, int32 n, TVMFFIAny* ret)`.
pub type SafeCall =
    unsafe extern "C" fn(*mut c_void, *const TVMFFIAny, i32, *mut TVMFFIAny) -> c_int;

/// `TVMParallelGroupEnv`.
#[repr(C)]
pub struct ParallelEnv {
    pub sync_handle: *mut c_void,
    pub num_task: i32,
}

/// The body of a parallel loop: `int f(int task_id, TVMParallelGroupEnv* env, void* cdata)`.
pub type ParallelLambda = unsafe extern "C" fn(c_int, *mut ParallelEnv, *mut c_void) -> c_int;

/// The last error a kernel raised (kernels may raise on worker threads, so not thread-local).
static LAST_ERROR: Mutex<String> = Mutex::new(String::new());

/// Takes the last error message raised by a kernel.
pub fn take_error() -> String {
    std::mem::take(&mut *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Called by a kernel on failure (e.g. a tensor of the wrong shape); stores the message.
///
/// # Safety
/// `kind` and the `n` entries of `parts` are NUL-terminated strings or null.
#[no_mangle]
pub unsafe extern "C" fn TVMFFIErrorSetRaisedFromCStrParts(
    kind: *const c_char,
    parts: *const *const c_char,
    n: i32,
) {
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: the caller passes NUL-terminated strings.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let mut msg = format!("{}: ", text(kind));
    for i in 0..n.max(0) as usize {
        // SAFETY: `parts` has `n` entries.
        msg.push_str(&text(unsafe { *parts.add(i) }));
    }
    *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = msg;
}

/// `TVMBackendParallelLaunch`: runs `f` on the persistent pool.
pub unsafe extern "C" fn parallel_launch(
    f: ParallelLambda,
    cdata: *mut c_void,
    _num_task: c_int,
) -> c_int {
    pool::launch(f, cdata)
}

/// Alignment of workspaces (a cache line; enough for any vector load).
const WORKSPACE_ALIGN: usize = 64;

/// Free workspaces by size, reused by later calls (kernels ask for the same sizes each step).
static WORKSPACES: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());
/// Live workspaces: address -> size.
static LIVE: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// `TVMBackendAllocWorkspace`.
pub unsafe extern "C" fn alloc_workspace(
    _device_type: c_int,
    _device_id: c_int,
    nbytes: u64,
    _code: c_int,
    _bits: c_int,
) -> *mut c_void {
    let size = (nbytes as usize).max(1).next_multiple_of(WORKSPACE_ALIGN);
    let reused = {
        let mut free = WORKSPACES.lock().unwrap_or_else(|e| e.into_inner());
        free.iter()
            .position(|&(s, _)| s == size)
            .map(|i| free.swap_remove(i).1)
    };
    let ptr = match reused {
        Some(p) => p,
        None => match std::alloc::Layout::from_size_align(size, WORKSPACE_ALIGN) {
            // SAFETY: non-zero size.
            Ok(layout) => unsafe { std::alloc::alloc(layout) as usize },
            Err(_) => 0,
        },
    };
    if ptr != 0 {
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((ptr, size));
    }
    ptr as *mut c_void
}

/// `TVMBackendFreeWorkspace`: keeps the block for reuse.
pub unsafe extern "C" fn free_workspace(
    _device_type: c_int,
    _device_id: c_int,
    ptr: *mut c_void,
) -> c_int {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    match live.iter().position(|&(p, _)| p == ptr as usize) {
        Some(i) => {
            let entry = live.swap_remove(i);
            WORKSPACES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(entry);
            0
        }
        None => -1,
    }
}
