//! Writing `.safetensors` files in the layout [`crate::safetensors_file`] reads: the 8-byte
//! little-endian header length, the JSON header padded with spaces to [`HEADER_ALIGN`] bytes,
//! then the data section, which the caller streams tensor by tensor in the order the header
//! lists them (each tensor right after the previous one).
//!
//! The header is a JSON object with sorted keys: `__metadata__` (a string map) and, for each
//! tensor, `{"data_offsets": [start, end], "dtype": ..., "shape": [...]}`.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Map, Value};

use crate::dtype::DType;
use crate::safetensors_file::METADATA_KEY;

/// The JSON header is padded with spaces to a multiple of this many bytes, so the data
/// section starts aligned.
pub const HEADER_ALIGN: usize = 8;

/// One tensor of the data section, as the header lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderTensor {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Bytes of data (for a block-quantized tensor, its encoded size).
    pub bytes: u64,
}

/// The padded JSON header of a file holding `tensors` one after another, in this order.
pub fn header_bytes(metadata: &BTreeMap<String, String>, tensors: &[HeaderTensor]) -> Vec<u8> {
    let mut header = Map::new();
    header.insert(METADATA_KEY.into(), json!(metadata));
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.bytes;
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype.safetensors_name(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut bytes = Value::Object(header).to_string().into_bytes();
    while bytes.len() % HEADER_ALIGN != 0 {
        bytes.push(b' ');
    }
    bytes
}

/// Writes the length prefix and the header of [`header_bytes`]; the caller then writes each
/// tensor's `bytes` bytes, in `tensors`' order.
pub fn write_header(
    out: &mut impl Write,
    metadata: &BTreeMap<String, String>,
    tensors: &[HeaderTensor],
) -> std::io::Result<()> {
    let header = header_bytes(metadata, tensors);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::SafetensorsFile;

    #[test]
    fn the_reader_reads_what_the_writer_wrote() {
        let tensors = [
            HeaderTensor {
                name: "b".into(),
                dtype: DType::F32,
                shape: vec![2],
                bytes: 8,
            },
            HeaderTensor {
                name: "a".into(),
                dtype: DType::BF16,
                shape: vec![1, 3],
                bytes: 6,
            },
        ];
        let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        let mut file = Vec::new();
        write_header(&mut file, &metadata, &tensors).unwrap();
        let header_len = file.len() - 8;
        assert_eq!(header_len % HEADER_ALIGN, 0);
        file.extend(1f32.to_le_bytes());
        file.extend(2f32.to_le_bytes());
        file.extend([0u8; 6]);
        let st = SafetensorsFile::from_bytes(Path::new("t.safetensors"), file).unwrap();
        assert_eq!(st.metadata(), metadata);
        let b = st.tensor("b").unwrap();
        assert_eq!((b.dtype, b.shape.to_vec()), (DType::F32, vec![2]));
        assert_eq!(b.data, [1f32.to_le_bytes(), 2f32.to_le_bytes()].concat());
        let a = st.tensor("a").unwrap();
        assert_eq!(
            (a.dtype, a.shape.to_vec(), a.data.len()),
            (DType::BF16, vec![1, 3], 6)
        );
    }
}
