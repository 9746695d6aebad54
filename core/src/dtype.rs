//! Element types of tensors, with the names used in safetensors headers and in our artifacts.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Element type of a tensor.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE 754 binary64.
    F64,
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (the upper half of an f32).
    BF16,
    /// Signed 64-bit integer.
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 16-bit integer.
    I16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Boolean stored as one byte (0 or 1).
    Bool,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 10] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::Bool,
    ];

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Our lowercase name: `"f32"`, `"bf16"`, `"bool"`...
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// Maps a safetensors header dtype (`"F32"`, `"BF16"`, `"BOOL"`...) to ours.
    ///
    /// Types we do not handle (`F8_E4M3`, `F8_E5M2`, `U16`, `U32`, `U64`, sub-byte floats)
    /// give `None`; callers turn that into [`Error::UnsupportedDtype`].
    pub fn from_safetensors(s: &str) -> Option<DType> {
        Some(match s {
            "F64" => DType::F64,
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "I16" => DType::I16,
            "I8" => DType::I8,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            _ => return None,
        })
    }

    /// The safetensors header name of this dtype (`"F32"`, `"BOOL"`...).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = Error;

    /// Parses our lowercase names (`"f32"`, `"bf16"`...).
    fn from_str(s: &str) -> Result<Self> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| Error::Parse {
                what: "dtype",
                value: s.to_string(),
                valid: DType::ALL.map(DType::name).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().ok(), Some(d));
            assert_eq!(DType::from_safetensors(d.safetensors_name()), Some(d));
            assert_eq!(d.to_string(), d.name());
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(DType::BF16.size_in_bytes(), 2);
        assert_eq!(DType::F64.size_in_bytes(), 8);
        assert_eq!(DType::Bool.size_in_bytes(), 1);
    }

    #[test]
    fn unsupported_and_unknown() {
        assert_eq!(DType::from_safetensors("F8_E4M3"), None);
        assert_eq!(DType::from_safetensors("f32"), None);
        let err = "float32".parse::<DType>().unwrap_err().to_string();
        assert!(err.contains("float32") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn serde_lowercase() {
        assert_eq!(
            serde_json::to_string(&DType::BF16).ok().as_deref(),
            Some("\"bf16\"")
        );
    }
}
