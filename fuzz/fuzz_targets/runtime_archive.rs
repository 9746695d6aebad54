//! Fuzzes the runtime's archive open path (`Classifier::open`, `Engine::open`: map, verify,
//! index tensors, parse the model files, build the model) on the native backend.
//!
//! The first byte picks the mode. Raw mode opens the rest as the archive itself, which mostly
//! exercises verification. Built mode splits the rest at [`SEP`] into the model's files and
//! wraps them in a valid archive (correct sizes and sha256), so that inputs reach the model
//! loaders behind verification.
#![no_main]

use std::path::PathBuf;

use ava_runtime::albert::Classifier;
use ava_runtime::{Backend, Engine};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

/// Separates the files of a built-mode input.
const SEP: &[u8] = b"\n--ava-fuzz--\n";
/// The files of an mALBERT classifier archive, in input order.
const ALBERT_FILES: [&str; 3] = ["model.onnx", "tokenizer.json", "labels.json"];
/// The files of a Gemma 3 archive, in input order.
const GEMMA3_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

fn split_files(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEP.len()).position(|w| w == SEP) {
        parts.push(&rest[..at]);
        rest = &rest[at + SEP.len()..];
    }
    parts.push(rest);
    parts
}

fn role(path: &str) -> &'static str {
    match path {
        "labels.json" => "labels",
        "tokenizer.json" => "tokenizer",
        "config.json" => "config",
        _ => "weights",
    }
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    if tar.append_data(&mut header, path, bytes).is_err() {
        unreachable!("appending to a Vec cannot fail");
    }
}

/// A valid archive of `family` holding `files` (paths and contents).
fn build(family: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut sorted = files.to_vec();
    sorted.sort_by_key(|(p, _)| *p);
    let entries: Vec<serde_json::Value> = sorted
        .iter()
        .map(|(path, bytes)| {
            serde_json::json!({
                "path": path,
                "size": bytes.len(),
                "sha256": hex::encode(Sha256::digest(bytes)),
                "role": role(path),
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "format_version": 1,
        "name": "fuzz",
        "version": "1",
        "family": family,
        "quantization": "f32",
        "target": "any",
        "created_by": {"tool": "aon", "version": "0", "git_commit": "unknown"},
        "source": {"repository": "local"},
        "files": entries,
    });
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, "manifest.json", manifest.to_string().as_bytes());
    for (path, bytes) in sorted {
        append(&mut tar, path, bytes);
    }
    tar.into_inner().unwrap_or_default()
}

/// Where each input is written to be opened: in memory (`/dev/shm`) when there is one, since a
/// disk write per execution would dominate the run.
fn scratch() -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("ava-fuzz-{}.tar", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let gemma = mode & 2 != 0;
    let archive = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let names = if gemma { GEMMA3_FILES } else { ALBERT_FILES };
        let parts = split_files(rest);
        let files: Vec<(&str, &[u8])> = names.iter().copied().zip(parts).collect();
        build(if gemma { "gemma3" } else { "albert" }, &files)
    };
    let path = scratch();
    if std::fs::write(&path, &archive).is_err() {
        return;
    }
    if gemma {
        let _ = Engine::open_with(&path, Backend::Native);
    } else {
        let _ = Classifier::open_with(&path, Backend::Native);
    }
});
