//! Writer and reader together: round trip, determinism, alignment, corruption detection.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use ava_packaging::{
    read_manifest, unpack, verify, verify_dir, write_archive, Compression, CreatedBy, Error,
    InputFile, PackageSpec, PackageTarget, Role, Source, ALIGNMENT,
};

/// A small model directory: odd sizes so entries land at unaligned offsets without padding.
fn model_dir(root: &Path) -> Vec<InputFile> {
    let dir = root.join("model");
    fs::create_dir_all(dir.join("lib/linux-arm64")).unwrap();
    let files: [(&str, Vec<u8>); 5] = [
        ("config.json", br#"{"model_type": "gemma3_text"}"#.to_vec()),
        (
            "model.safetensors",
            (0..10_001u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        ("tokenizer.json", b"{\"version\": \"1.0\"}".repeat(37)),
        ("extra.safetensors", vec![3u8; 777]),
        ("lib/linux-arm64/libmodel.so", vec![0x7f; 1500]),
    ];
    files
        .into_iter()
        .map(|(path, bytes)| {
            let source = dir.join(path);
            fs::write(&source, bytes).unwrap();
            InputFile {
                source,
                path: path.to_string(),
                role: Role::from_path(path),
            }
        })
        .collect()
}

fn spec() -> PackageSpec {
    PackageSpec {
        name: "gemma3-tiny".into(),
        version: "1".into(),
        family: "gemma3".into(),
        quantization: "f32".into(),
        target: PackageTarget::Any,
        created_by: CreatedBy {
            tool: "alc".into(),
            version: "0.0.0".into(),
            git_commit: "test".into(),
        },
        source: Source {
            repository: "local".into(),
            revision: None,
            files: BTreeMap::new(),
        },
        stages: BTreeMap::from([("quantize".to_string(), serde_json::json!({"method": "rtn"}))]),
        sign_with: None,
    }
}

fn write(root: &Path, inputs: &[InputFile], name: &str, compression: Compression) -> PathBuf {
    let out = root.join(name);
    write_archive(&spec(), inputs, &out, compression, &mut |_| {}).unwrap();
    out
}

/// (path, data offset, size) of every entry, read with the `tar` crate.
fn layout(archive: &Path) -> Vec<(String, u64, u64)> {
    let mut tar = tar::Archive::new(fs::File::open(archive).unwrap());
    tar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.raw_file_position(),
                e.size(),
            )
        })
        .collect()
}

#[test]
fn round_trip_through_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = model_dir(tmp.path());
    let archive = write(tmp.path(), &inputs, "a.tar", Compression::None);
    let manifest = verify(&archive).unwrap();
    assert_eq!(manifest.files.len(), inputs.len());
    assert_eq!(read_manifest(&archive).unwrap(), manifest);
    assert_eq!(manifest.stages["quantize"]["method"], "rtn");
    assert_eq!(
        manifest.file("lib/linux-arm64/libmodel.so").unwrap().role,
        Role::Library
    );

    let out = tmp.path().join("unpacked");
    unpack(&archive, &out).unwrap();
    for input in &inputs {
        assert_eq!(
            fs::read(out.join(&input.path)).unwrap(),
            fs::read(&input.source).unwrap()
        );
    }
    assert_eq!(verify_dir(&out).unwrap(), manifest);
    // The destination exists now: a second unpack refuses to touch it.
    assert!(matches!(
        unpack(&archive, &out),
        Err(Error::DestinationExists { .. })
    ));
}

#[test]
fn zstd_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = model_dir(tmp.path());
    let plain = write(tmp.path(), &inputs, "a.tar", Compression::None);
    let packed = write(tmp.path(), &inputs, "a.tar.zst", Compression::Zstd);
    assert!(fs::metadata(&packed).unwrap().len() < fs::metadata(&plain).unwrap().len());
    assert_eq!(verify(&packed).unwrap(), verify(&plain).unwrap());
    // The compressed stream is exactly the plain archive.
    let mut decoded = Vec::new();
    zstd::Decoder::new(fs::File::open(&packed).unwrap())
        .unwrap()
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, fs::read(&plain).unwrap());
    unpack(&packed, &tmp.path().join("out")).unwrap();
}

#[test]
fn rebuild_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = model_dir(tmp.path());
    let first = write(tmp.path(), &inputs, "a.tar", Compression::None);
    let zst = write(tmp.path(), &inputs, "a.tar.zst", Compression::Zstd);
    // Touch the inputs (new mtimes) and rebuild in reverse input order.
    for input in &inputs {
        let bytes = fs::read(&input.source).unwrap();
        fs::write(&input.source, bytes).unwrap();
    }
    let mut reversed = inputs.clone();
    reversed.reverse();
    let second = write(tmp.path(), &reversed, "b.tar", Compression::None);
    let zst2 = write(tmp.path(), &reversed, "b.tar.zst", Compression::Zstd);
    assert_eq!(fs::read(first).unwrap(), fs::read(second).unwrap());
    assert_eq!(fs::read(zst).unwrap(), fs::read(zst2).unwrap());
}

#[test]
fn weights_and_libraries_are_aligned() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = model_dir(tmp.path());
    let archive = write(tmp.path(), &inputs, "a.tar", Compression::None);
    let entries = layout(&archive);
    assert_eq!(entries[0].0, "manifest.json", "manifest first");
    let mut aligned = 0;
    for (path, offset, _) in &entries {
        if Role::from_path(path).is_aligned() {
            assert_eq!(offset % ALIGNMENT, 0, "{path} at {offset}");
            aligned += 1;
        }
    }
    assert_eq!(aligned, 3);
    // Entries are sorted after the manifest.
    let names: Vec<&str> = entries[1..].iter().map(|e| e.0.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn a_flipped_byte_in_any_entry_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = model_dir(tmp.path());
    let archive = write(tmp.path(), &inputs, "a.tar", Compression::None);
    let bytes = fs::read(&archive).unwrap();
    for (path, offset, size) in layout(&archive) {
        for at in [0, size / 2, size - 1] {
            let mut bad = bytes.clone();
            bad[(offset + at) as usize] ^= 0xff;
            let corrupt = tmp.path().join("corrupt.tar");
            fs::write(&corrupt, &bad).unwrap();
            let err = verify(&corrupt).unwrap_err();
            let text = err.to_string();
            if path == "manifest.json" {
                assert!(matches!(err, Error::Manifest { .. }), "{text}");
            } else {
                assert!(matches!(err, Error::ChecksumMismatch { .. }), "{text}");
                assert_eq!(err.entry(), Some(path.as_str()));
                assert!(text.contains(&path), "{text}");
            }
        }
    }
}

/// Generated here as well as in the committed corpus: an archive cut right after its last
/// entry, or inside its end-of-archive marker, is refused.
#[test]
fn an_archive_without_its_end_marker_is_refused() {
    const BLOCK: u64 = 512;
    let tmp = tempfile::tempdir().unwrap();
    let inputs = model_dir(tmp.path());
    let archive = write(tmp.path(), &inputs, "a.tar", Compression::None);
    let bytes = fs::read(&archive).unwrap();
    let data_end = layout(&archive)
        .iter()
        .map(|(_, offset, size)| (offset + size).next_multiple_of(BLOCK))
        .max()
        .unwrap();
    assert!(bytes.len() as u64 >= data_end + 2 * BLOCK);
    for cut in [data_end, data_end + BLOCK] {
        let cut_path = tmp.path().join("cut.tar");
        fs::write(&cut_path, &bytes[..cut as usize]).unwrap();
        let err = verify(&cut_path).expect_err("an archive without its end marker");
        assert!(err.to_string().contains("end-of-archive"), "{cut}: {err}");
    }
}

#[test]
fn file_changed_between_hash_and_write_is_caught() {
    // Simulate by listing a file whose size differs from what we will read: a directory
    // cannot be read, so the write fails cleanly and leaves nothing behind.
    let tmp = tempfile::tempdir().unwrap();
    let mut inputs = model_dir(tmp.path());
    inputs.push(InputFile {
        source: tmp.path().join("missing"),
        path: "missing.bin".into(),
        role: Role::Other,
    });
    let out = tmp.path().join("x.tar");
    assert!(write_archive(&spec(), &inputs, &out, Compression::None, &mut |_| {}).is_err());
    assert!(!out.exists());
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn bad_input_paths_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut inputs = model_dir(tmp.path());
    inputs[0].path = "../escape.json".into();
    let err = write_archive(
        &spec(),
        &inputs,
        &tmp.path().join("x.tar"),
        Compression::None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("escape.json"), "{err}");
    let mut inputs = model_dir(tmp.path());
    inputs[1].path = inputs[0].path.clone();
    assert!(write_archive(
        &spec(),
        &inputs,
        &tmp.path().join("x.tar"),
        Compression::None,
        &mut |_| {}
    )
    .is_err());
}
