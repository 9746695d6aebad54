//! Where a quantized plane's values live: copied into memory, or in place in a read-only
//! mapping of the archive (no copy, so the weights cost no heap and only the pages touched).

use std::ops::Deref;
use std::sync::Arc;

use memmap2::Mmap;

/// `len` values of `T`: owned, or `len * size_of::<T>()` bytes at `offset` of a mapping
/// (checked aligned for `T` when built).
#[derive(Debug)]
pub(crate) enum Stored<T> {
    Owned(Vec<T>),
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
}

impl<T: bytemuck::Pod> Stored<T> {
    /// The values in place at `offset` of `map`, or `None` when they are not aligned for `T`
    /// or do not fit, or the target is big-endian (the archive is little-endian).
    pub(crate) fn mapped(map: Arc<Mmap>, offset: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let slice = map.get(offset..offset.checked_add(bytes)?)?;
        if cfg!(target_endian = "big") || bytemuck::try_cast_slice::<u8, T>(slice).is_err() {
            return None;
        }
        Some(Stored::Mapped { map, offset, len })
    }

    /// Whether the values are used in place.
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self, Stored::Mapped { .. })
    }
}

impl<T> From<Vec<T>> for Stored<T> {
    fn from(v: Vec<T>) -> Self {
        Stored::Owned(v)
    }
}

impl<T: bytemuck::Pod> Deref for Stored<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Stored::Owned(v) => v,
            Stored::Mapped { map, offset, len } => {
                let bytes = &map[*offset..*offset + *len * std::mem::size_of::<T>()];
                // Alignment and length were checked in `mapped`.
                bytemuck::cast_slice(bytes)
            }
        }
    }
}
