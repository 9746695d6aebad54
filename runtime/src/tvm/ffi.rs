//! The C ABI of TVM-generated kernels (tvm-ffi safe calls on DLPack tensors) and two of the
//! host hooks they call back into: errors and workspaces. The third, the parallel launch, has
//! its ABI and implementation in `pool`; the two modules do not use each other, `library`
//! installs both.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Mutex;

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

/// Alignment of workspaces (a cache line; enough for any vector load). Each block starts with
/// a header of this many bytes holding its size, so a free needs no global lookup.
const WORKSPACE_ALIGN: usize = 64;
/// Freed blocks a thread keeps for reuse (kernels ask for the same sizes each step).
const WORKSPACE_CACHE: usize = 8;

/// A thread's freed workspaces (size, block base); returned to the allocator when the thread
/// ends.
struct FreeBlocks(Vec<(usize, *mut u8)>);

impl Drop for FreeBlocks {
    fn drop(&mut self) {
        for (size, base) in self.0.drain(..) {
            // SAFETY: `base` came from `alloc_block(size)` and is no longer used.
            unsafe { dealloc_block(base, size) };
        }
    }
}

thread_local! {
    static FREE_BLOCKS: std::cell::RefCell<FreeBlocks> =
        const { std::cell::RefCell::new(FreeBlocks(Vec::new())) };
}

fn block_layout(size: usize) -> Option<std::alloc::Layout> {
    std::alloc::Layout::from_size_align(size.checked_add(WORKSPACE_ALIGN)?, WORKSPACE_ALIGN).ok()
}

/// # Safety
/// `base` must come from `alloc` with `block_layout(size)`.
unsafe fn dealloc_block(base: *mut u8, size: usize) {
    if let Some(layout) = block_layout(size) {
        // SAFETY: per the contract.
        unsafe { std::alloc::dealloc(base, layout) };
    }
}

/// `TVMBackendAllocWorkspace`: a 64-byte aligned block, reused from this thread's cache when
/// one of the same size was freed here.
pub unsafe extern "C" fn alloc_workspace(
    _device_type: c_int,
    _device_id: c_int,
    nbytes: u64,
    _code: c_int,
    _bits: c_int,
) -> *mut c_void {
    let size = (nbytes as usize).max(1).next_multiple_of(WORKSPACE_ALIGN);
    let cached = FREE_BLOCKS
        .try_with(|f| {
            let mut f = f.borrow_mut();
            let i = f.0.iter().position(|&(s, _)| s == size)?;
            Some(f.0.swap_remove(i).1)
        })
        .ok()
        .flatten();
    let base = match cached {
        Some(b) => b,
        None => match block_layout(size) {
            // SAFETY: non-zero size.
            Some(layout) => unsafe { std::alloc::alloc(layout) },
            None => std::ptr::null_mut(),
        },
    };
    if base.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: the block is `size + WORKSPACE_ALIGN` bytes, aligned for a usize header.
    unsafe {
        base.cast::<usize>().write(size);
        base.add(WORKSPACE_ALIGN).cast()
    }
}

/// `TVMBackendFreeWorkspace`: keeps the block in this thread's cache, or releases it.
pub unsafe extern "C" fn free_workspace(
    _device_type: c_int,
    _device_id: c_int,
    ptr: *mut c_void,
) -> c_int {
    if ptr.is_null() {
        return -1;
    }
    // SAFETY: `ptr` came from `alloc_workspace`: its header sits WORKSPACE_ALIGN bytes before.
    let (base, size) = unsafe {
        let base = ptr.cast::<u8>().sub(WORKSPACE_ALIGN);
        (base, base.cast::<usize>().read())
    };
    let kept = FREE_BLOCKS
        .try_with(|f| {
            let mut f = f.borrow_mut();
            if f.0.len() < WORKSPACE_CACHE {
                f.0.push((size, base));
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: the block came from `alloc_workspace(size)` and the kernel is done with it.
        unsafe { dealloc_block(base, size) };
    }
    0
}

#[cfg(test)]
mod workspace_tests {
    use super::*;

    #[test]
    fn workspaces_are_aligned_writable_and_reused() {
        // SAFETY: the hooks' own contract: sizes in, blocks out, each freed once.
        unsafe {
            let a = alloc_workspace(1, 0, 100, 2, 32);
            let b = alloc_workspace(1, 0, 5000, 2, 32);
            assert!(!a.is_null() && !b.is_null());
            assert_eq!(a as usize % WORKSPACE_ALIGN, 0);
            assert_eq!(b as usize % WORKSPACE_ALIGN, 0);
            std::ptr::write_bytes(a.cast::<u8>(), 0xAB, 100);
            std::ptr::write_bytes(b.cast::<u8>(), 0xCD, 5000);
            assert_eq!(free_workspace(1, 0, a), 0);
            // Same rounded size on this thread: the block comes back.
            let c = alloc_workspace(1, 0, 128, 2, 32);
            assert_eq!(c, a);
            assert_eq!(free_workspace(1, 0, b), 0);
            assert_eq!(free_workspace(1, 0, c), 0);
            // More frees than the cache keeps are released, not leaked or refused.
            let many: Vec<_> = (0..2 * WORKSPACE_CACHE)
                .map(|_| alloc_workspace(1, 0, 256, 2, 32))
                .collect();
            for p in many {
                assert_eq!(free_workspace(1, 0, p), 0);
            }
            assert_eq!(free_workspace(1, 0, std::ptr::null_mut()), -1);
        }
    }
}
