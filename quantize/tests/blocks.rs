//! Every supported GGML type dequantizes bit-exactly like gguf-py (`fixtures/gguf/blocks.gguf`,
//! expected values made by `fixtures/gen/make_gguf.py`), and every metadata type reads back.

use std::path::{Path, PathBuf};

use ava_quantize::gguf::{Value, ValueType};
use ava_quantize::{GgmlType, GgufFile};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/gguf")
}

fn expected() -> (serde_json::Value, Vec<f32>) {
    let json = std::fs::read(fixtures().join("blocks.expected.json")).unwrap();
    let bin = std::fs::read(fixtures().join("blocks.expected.bin")).unwrap();
    let values = bin
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (serde_json::from_slice(&json).unwrap(), values)
}

#[test]
fn every_type_matches_gguf_py_bit_for_bit() {
    let file = GgufFile::open(&fixtures().join("blocks.gguf")).unwrap();
    let (manifest, values) = expected();
    let tensors = manifest["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 12, "one tensor per supported type");
    assert_eq!(file.tensors().len(), tensors.len());
    for entry in tensors {
        let name = entry["name"].as_str().unwrap();
        let info = file
            .tensor(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(info.ggml_type.name(), entry["type"].as_str().unwrap());
        let dims: Vec<u64> = serde_json::from_value(entry["dims"].clone()).unwrap();
        assert_eq!(info.dims, dims, "{name}");
        let (offset, count) = (
            entry["offset"].as_u64().unwrap() as usize,
            entry["count"].as_u64().unwrap() as usize,
        );
        let want = &values[offset..offset + count];
        let got = file.dequantize(info).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name}[{i}]: {g} != {w}");
        }
    }
}

#[test]
fn header_and_alignment() {
    let file = GgufFile::open(&fixtures().join("blocks.gguf")).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.data_offset() % 64, 0);
    assert_eq!(file.architecture(), Some("blocks-test"));
    for t in file.tensors() {
        assert_eq!(t.offset % 64, 0, "{}", t.name);
        assert_eq!(t.shape(), vec![2, 512]);
        assert_eq!(file.tensor_data(t).unwrap().len() as u64, t.n_bytes);
    }
    let q4k = file.tensor("q4_k").unwrap();
    assert_eq!(q4k.ggml_type, GgmlType::Q4K);
    assert_eq!(q4k.n_bytes, 4 * 144);
}

#[test]
fn metadata_of_every_type() {
    let file = GgufFile::open(&fixtures().join("blocks.gguf")).unwrap();
    let get = |k: &str| file.get(k).unwrap_or_else(|| panic!("{k} missing"));
    assert_eq!(get("test.u8"), &Value::U8(200));
    assert_eq!(get("test.i8"), &Value::I8(-100));
    assert_eq!(get("test.u16"), &Value::U16(60000));
    assert_eq!(get("test.i16"), &Value::I16(-30000));
    assert_eq!(get("test.u32"), &Value::U32(4_000_000_000));
    assert_eq!(get("test.i32"), &Value::I32(-2_000_000_000));
    assert_eq!(get("test.f32"), &Value::F32(0.25));
    assert_eq!(get("test.bool"), &Value::Bool(true));
    assert_eq!(get("test.string").as_str(), Some("héllo ▁world"));
    assert_eq!(get("test.u64"), &Value::U64(1 << 40));
    assert_eq!(get("test.i64"), &Value::I64(-(1 << 40)));
    assert_eq!(get("test.f64"), &Value::F64(1e-300));
    let ints = Value::Array(
        ValueType::I32,
        vec![Value::I32(1), Value::I32(-2), Value::I32(3)],
    );
    assert_eq!(get("test.array_i32"), &ints);
    let strs: Vec<&str> = get("test.array_str")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(strs, ["a", "", "ü"]);
    let nested = get("test.array_nested").as_array().unwrap();
    assert_eq!(nested.len(), 2);
    assert_eq!(nested[0].as_array().unwrap().len(), 2);
    assert_eq!(get("general.alignment"), &Value::U32(64));
    assert_eq!(get("test.f32").as_f64(), Some(0.25));
    assert_eq!(get("test.i8").as_u64(), None);
}
