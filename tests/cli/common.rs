//! Helpers several topic modules share: the tiny Gemma 3 packaged, token ids from a JSON
//! report, float32 `.npy` vectors.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{alc, gemma3_tiny};

/// Packages the tiny Gemma 3 fixture as `dir/m.tar` (`alc package`) and returns its path.
pub fn package_tiny(dir: &Path) -> PathBuf {
    let model = gemma3_tiny();
    alc(
        dir,
        &["-q", "package", model.to_str().unwrap(), "-o", "m.tar"],
    )
    .ok();
    dir.join("m.tar")
}

/// A JSON array of token ids (`tokens` of `alc run --json`).
pub fn token_ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array of ids: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Parses a float32 `.npy` vector (`alc run --logits-out`).
pub fn read_npy(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert_eq!((10 + header_len) % 64, 0);
    bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
