//! A bounds-checked cursor over the GGUF header, metadata and tensor table.
//!
//! Every length and count read from the file is checked against a named limit and against the
//! bytes that remain before anything is allocated for it.

use std::path::Path;

use super::value::{Value, ValueType};
use crate::error::{Error, Result};

/// Longest metadata key, in bytes.
pub const MAX_KEY_BYTES: u64 = 64 * 1024;
/// Longest string value (chat templates are the long ones), in bytes.
pub const MAX_STRING_BYTES: u64 = 16 * 1024 * 1024;
/// Most elements in one array (Gemma's vocabulary has 262,144 tokens).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Most values in all the metadata together, arrays' elements included.
pub const MAX_METADATA_VALUES: usize = 1 << 23;
/// Deepest nesting of arrays inside arrays.
pub const MAX_ARRAY_DEPTH: usize = 3;

/// Reads little-endian GGUF primitives from `bytes`, starting at 0.
pub(crate) struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
    values_left: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(path: &'a Path, bytes: &'a [u8]) -> Self {
        Cursor {
            path,
            bytes,
            pos: 0,
            values_left: MAX_METADATA_VALUES,
        }
    }

    /// The offset of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// A [`Error::Malformed`] at the current offset.
    pub(crate) fn err(&self, reason: impl Into<String>) -> Error {
        Error::Malformed {
            path: self.path.to_path_buf(),
            offset: self.pos as u64,
            reason: reason.into(),
        }
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated: {what} needs {n} bytes but only {} remain in the {}-byte file",
                self.remaining(),
                self.bytes.len()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that must not exceed `max`, nor need more than the remaining bytes when each
    /// item takes at least `min_item_bytes`.
    pub(crate) fn count(&mut self, what: &str, max: u64, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        if n > max {
            return Err(self.err(format!("{what} is {n}, more than the limit of {max}")));
        }
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_item_bytes))
            .is_some_and(|need| need <= self.remaining());
        if !fits {
            return Err(self.err(format!(
                "{what} is {n}, which cannot fit in the {} bytes that remain",
                self.remaining()
            )));
        }
        // Fits in usize: checked just above.
        Ok(n as usize)
    }

    /// A u64-length-prefixed string of at most `max` bytes; invalid UTF-8 is an error when
    /// `strict`, else replaced.
    pub(crate) fn string(&mut self, what: &str, max: u64, strict: bool) -> Result<String> {
        let start = self.pos;
        let len = self.count(what, max, 1)?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) if !strict => Ok(String::from_utf8_lossy(bytes).into_owned()),
            Err(e) => {
                self.pos = start;
                Err(self.err(format!("{what} is not valid UTF-8: {e}")))
            }
        }
    }

    fn spend_value(&mut self) -> Result<()> {
        self.values_left = self.values_left.checked_sub(1).ok_or_else(|| {
            self.err(format!(
                "more than {MAX_METADATA_VALUES} metadata values in all"
            ))
        })?;
        Ok(())
    }

    pub(crate) fn value_type(&mut self, what: &str) -> Result<ValueType> {
        let tag = self.u32(what)?;
        ValueType::from_tag(tag).ok_or_else(|| {
            self.pos -= 4;
            self.err(format!("{what}: unknown value type {tag}"))
        })
    }

    /// One value of type `ty`; `key` names it in errors.
    pub(crate) fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
        self.spend_value()?;
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(key)?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(key)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            ValueType::U32 => Value::U32(self.u32(key)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            ValueType::U64 => Value::U64(self.u64(key)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            ValueType::Bool => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    self.pos -= 1;
                    return Err(self.err(format!("`{key}`: bool byte is {b}, not 0 or 1")));
                }
            },
            ValueType::String => Value::String(self.string(key, MAX_STRING_BYTES, false)?),
            ValueType::Array => self.array_value(key, depth)?,
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Value> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.err(format!(
                "`{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH}"
            )));
        }
        let elem = self.value_type(key)?;
        let n = self.count(
            &format!("`{key}` array length"),
            MAX_ARRAY_LEN,
            elem.min_encoded_size(),
        )?;
        if n > self.values_left {
            return Err(self.err(format!(
                "`{key}`: {n} elements exceed the limit of {MAX_METADATA_VALUES} metadata values"
            )));
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(elem, key, depth + 1)?);
        }
        Ok(Value::Array(elem, items))
    }
}
