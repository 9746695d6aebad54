//! Hostile GGUF files, generated here ([`hostile_gguf`]): each gives a clear error naming the
//! file and the problem, never a panic or a huge allocation.

#[path = "support/hostile_gguf.rs"]
mod hostile_gguf;

use std::path::Path;

use ava_quantize::{Error, GgufFile};

/// Writes `bytes` as `{name}.gguf` in `dir`, opens it, and returns the error, which must name
/// the file and be the same when the bytes are opened from memory.
fn open_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    let err = GgufFile::open(&path).expect_err(name);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{name}.gguf")),
        "{name}: file not named: {msg}"
    );
    let again = GgufFile::from_bytes(&path, bytes.to_vec()).expect_err(name);
    assert_eq!(again.to_string(), msg);
    msg
}

#[test]
fn the_valid_base_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("valid.gguf");
    std::fs::write(&path, hostile_gguf::valid()).unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.tensors().len(), 1);
    assert_eq!(
        file.dequantize(&file.tensors()[0]).unwrap(),
        (0..8).map(|i| i as f32).collect::<Vec<_>>()
    );
}

#[test]
fn each_hostile_file_is_refused_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = hostile_gguf::cases();
    assert_eq!(cases.len(), 23);
    for case in cases {
        let msg = open_err(tmp.path(), case.name, &case.bytes);
        assert!(
            msg.contains(case.error),
            "{}: expected `{}` in: {msg}",
            case.name,
            case.error
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
