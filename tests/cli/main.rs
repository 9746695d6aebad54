//! End-to-end tests of the `alc` and `aon` binaries: one integration binary, topic modules,
//! and a helper for running a binary in a temporary directory.

mod aon;
mod aon_base;
mod aon_int8;
mod aon_runtime;
mod aon_validate;
mod archive;
mod bench;
mod big_models;
mod chat;
mod checkpoint;
mod common;
mod convert;
mod download;
mod download_gguf;
mod download_sources;
#[path = "../../quantize/tests/support/hostile_gguf.rs"]
mod hostile_gguf;
mod hostile_input;
mod hubserver;
mod outputs;
mod polish;
mod quantize;
mod real;
mod run;
mod security;
mod tvm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The bundled tiny Gemma 3 checkpoint (transformers-5 config keys).
pub fn gemma3_tiny() -> PathBuf {
    fixtures().join("models/gemma3-tiny")
}

/// The configuration directory (signing key, trusted keys) every test run shares, so that an
/// archive one run compiles is trusted by the next, as on a user's machine.
pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("ava-config")
}

/// A finished run of one of the binaries.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    /// Asserts success and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

fn command(bin: &str, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("AVA_CACHE_DIR")
        .env("AVA_CONFIG_DIR", config_dir());
    cmd
}

fn run_bin(bin: &str, dir: &Path, args: &[&str]) -> Run {
    finished(command(bin, dir, args).output().expect("binary runs"))
}

fn finished(output: Output) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = output;
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `alc` in `dir`.
pub fn alc(dir: &Path, args: &[&str]) -> Run {
    run_bin(env!("CARGO_BIN_EXE_alc"), dir, args)
}

/// Runs `alc` in `dir` with `input` on its stdin.
pub fn alc_stdin(dir: &Path, args: &[&str], input: &str) -> Run {
    with_stdin(env!("CARGO_BIN_EXE_alc"), dir, args, input)
}

/// Runs `aon` in `dir` with `input` on its stdin.
pub fn aon_stdin(dir: &Path, args: &[&str], input: &str) -> Run {
    with_stdin(env!("CARGO_BIN_EXE_aon"), dir, args, input)
}

fn with_stdin(bin: &str, dir: &Path, args: &[&str], input: &str) -> Run {
    use std::io::Write;
    let mut child = command(bin, dir, args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let input = input.to_string();
    // Written from a thread: a binary that answers before reading everything must not block us.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let output = child.wait_with_output().expect("binary runs");
    writer.join().expect("stdin writer");
    finished(output)
}

/// Runs `aon` in `dir`.
pub fn aon(dir: &Path, args: &[&str]) -> Run {
    run_bin(env!("CARGO_BIN_EXE_aon"), dir, args)
}

/// Copies a directory tree (regular files only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Names of the entries in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
mod compile;
mod parity;
mod validate;
mod validate_ties;
