//! The committed corpus of hostile archives (`fixtures/archives/bad/`, made by
//! `examples/make_bad_archives.rs`): each is rejected with its own error, by `verify` and by
//! `unpack`, and `unpack` leaves nothing behind.

use std::fs;
use std::path::{Path, PathBuf};

use ava_packaging::{read_manifest, unpack, verify, Error};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/archives/bad")
}

/// (file, does the error match, text the message must contain)
type Case = (&'static str, fn(&Error) -> bool, &'static str);

const CASES: &[Case] = &[
    (
        "traversal.tar",
        |e| matches!(e, Error::UnsafePath { .. }),
        "`..` component",
    ),
    (
        "traversal-nested.tar",
        |e| matches!(e, Error::UnsafePath { .. }),
        "`..` component",
    ),
    (
        "absolute.tar",
        |e| matches!(e, Error::UnsafePath { .. }),
        "absolute path",
    ),
    (
        "symlink.tar",
        |e| matches!(e, Error::ForbiddenEntryType { .. }),
        "symlink entries are not allowed",
    ),
    (
        "hardlink.tar",
        |e| matches!(e, Error::ForbiddenEntryType { .. }),
        "hard link entries are not allowed",
    ),
    (
        "device.tar",
        |e| matches!(e, Error::ForbiddenEntryType { .. }),
        "device entries are not allowed",
    ),
    (
        "directory.tar",
        |e| matches!(e, Error::ForbiddenEntryType { .. }),
        "directory entries",
    ),
    (
        "duplicate.tar",
        |e| matches!(e, Error::DuplicateEntry { .. }),
        "appears more than once",
    ),
    (
        "unlisted.tar",
        |e| matches!(e, Error::UnlistedEntry { .. }),
        "\"extra.txt\" is not listed",
    ),
    (
        "missing.tar",
        |e| matches!(e, Error::MissingEntry { .. }),
        "\"hello.txt\" is listed in the manifest but missing",
    ),
    (
        "size-mismatch.tar",
        |e| matches!(e, Error::SizeMismatch { .. }),
        "has 6 bytes, the manifest says 5",
    ),
    (
        "checksum.tar",
        |e| matches!(e, Error::ChecksumMismatch { .. }),
        "\"hello.txt\" is corrupt",
    ),
    (
        "manifest-not-first.tar",
        |e| matches!(e, Error::Manifest { .. }),
        "not manifest.json",
    ),
    (
        "trailing-data.tar",
        |e| matches!(e, Error::TrailingData { .. }),
        "after the end-of-archive",
    ),
    (
        "truncated.tar",
        |e| matches!(e, Error::Truncated { .. }),
        "truncated",
    ),
    (
        "zstd-bomb.tar.zst",
        |e| matches!(e, Error::LimitExceeded { .. }),
        "decompressed stream exceeds the limit",
    ),
    (
        "zstd-bomb-declared.tar.zst",
        |e| matches!(e, Error::LimitExceeded { .. }),
        "declared by the zstd frame",
    ),
    (
        "huge-manifest.tar.zst",
        |e| matches!(e, Error::LimitExceeded { .. }),
        "manifest size exceeds the limit of 16777216",
    ),
    (
        "format-version-99.tar",
        |e| matches!(e, Error::Manifest { .. }),
        "format_version 99 is not supported",
    ),
    (
        "signature-missing.tar",
        |e| matches!(e, Error::BadSignature { .. }),
        "not manifest.sig",
    ),
    (
        "signature-mismatch.tar",
        |e| matches!(e, Error::BadSignature { .. }),
        "does not match the manifest",
    ),
    (
        "end-marker-missing.tar",
        |e| matches!(e, Error::Truncated { .. }),
        "no end-of-archive marker",
    ),
];

#[test]
fn every_corpus_file_has_a_case() {
    let mut names: Vec<String> = fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut cased: Vec<String> = CASES.iter().map(|c| c.0.to_string()).collect();
    cased.sort();
    assert_eq!(names, cased);
}

#[test]
fn verify_rejects_each_with_its_error() {
    for (file, is_expected, text) in CASES {
        let path = corpus().join(file);
        let err = verify(&path).expect_err(file);
        let message = err.to_string();
        assert!(is_expected(&err), "{file}: unexpected error {err:?}");
        assert!(message.contains(text), "{file}: {message:?} lacks {text:?}");
        assert!(
            message.contains(file),
            "{file}: the message names the archive: {message}"
        );
    }
}

#[test]
fn unpack_rejects_each_and_writes_nothing() {
    for (file, is_expected, _) in CASES {
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("out");
        let err = unpack(&corpus().join(file), &dest).expect_err(file);
        assert!(is_expected(&err), "{file}: unexpected error {err:?}");
        let left: Vec<_> = fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "{file}: left behind {left:?}");
    }
    // Nothing escaped into the corpus directory or its parent either.
    assert!(!corpus().join("hello.txt").exists());
    assert!(!corpus().parent().unwrap().join("hello.txt").exists());
}

#[test]
fn inspect_reads_the_manifest_only_but_still_checks_it() {
    // Entry-level problems are found by verify; the manifest itself is checked by inspect.
    assert!(read_manifest(&corpus().join("checksum.tar")).is_ok());
    assert!(read_manifest(&corpus().join("huge-manifest.tar.zst")).is_err());
    assert!(read_manifest(&corpus().join("format-version-99.tar")).is_err());
    assert!(read_manifest(&corpus().join("signature-missing.tar")).is_err());
    assert!(read_manifest(&corpus().join("signature-mismatch.tar")).is_err());
    assert!(read_manifest(&corpus().join("manifest-not-first.tar")).is_err());
}

#[test]
fn model_files_are_named_not_called_malformed_tar() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, says) in [
        (
            "model.gguf",
            &b"GGUF\x03\x00\x00\x00rest of a gguf"[..],
            "GGUF model file",
        ),
        ("model.zip", &b"PK\x03\x04zip"[..], "zip file"),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        for err in [
            read_manifest(&path).unwrap_err(),
            verify(&path).unwrap_err(),
        ] {
            assert!(matches!(err, Error::NotAnArchive { .. }), "{name}: {err}");
            assert!(err.to_string().contains(says), "{name}: {err}");
        }
        let dest = dir.path().join(format!("{name}-out"));
        assert!(unpack(&path, &dest).is_err());
        assert!(!dest.exists(), "{name}: unpack left {dest:?} behind");
    }
}
