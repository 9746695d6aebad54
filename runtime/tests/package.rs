//! Loading archives in place: tensors are sliced from the mapped `.tar`, everything verified.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use ava_packaging::{
    unpack, write_archive, Compression, CreatedBy, InputFile, PackageSpec, PackageTarget, Role,
    Source, ALIGNMENT,
};
use ava_runtime::{Error, Package};

/// A safetensors file with two tensors: `a` (f32, 2x3) and `b` (bf16, 4).
fn safetensors() -> Vec<u8> {
    let a: Vec<f32> = vec![1.0, -2.0, 3.5, 0.25, 8.0, -0.5];
    let b: Vec<u16> = [1.0f32, 2.0, -3.0, 0.5]
        .iter()
        .map(|v| (v.to_bits() >> 16) as u16)
        .collect();
    let header = r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    a.iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    b.iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out
}

fn archive(dir: &Path) -> PathBuf {
    let files = [
        ("config.json", b"{\"model_type\": \"gemma3_text\"}".to_vec()),
        ("model.safetensors", safetensors()),
        ("tokenizer.json", vec![b' '; 1234]),
    ];
    let inputs: Vec<InputFile> = files
        .iter()
        .map(|(name, bytes)| {
            let source = dir.join(name);
            fs::write(&source, bytes).unwrap();
            InputFile {
                source,
                path: name.to_string(),
                role: Role::from_path(name),
            }
        })
        .collect();
    let spec = PackageSpec {
        name: "t".into(),
        version: "1".into(),
        family: "gemma3".into(),
        quantization: "mixed".into(),
        target: PackageTarget::Any,
        created_by: CreatedBy {
            tool: "test".into(),
            version: "0".into(),
            git_commit: "x".into(),
        },
        source: Source {
            repository: "local".into(),
            revision: None,
            files: BTreeMap::new(),
        },
        stages: BTreeMap::new(),
        sign_with: None,
    };
    let out = dir.join("t.tar");
    write_archive(&spec, &inputs, &out, Compression::None, &mut |_| {}).unwrap();
    out
}

#[test]
fn tensors_are_read_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let path = archive(tmp.path());
    let package = Package::open(&path).unwrap();
    assert_eq!(package.manifest().name, "t");
    assert_eq!(
        package.entry_offset("model.safetensors").unwrap() % ALIGNMENT,
        0
    );
    let names: Vec<&str> = package.tensor_names().collect();
    assert_eq!(names, ["a", "b"]);
    let a = package.tensor("a").unwrap();
    assert_eq!(a.shape, &[2, 3]);
    assert_eq!(
        a.to_f32_vec().unwrap(),
        vec![1.0, -2.0, 3.5, 0.25, 8.0, -0.5]
    );
    assert_eq!(
        package.tensor("b").unwrap().to_f32_vec().unwrap(),
        vec![1.0, 2.0, -3.0, 0.5]
    );
    // The tensor's bytes point into the mapped archive, right after the safetensors header.
    let weights = package.entry("model.safetensors").unwrap();
    let start = weights.as_ptr() as usize;
    let a_ptr = a.data.as_ptr() as usize;
    assert!(a_ptr > start && a_ptr < start + weights.len());
    assert_eq!(package.entry("tokenizer.json").unwrap().len(), 1234);
}

#[test]
fn unpacked_directories_load_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let path = archive(tmp.path());
    let dir = tmp.path().join("unpacked");
    unpack(&path, &dir).unwrap();
    let package = Package::open(&dir).unwrap();
    assert_eq!(
        package.tensor("b").unwrap().to_f32_vec().unwrap(),
        vec![1.0, 2.0, -3.0, 0.5]
    );
    assert_eq!(package.entry_offset("model.safetensors"), None);
    fs::write(dir.join("tokenizer.json"), b"tampered").unwrap();
    assert!(matches!(Package::open(&dir), Err(Error::Package(_))));
}

#[test]
fn corrupt_and_compressed_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = archive(tmp.path());
    let mut bytes = fs::read(&path).unwrap();
    let last_data = bytes.len() - 2048;
    let at = bytes[..last_data].iter().rposition(|&b| b == b' ').unwrap();
    bytes[at] = b'!';
    let bad = tmp.path().join("bad.tar");
    fs::write(&bad, &bytes).unwrap();
    let err = Package::open(&bad).err().unwrap();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let zst = tmp.path().join("x.tar.zst");
    fs::write(&zst, [0x28, 0xB5, 0x2F, 0xFD, 0, 0, 0, 0]).unwrap();
    let err = Package::open(&zst).err().unwrap();
    assert!(matches!(err, Error::Compressed { .. }), "{err}");
    assert!(err.to_string().contains("unpack"), "{err}");
}
