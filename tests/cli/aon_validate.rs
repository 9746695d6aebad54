//! `aon validate`: the qemu path end to end (the tiny ALBERT classifier compiled into an
//! archive, classified by `ava-runner --classify` under qemu-aarch64, compared with the host),
//! and the adb path against the STAND-IN `adb` script of `validate.rs` (not the real client:
//! it logs its commands, "pushes" by copying into a temporary device directory and runs
//! `adb shell` lines through qemu-aarch64).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::aon_runtime::compile_tiny;
use crate::validate::with_standin_adb;
use crate::{aon, fixtures};

/// The tiny classifier (5 CLINC150 intents, random weights) compiled to INT8 in `dir`, with
/// its stage cache in `dir/cache`, plus `extra` options.
fn tiny_archive(dir: &Path, extra: &[&str]) -> PathBuf {
    let args: Vec<&str> = ["--samples", "16"].iter().chain(extra).copied().collect();
    let report = compile_tiny(dir, &args);
    dir.join(report["archive"].as_str().unwrap())
}

fn validate_args(archive: &Path, device: &str, extra: &[&str]) -> Vec<String> {
    let head = [
        "validate",
        archive.to_str().unwrap(),
        "--device",
        device,
        "--runner-profile",
        "dev",
        "--json",
    ];
    head.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn assert_passed(r: &Value, utterances: u64) {
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["predictions_match"], true, "{r:#}");
    assert!(r["first_divergence"].is_null());
    assert_eq!(r["utterances"], utterances);
    assert!(r["max_logit_diff"].as_f64().unwrap() <= r["tolerance"]["logits"].as_f64().unwrap());
    let t = &r["timings"];
    assert!(t["load_ms"].as_f64().unwrap() > 0.0, "{t}");
    assert_eq!(t["latency_ms"].as_array().unwrap().len() as u64, utterances);
    assert!(t["latency_ms_p50"].as_f64().unwrap() > 0.0);
    assert!(t["latency_ms_p95"].as_f64().unwrap() >= t["latency_ms_p50"].as_f64().unwrap());
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0);
    let m = &r["memory"];
    assert_eq!(m["max_seq_len"], 64);
    assert!(m["weights_bytes"].as_u64().unwrap() > 0);
    assert!(m["activation_bytes"].as_u64().unwrap() > 0);
    assert!(m["estimate_bytes"].as_u64() < m["device_mem_total_bytes"].as_u64());
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["memory", "runner", "predictions"]);
}

#[test]
fn aon_validate_under_qemu_matches_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    // With the encoder's arm64 TVM kernels: the device runs them, the host (x86_64, no
    // library for it in the archive) the native kernels.
    let archive = tiny_archive(tmp.path(), &["--target", "linux-arm64"]);
    let clinc = fixtures().join("gen/data/clinc150.json");
    let args = validate_args(
        &archive,
        "qemu",
        &[
            "--data",
            clinc.to_str().unwrap(),
            "--max-utterances",
            "12",
            "--threads",
            "3",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = aon(tmp.path(), &args).ok().json();
    assert_passed(&r, 12);
    assert_eq!(r["threads"], 3, "--threads reaches the runner");
    assert_eq!(r["device"], "qemu-aarch64");
    assert_eq!(r["target"], "linux-arm64");
    assert_eq!(r["utterance_source"], "data");
    assert_eq!(r["device_facts"]["arch"], "aarch64");
    assert_eq!(
        (r["backend"].as_str(), r["host_backend"].as_str()),
        (Some("tvm"), Some("native"))
    );
    // 12 of the 4,500 test utterances, every 375th; those of the model's 5 intents are scored.
    let a = &r["accuracy"];
    assert!(a.is_null() || a["device"] == a["host"], "{a}");

    // A Gemma 3 archive is refused, pointing at `alc validate`.
    let gemma = crate::gemma3_tiny();
    let p = aon(
        tmp.path(),
        &["package", gemma.to_str().unwrap(), "-o", ".", "--json"],
    );
    let gemma_tar = p.ok().json()["path"].as_str().unwrap().to_string();
    let run = aon(tmp.path(), &["validate", &gemma_tar, "--device", "qemu"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("alc validate"), "{}", run.stderr);
}

/// A runner that is no runner: qemu refuses it, so `--facts` gets no report.
const BAD_RUNNER: &str = "#!/bin/sh\necho not a runner\n";

#[test]
fn aon_validate_over_a_standin_adb_pushes_runs_and_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let archive = tiny_archive(dir, &[]);
    // The aarch64 Linux runner (what the stand-in runs through qemu; an Android one would
    // not run here): the one a 1-utterance qemu validation builds and reports.
    let args = validate_args(&archive, "qemu", &["--max-utterances", "1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = aon(dir, &args).ok().json()["runner"]
        .as_str()
        .unwrap()
        .to_string();
    let args = validate_args(&archive, "adb:STANDIN2", &["--runner", &runner]);

    // No device and an unauthorized one: exit 2 with adb's own message, nothing pushed.
    let aon_bin = env!("CARGO_BIN_EXE_aon");
    for (state, says) in [
        ("none", "no devices/emulators found"),
        ("unauthorized", "device unauthorized"),
    ] {
        let run = with_standin_adb(aon_bin, dir, &args, state);
        assert_eq!(run.code, 2, "{state}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{}", run.stderr);
        assert_eq!(run.json()["unreachable"], true);
    }
    let log_path = dir.join("adb.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log, "-s STANDIN2 get-state\n".repeat(2));
    std::fs::remove_file(&log_path).unwrap();

    // Without --data: the archive's 5 label names are the utterances.
    let run = with_standin_adb(aon_bin, dir, &args, "device");
    let r = run.ok().json();
    assert_passed(&r, 5);
    assert_eq!(r["device"], "adb:STANDIN2");
    assert_eq!(r["target"], "android-arm64");
    assert_eq!(r["utterance_source"], "labels");
    assert_eq!(r["accuracy"]["labelled"], 5);
    assert_eq!(r["device_facts"]["model"], "Stand-in Phone");
    assert_eq!(r["device_facts"]["android_version"], "14");

    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 8, "{log}");
    assert_eq!(lines[0], "-s STANDIN2 get-state");
    let remote = lines[1]
        .strip_prefix("-s STANDIN2 shell mkdir -p ")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(remote.starts_with("/data/local/tmp/ava-validate-"), "{log}");
    let name = archive.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        lines[2],
        format!("-s STANDIN2 push {runner} {remote}/ava-runner")
    );
    assert!(
        lines[3].ends_with(&format!("{name} {remote}/{name}")),
        "{log}"
    );
    assert!(
        lines[4].ends_with(&format!(" {remote}/utterances.txt")),
        "{log}"
    );
    let shell = format!("-s STANDIN2 shell cd {remote} && chmod 755 ava-runner && ./ava-runner");
    assert_eq!(lines[5], format!("{shell} --facts"));
    assert_eq!(
        lines[6],
        format!("{shell} {name} --classify utterances.txt")
    );
    assert_eq!(lines[7], format!("-s STANDIN2 shell rm -rf {remote}"));
    let pushed = dir.join(format!("device{remote}/utterances.txt"));
    assert!(!pushed.exists(), "the device directory is removed");

    // A runner that does not run: exit 1 naming it, and the device directory still removed.
    std::fs::remove_file(&log_path).unwrap();
    let bad = dir.join("bad-runner");
    std::fs::write(&bad, BAD_RUNNER).unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = validate_args(
        &archive,
        "adb:STANDIN2",
        &["--runner", bad.to_str().unwrap()],
    );
    let run = with_standin_adb(aon_bin, dir, &args, "device");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("--facts printed no report"),
        "{}",
        run.stderr
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    let last = log.lines().last().unwrap();
    assert!(
        last.starts_with("-s STANDIN2 shell rm -rf /data/local/tmp/ava-validate-"),
        "{log}"
    );
}

/// Without `--runner`, the adb path links an Android `ava-runner` without the NDK
/// (targets/src/android_runner.rs). It cannot run here: the stand-in adb runs it through
/// qemu-aarch64 with glibc's sysroot, which has no bionic, so qemu names the executable's
/// interpreter, `/system/bin/linker64`, and validation fails (exit 1) after cleaning up.
#[test]
fn aon_validate_over_adb_builds_an_android_runner_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let archive = tiny_archive(dir, &[]);
    let args = validate_args(&archive, "adb", &["--max-utterances", "2"]);
    let run = with_standin_adb(env!("CARGO_BIN_EXE_aon"), dir, &args, "device");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("building ava-runner for aarch64-linux-android"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/system/bin/linker64"),
        "{}",
        run.stderr
    );
    let log = std::fs::read_to_string(dir.join("adb.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[2].starts_with("push ") && lines[2].ends_with("/ava-runner"),
        "{log}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("shell rm -rf /data/local/tmp/"),
        "{log}"
    );
}

#[test]
fn aon_validate_native_under_qemu_gives_the_host_bits() {
    let tmp = tempfile::tempdir().unwrap();
    // Float weights (no int8 rounding to hide a last-bit difference) and no arm64 library:
    // the device runs the native encoder, as the host does, and must give the same logits to
    // the bit (docs/runtime.md, "Numerical contract": GELU and the pooler's tanh from exp).
    let archive = tiny_archive(tmp.path(), &["--quant", "f32"]);
    let clinc = fixtures().join("gen/data/clinc150.json");
    let args = validate_args(
        &archive,
        "qemu",
        &["--data", clinc.to_str().unwrap(), "--max-utterances", "24"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = aon(tmp.path(), &args).ok().json();
    assert_passed(&r, 24);
    assert_eq!(
        (r["backend"].as_str(), r["host_backend"].as_str()),
        (Some("native"), Some("native"))
    );
    assert_eq!(r["max_logit_diff"].as_f64(), Some(0.0), "{r:#}");
}
