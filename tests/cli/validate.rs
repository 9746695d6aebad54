//! `alc validate`: the qemu path end to end (the tiny fixture compiled for linux-arm64, run by
//! `ava-runner` under qemu-aarch64, compared with the host), and the adb path against a
//! STAND-IN `adb` script (not the real client: it logs its commands, "pushes" by copying into a
//! temporary device directory and runs `adb shell` lines through qemu-aarch64).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{alc, gemma3_tiny, Run};

/// Token-id prompts: two short lines, one with commas.
const PROMPTS: &str = "2 10 20 30\n# a comment\n2,5,6\n";

/// The STAND-IN adb client: see the module comment. `ADB_STANDIN_STATE` picks what
/// `get-state` answers: `device`, `none` or `unauthorized` (the real client's messages).
pub const STANDIN_ADB: &str = r#"#!/bin/sh
# STAND-IN for the Android `adb` client, used by tests/cli/validate.rs only.
echo "$*" >> "$ADB_STANDIN_LOG"
if [ "$1" = -s ]; then shift 2; fi
case "$1" in
  get-state)
    case "$ADB_STANDIN_STATE" in
      device) echo device ;;
      none) echo "error: no devices/emulators found" >&2; exit 1 ;;
      *) printf '%s\n' "error: device unauthorized." \
           "This adb server's \$ADB_VENDOR_KEYS is not set" \
           "Try 'adb kill-server' if that seems wrong." \
           "Otherwise check for a confirmation dialog on your device." >&2; exit 1 ;;
    esac ;;
  push)
    mkdir -p "$ADB_STANDIN_ROOT$(dirname "$3")" && cp "$2" "$ADB_STANDIN_ROOT$3" \
      && echo "$2: 1 file pushed, 0 skipped." ;;
  shell)
    shift
    line=$(printf '%s' "$*" | sed -e "s#/data/local/tmp#$ADB_STANDIN_ROOT/data/local/tmp#g" \
      -e "s#\./ava-runner#qemu-aarch64 -L /usr/aarch64-linux-gnu ./ava-runner#")
    exec sh -c "$line" ;;
  *) echo "stand-in adb: unsupported command $1" >&2; exit 1 ;;
esac
"#;

/// A stand-in `getprop` next to the stand-in adb (the runner calls it for device facts).
pub const STANDIN_GETPROP: &str = r#"#!/bin/sh
case "$1" in
  ro.product.model) echo "Stand-in Phone" ;;
  ro.build.version.release) echo 14 ;;
esac
"#;

/// The tiny fixture compiled for linux-arm64 into `dir/out`, with the stage cache that
/// `make test-cross` uses (a second compile is all cache hits).
fn arm64_archive(dir: &Path) -> PathBuf {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-cross/cache");
    let fixture = gemma3_tiny();
    let args = [
        "--cache-dir",
        cache.to_str().unwrap(),
        "compile",
        fixture.to_str().unwrap(),
        "--quant",
        "f32",
        "--target",
        "linux-arm64",
        "-o",
        "out",
        "--json",
    ];
    let report = alc(dir, &args).ok().json();
    dir.join(report["archives"][0]["path"].as_str().unwrap())
}

/// `validate ARCHIVE --device DEVICE` with small sizes and a dev-profile runner.
fn validate_args(archive: &Path, device: &str) -> Vec<String> {
    [
        "validate",
        archive.to_str().unwrap(),
        "--device",
        device,
        "--prompts",
        "prompts.txt",
        "--max-new-tokens",
        "6",
        "--context",
        "64",
        "--runner-profile",
        "dev",
        "--json",
    ]
    .map(str::to_string)
    .to_vec()
}

fn assert_passed(report: &serde_json::Value) {
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["tokens_match"], true);
    assert!(report["first_divergence"].is_null());
    // The native backend gives the host's bits on arm64 too; the f32 TVM kernels differ by
    // float ordering only.
    assert!(
        report["max_logit_diff"]["value"].as_f64().unwrap() < 1e-4,
        "{report:#}"
    );
    // The float formats' default: 1e-3 + 5e-4 * scale, the scale each step's largest |logit|.
    assert!((report["tolerance"].as_f64().unwrap() - 1e-3).abs() < 1e-9);
    assert!((report["rel_tolerance"].as_f64().unwrap() - 5e-4).abs() < 1e-9);
    let worst = &report["max_logit_diff"];
    let scale = worst["scale"].as_f64().unwrap();
    assert!(scale > 0.0, "{report:#}");
    assert!((worst["tolerance"].as_f64().unwrap() - (1e-3 + 5e-4 * scale)).abs() < 1e-6);
    assert_eq!(report["near_ties"], serde_json::json!([]));
    assert_eq!(report["prompts"], 2);
    let t = &report["timings"];
    assert!(t["load_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(t["ttft_ms"].as_array().unwrap().len(), 2);
    assert!(t["decode_tok_s_p50"].as_f64().unwrap() > 0.0);
    assert!(t["decode_tok_s_p95"].as_f64().is_some());
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0);
    let m = &report["memory"];
    assert!(m["kv_cache_bytes"].as_u64().unwrap() > 0);
    assert!(m["estimate_bytes"].as_u64() < m["device_mem_total_bytes"].as_u64());
}

#[test]
fn validate_under_qemu_matches_the_host_and_reports_timings() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = arm64_archive(tmp.path());
    std::fs::write(tmp.path().join("prompts.txt"), PROMPTS).unwrap();
    let mut args = validate_args(&archive, "qemu");
    args.extend(["--threads".to_string(), "2".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = alc(tmp.path(), &args).ok().json();
    assert_passed(&report);
    assert_eq!(report["threads"], 2, "--threads reaches the runner");
    assert_eq!(report["device"], "qemu-aarch64");
    assert_eq!(report["target"], "linux-arm64");
    assert_eq!(report["device_facts"]["arch"], "aarch64");

    // A context whose KV cache cannot fit the device is refused before anything runs.
    let mut big = validate_args(&archive, "qemu");
    let i = big.iter().position(|a| a == "--context").unwrap();
    big[i + 1] = (1usize << 40).to_string();
    let big: Vec<&str> = big.iter().map(String::as_str).collect();
    let run = alc(tmp.path(), &big);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["checks"][0]["name"], "memory");
    let detail = report["checks"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("does not fit"), "{detail}");
    assert!(report["tokens_match"].is_null());
}

/// Runs `alc` with the stand-in adb first on PATH, its device state set to `state`.
fn alc_with_standin_adb(dir: &Path, args: &[String], state: &str) -> Run {
    with_standin_adb(env!("CARGO_BIN_EXE_alc"), dir, args, state)
}

/// Runs `bin` (`alc` or `aon`) with the stand-in adb first on PATH, its device state set to
/// `state`; the stand-in logs to `dir/adb.log` and keeps pushed files under `dir/device`.
pub fn with_standin_adb(bin: &str, dir: &Path, args: &[String], state: &str) -> Run {
    let tools = dir.join("bin");
    std::fs::create_dir_all(&tools).unwrap();
    for (name, text) in [("adb", STANDIN_ADB), ("getprop", STANDIN_GETPROP)] {
        let path = tools.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", tools.display(), std::env::var("PATH").unwrap());
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("ADB_STANDIN_LOG", dir.join("adb.log"))
        .env("ADB_STANDIN_ROOT", dir.join("device"))
        .env("ADB_STANDIN_STATE", state)
        .env_remove("AVA_CACHE_DIR")
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn validate_over_a_standin_adb_pushes_runs_and_parses() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = arm64_archive(tmp.path());
    std::fs::write(tmp.path().join("prompts.txt"), PROMPTS).unwrap();
    let args = validate_args(&archive, "adb:STANDIN1");

    // No device and an unauthorized one: exit 2 with adb's own message, nothing pushed.
    for (state, says) in [
        ("none", "no devices/emulators found"),
        ("unauthorized", "device unauthorized"),
    ] {
        let run = alc_with_standin_adb(tmp.path(), &args, state);
        assert_eq!(run.code, 2, "{state}: {}", run.stderr);
        assert!(run.stderr.contains(says), "{}", run.stderr);
        assert_eq!(run.json()["unreachable"], true);
    }
    let log = std::fs::read_to_string(tmp.path().join("adb.log")).unwrap();
    assert_eq!(log, "-s STANDIN1 get-state\n".repeat(2));
    std::fs::remove_file(tmp.path().join("adb.log")).unwrap();

    let run = alc_with_standin_adb(tmp.path(), &args, "device");
    let report = run.ok().json();
    assert_passed(&report);
    assert_eq!(report["device"], "adb:STANDIN1");
    assert_eq!(report["device_facts"]["model"], "Stand-in Phone");
    assert_eq!(report["device_facts"]["android_version"], "14");

    let log = std::fs::read_to_string(tmp.path().join("adb.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "-s STANDIN1 get-state", "{log}");
    let remote = lines[1]
        .strip_prefix("-s STANDIN1 shell mkdir -p ")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(remote.starts_with("/data/local/tmp/ava-validate-"), "{log}");
    let name = archive.file_name().unwrap().to_str().unwrap();
    assert!(lines[2].starts_with("-s STANDIN1 push "), "{log}");
    assert!(
        lines[2].ends_with(&format!("ava-runner {remote}/ava-runner")),
        "{log}"
    );
    assert!(
        lines[3].ends_with(&format!("{name} {remote}/{name}")),
        "{log}"
    );
    assert!(
        lines[4].ends_with(&format!(" {remote}/prompts.txt")),
        "{log}"
    );
    assert!(
        lines[5].ends_with(&format!(" {remote}/forced.txt")),
        "{log}"
    );
    let run = format!("-s STANDIN1 shell cd {remote} && chmod 755 ava-runner && ./ava-runner");
    assert_eq!(lines[6], format!("{run} --facts"));
    let expected = format!(
        "{run} {name} --prompts prompts.txt --backend auto --max-new-tokens 6 --context 64 \
         --force forced.txt --top 16 --kv-cache f16"
    );
    assert_eq!(lines[7], expected);
    assert_eq!(lines[8], format!("-s STANDIN1 shell rm -rf {remote}"));
    assert_eq!(lines.len(), 9, "{log}");
}
