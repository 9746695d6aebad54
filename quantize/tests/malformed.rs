//! Hostile GGUF files (`fixtures/gguf/bad/`, made by `fixtures/gen/make_gguf.py`): each gives a
//! clear error naming the file and the problem, never a panic or a huge allocation.

use std::path::{Path, PathBuf};

use ava_quantize::{Error, GgufFile};

fn bad(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fixtures/gguf/bad/{name}.gguf"))
}

fn open_err(name: &str) -> String {
    let path = bad(name);
    let err = GgufFile::open(&path).expect_err(name);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{name}.gguf")),
        "{name}: file not named: {msg}"
    );
    // The in-memory path gives the same verdict.
    let again = GgufFile::from_bytes(&path, std::fs::read(&path).unwrap()).expect_err(name);
    assert_eq!(again.to_string(), msg);
    msg
}

#[test]
fn the_valid_base_opens() {
    let file = GgufFile::open(&bad("valid")).unwrap();
    assert_eq!(file.tensors().len(), 1);
    assert_eq!(
        file.dequantize(&file.tensors()[0]).unwrap(),
        (0..8).map(|i| i as f32).collect::<Vec<_>>()
    );
}

#[test]
fn each_hostile_file_is_refused_with_its_reason() {
    let cases = [
        ("bad-magic", "not a GGUF file"),
        ("empty", "not a GGUF file"),
        ("truncated-header", "truncated"),
        ("truncated-metadata", "truncated"),
        ("version-1", "version 1 is not supported"),
        ("big-endian", "big-endian"),
        ("absurd-tensor-count", "tensor count"),
        ("absurd-kv-count", "metadata entry count"),
        ("absurd-key-length", "metadata key"),
        ("absurd-array-length", "array length"),
        ("nested-arrays", "nested deeper"),
        ("unknown-value-type", "unknown value type 13"),
        ("bad-bool", "not 0 or 1"),
        ("duplicate-key", "appears twice"),
        ("absurd-dims", "element count overflows"),
        ("too-many-dims", "5 dimensions"),
        ("unknown-tensor-type", "unknown type id 99"),
        ("partial-block", "not a multiple of the Q8_0 block size"),
        ("misaligned-offset", "not a multiple of the alignment"),
        ("data-past-eof", "runs past the end"),
        ("truncated-data", "runs past the end"),
        ("duplicate-tensor", "appears twice"),
        ("bad-alignment", "general.alignment"),
    ];
    for (name, needle) in cases {
        let msg = open_err(name);
        assert!(
            msg.contains(needle),
            "{name}: expected `{needle}` in: {msg}"
        );
    }
}

#[test]
fn every_prefix_of_a_real_file_is_refused_cleanly() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/gguf/blocks.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let data_start = file.data_offset() as usize;
    // gguf-py pads after the last tensor: only prefixes that cut into tensor data must fail.
    let data_end = file
        .tensors()
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    let needed = data_start + data_end;
    for len in (0..needed).step_by(7).chain([data_start - 1, needed - 1]) {
        let err = GgufFile::from_bytes(&path, bytes[..len].to_vec()).expect_err("prefix opens");
        assert!(
            matches!(
                err,
                Error::NotGguf { .. } | Error::Malformed { .. } | Error::Tensor { .. }
            ),
            "{len}: {err}"
        );
    }
    assert!(GgufFile::from_bytes(&path, bytes[..needed].to_vec()).is_ok());
}

#[test]
fn missing_file_is_an_io_error() {
    let err = GgufFile::open(Path::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/model.gguf"));
}
