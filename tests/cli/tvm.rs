//! `alc build` and the runtime's `tvm` backend: kernels compiled by TVM for this machine give
//! the same greedy tokens as the native backend on the tiny Gemma 3 fixture.

use crate::common::token_ids;
use crate::{alc, gemma3_tiny};

fn tokens(dir: &std::path::Path, model: &str, backend: &str) -> (Vec<u64>, String) {
    tokens_with_env(dir, model, backend, &[])
}

/// [`tokens`] with more environment variables.
fn tokens_with_env(
    dir: &std::path::Path,
    model: &str,
    backend: &str,
    env: &[(&str, &std::path::Path)],
) -> (Vec<u64>, String) {
    let mut cmd = crate::command(
        env!("CARGO_BIN_EXE_alc"),
        dir,
        &[
            "run",
            model,
            "--prompt",
            "Hello world, a prompt longer than the sliding window",
            "--max-tokens",
            "24",
            "--temperature",
            "0",
            "--ignore-eos",
            "--backend",
            backend,
            "--json",
        ],
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = crate::finished(cmd.output().expect("alc runs")).ok();
    let j = run.json();
    (
        token_ids(&j["tokens"]),
        j["backend"].as_str().unwrap().to_string(),
    )
}

/// Packages `built` (signed with the tests' user key, which the runs trust); a stage directory
/// itself never has its library loaded (docs/security.md).
fn signed_archive(dir: &std::path::Path) -> String {
    let refused = alc(
        dir,
        &["run", "built", "--prompt-ids", "2", "--backend", "tvm"],
    );
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("checkpoint directory"),
        "{}",
        refused.stderr
    );
    alc(dir, &["package", "built", "-o", "built.tar"]).ok();
    "built.tar".to_string()
}

#[test]
fn tvm_backend_matches_native_on_the_tiny_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = gemma3_tiny();
    alc(
        tmp.path(),
        &[
            "build",
            fixture.to_str().unwrap(),
            "--target",
            "linux-x86_64",
            "-o",
            "built",
        ],
    )
    .ok();
    assert!(tmp
        .path()
        .join("built/lib/linux-x86_64/libmodel.so")
        .is_file());
    assert!(tmp
        .path()
        .join("built/lib/linux-x86_64/kernels.json")
        .is_file());
    let archive = signed_archive(tmp.path());
    let (native, b1) = tokens(tmp.path(), &archive, "native");
    let (tvm, b2) = tokens(tmp.path(), &archive, "tvm");
    let (auto, b3) = tokens(tmp.path(), &archive, "auto");
    assert_eq!(
        (b1.as_str(), b2.as_str(), b3.as_str()),
        ("native", "tvm", "tvm")
    );
    assert_eq!(native, tvm);
    assert_eq!(native, auto);
    // No writable temporary directory (as for an Android app): the kernels load all the same.
    let nowhere = tmp.path().join("no-such-dir");
    let (no_temp, b4) = tokens_with_env(tmp.path(), &archive, "tvm", &[("TMPDIR", &nowhere)]);
    assert_eq!(b4, "tvm");
    assert_eq!(native, no_temp);
}

#[test]
fn tvm_backend_without_a_library_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = gemma3_tiny();
    let run = alc(
        tmp.path(),
        &[
            "run",
            fixture.to_str().unwrap(),
            "--prompt-ids",
            "2,10",
            "--backend",
            "tvm",
        ],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("no kernel library"), "{}", run.stderr);
}

#[test]
fn tvm_backend_matches_native_on_the_q4bf16_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = gemma3_tiny();
    // The fixture's matrices are 64 or 128 wide: groups of 32 quantize every one of them
    // (projections Q4BF16, embedding Q8BF16 by the default policy). The default method
    // (AWQ + GPTQ with act-order) calibrates on the built-in corpus: act-order must leave the
    // runtime's layout (groups along the input dimension), or the backends would disagree.
    alc(
        tmp.path(),
        &[
            "quantize",
            fixture.to_str().unwrap(),
            "--quant",
            "q4bf16",
            "--group-size",
            "32",
            "--calib-samples",
            "4",
            "--calib-seq-len",
            "64",
            "-o",
            "q4",
        ],
    )
    .ok();
    alc(
        tmp.path(),
        &["build", "q4", "--target", "linux-x86_64", "-o", "built"],
    )
    .ok();
    let table: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("built/lib/linux-x86_64/kernels.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = table["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"gemv_q4i8g32_64x128"), "{names:?}");
    assert!(names.contains(&"embed_q8bf16g32_512x64"), "{names:?}");
    let archive = signed_archive(tmp.path());
    let (native, _) = tokens(tmp.path(), &archive, "native");
    let (tvm, backend) = tokens(tmp.path(), &archive, "tvm");
    assert_eq!(backend, "tvm");
    assert_eq!(native, tvm);
}
