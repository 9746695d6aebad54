//! `package`, `inspect`, `verify`, `unpack` through the binaries.

use std::fs;

use crate::{alc, aon, copy_dir, fixtures, gemma3_tiny, listing};

#[test]
fn package_inspect_verify_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let out = alc(
        tmp.path(),
        &["--json", "package", model.to_str().unwrap(), "-o", "."],
    )
    .ok();
    let report = out.json();
    let path = report["path"].as_str().unwrap().to_string();
    assert!(path.ends_with("-f32-any-v1.tar"), "{path}");
    assert!(path.contains("gemma3-"), "{path}");
    assert_eq!(report["family"], "gemma3");
    assert_eq!(report["created_by"]["tool"], "alc");

    let inspect = alc(tmp.path(), &["--json", "inspect", &path]).ok().json();
    let manifest = &inspect["manifest"];
    // Signed with the user's key (created on first use): format version 2.
    assert_eq!(manifest["format_version"], 2);
    assert_eq!(inspect["signed_by"].as_str().map(str::len), Some(16));
    assert_eq!(manifest["quantization"], "f32");
    assert_eq!(manifest["target"], "any");
    let roles: Vec<(&str, &str)> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["role"].as_str().unwrap()))
        .collect();
    assert!(
        roles.contains(&("model.safetensors", "weights")),
        "{roles:?}"
    );
    assert!(roles.contains(&("config.json", "config")), "{roles:?}");
    assert!(
        roles.contains(&("tokenizer.json", "tokenizer")),
        "{roles:?}"
    );
    // The source digests are those of the checkpoint files.
    let config_sha = manifest["source"]["files"]["config.json"].as_str().unwrap();
    let (_, expected) =
        ava_packaging::sha256_reader(fs::File::open(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config_sha, expected);

    let human = alc(tmp.path(), &["inspect", &path]).ok().stdout;
    assert!(
        human.contains("model.safetensors") && human.contains("weights"),
        "{human}"
    );

    assert!(alc(tmp.path(), &["verify", &path])
        .ok()
        .stdout
        .starts_with("OK "));
    alc(tmp.path(), &["unpack", &path, "-o", "unpacked"]).ok();
    assert_eq!(
        fs::read(tmp.path().join("unpacked/model.safetensors")).unwrap(),
        fs::read(model.join("model.safetensors")).unwrap()
    );
    alc(tmp.path(), &["verify", "unpacked"]).ok();
    // Unpacking again over an existing directory is refused.
    let again = alc(tmp.path(), &["unpack", &path, "-o", "unpacked"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}

#[test]
fn both_binaries_write_the_same_archive_but_for_the_tool_name() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let model = model.to_str().unwrap();
    alc(tmp.path(), &["-q", "package", model, "-o", "a.tar"]).ok();
    alc(tmp.path(), &["-q", "package", model, "-o", "b.tar"]).ok();
    aon(tmp.path(), &["-q", "package", model, "-o", "c.tar"]).ok();
    let a = fs::read(tmp.path().join("a.tar")).unwrap();
    assert_eq!(
        a,
        fs::read(tmp.path().join("b.tar")).unwrap(),
        "deterministic"
    );
    let c = aon(tmp.path(), &["--json", "inspect", "c.tar"]).ok().json();
    assert_eq!(c["manifest"]["created_by"]["tool"], "aon");
}

#[test]
fn zstd_archives_verify_and_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let run = alc(
        tmp.path(),
        &[
            "--json",
            "package",
            model.to_str().unwrap(),
            "-o",
            ".",
            "--zstd",
        ],
    )
    .ok();
    let path = run.json()["path"].as_str().unwrap().to_string();
    assert!(path.ends_with(".tar.zst"), "{path}");
    alc(tmp.path(), &["verify", &path]).ok();
    assert_eq!(
        alc(tmp.path(), &["--json", "inspect", &path]).ok().json()["compressed"],
        true
    );
    alc(tmp.path(), &["unpack", &path, "-o", "out"]).ok();
}

#[test]
fn a_flipped_byte_fails_verify_naming_the_entry() {
    let tmp = tempfile::tempdir().unwrap();
    alc(
        tmp.path(),
        &[
            "-q",
            "package",
            gemma3_tiny().to_str().unwrap(),
            "-o",
            "m.tar",
        ],
    )
    .ok();
    let archive = tmp.path().join("m.tar");
    let mut bytes = fs::read(&archive).unwrap();
    let offset = {
        let mut tar = tar::Archive::new(fs::File::open(&archive).unwrap());
        let entry = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_str() == Some("tokenizer.json"))
            .unwrap();
        entry.raw_file_position() as usize
    };
    bytes[offset + 10] ^= 0x01;
    fs::write(&archive, bytes).unwrap();
    let run = alc(tmp.path(), &["verify", "m.tar"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("\"tokenizer.json\" is corrupt"),
        "{}",
        run.stderr
    );
    let json = alc(tmp.path(), &["--json", "verify", "m.tar"]);
    assert_eq!(json.code, 1);
    assert_eq!(json.json()["entry"], "tokenizer.json");
}

#[test]
fn hostile_archives_fail_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = fixtures().join("archives/bad/traversal.tar");
    let run = aon(tmp.path(), &["unpack", bad.to_str().unwrap(), "-o", "out"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("unsafe path"), "{}", run.stderr);
    assert!(listing(tmp.path()).is_empty());
}

#[test]
fn usage_errors_exit_2_and_version_names_the_commit() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(alc(tmp.path(), &["frobnicate"]).code, 2);
    assert_eq!(aon(tmp.path(), &["package"]).code, 2);
    let version = alc(tmp.path(), &["--version"]).ok().stdout;
    assert!(
        version.starts_with("alc ") && version.contains("(git "),
        "{version}"
    );
}

#[test]
fn failed_package_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&gemma3_tiny(), &model);
    fs::write(model.join("pytorch_model.bin"), b"not really a pickle").unwrap();
    let run = alc(tmp.path(), &["package", "model", "-o", "out.tar"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("pytorch_model.bin") && run.stderr.contains("pickle"),
        "{}",
        run.stderr
    );
    assert_eq!(listing(tmp.path()), vec!["model"]);
}

#[test]
fn hub_cache_paths_become_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = tmp
        .path()
        .join("hub/models--acme--tiny-gemma/snapshots/0123abcd");
    copy_dir(&gemma3_tiny(), &snapshot);
    let run = alc(
        tmp.path(),
        &[
            "--json",
            "package",
            snapshot.to_str().unwrap(),
            "-o",
            "x.tar",
        ],
    )
    .ok();
    let source = &run.json()["source"];
    assert_eq!(source["repository"], "acme/tiny-gemma");
    assert_eq!(source["revision"], "0123abcd");
}

#[test]
fn stage_file_and_flags_set_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&gemma3_tiny(), &model);
    fs::write(
        model.join("ava-stage.json"),
        r#"{"quantization": "q4bf16", "stages": {"quantize": {"method": "awq", "group_size": 128}}}"#,
    )
    .unwrap();
    let run = alc(
        tmp.path(),
        &[
            "--json",
            "package",
            "model",
            "-o",
            ".",
            "--target",
            "linux-arm64",
            "--name",
            "gemma3-tiny",
            "--package-version",
            "3",
        ],
    )
    .ok();
    let report = run.json();
    assert_eq!(report["path"], "./gemma3-tiny-q4bf16-linux-arm64-v3.tar");
    assert_eq!(report["stages"]["quantize"]["group_size"], 128);
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(!files.contains(&"ava-stage.json"), "{files:?}");
    let bad_target = alc(
        tmp.path(),
        &["package", "model", "-o", "y.tar", "--target", "windows"],
    );
    assert_eq!(bad_target.code, 2, "{}", bad_target.stderr);
}
