//! `alc validate` on a constructed near-tie, through its report: a STAND-IN runner (a shell
//! script around the real host runner, not a device) replays the real runner's report with the
//! top two tokens of one step swapped, as a device whose float ordering flipped them would
//! report. Within the tolerance that step is a near-tie, listed with the host's margin, and
//! the comparison goes on (teacher forcing); with a tolerance below the margin it is the first
//! divergence and validate fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{json, Value};

use crate::common::package_tiny;
use crate::{alc, Run};

/// Token-id prompts of the tiny fixture.
const PROMPTS: &str = "2 10 20 30\n2 5 6\n";
/// The swapped step is the one with the smallest top-two margin at least this large, so
/// that half of it is still far above a last-bit difference.
const MIN_MARGIN: f32 = 1e-3;

/// The STAND-IN runner: `--facts` and the first run go to the real runner (`@REAL@`), whose
/// report is kept in `@RECORD@`; once `@REPLAY@` exists, runs print it instead.
const STANDIN_RUNNER: &str = r#"#!/bin/sh
# STAND-IN for ava-runner, used by tests/cli/validate_ties.rs only.
case "$1" in --facts) exec "@REAL@" "$@" ;; esac
if [ -f "@REPLAY@" ]; then cat "@REPLAY@"; exit 0; fi
"@REAL@" "$@" > "@RECORD@"
status=$?
cat "@RECORD@"
exit $status
"#;

/// `alc validate ARCHIVE --device host` of the prompts with the native backend, `extra`
/// appended.
fn validate(dir: &Path, archive: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "validate",
        archive.to_str().unwrap(),
        "--device",
        "host",
        "--backend",
        "native",
        "--prompts",
        "prompts.txt",
        "--max-new-tokens",
        "12",
        "--context",
        "64",
        "--runner-profile",
        "dev",
    ];
    args.extend_from_slice(extra);
    alc(dir, &args)
}

/// The last JSON line of a runner's stdout.
fn runner_report(stdout: &str) -> Value {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .expect("a runner report")
}

/// The two highest logits of a step's `top` list: `((id, logit), (id, logit))`.
fn top_two(top: &Value) -> ((u32, f32), (u32, f32)) {
    let mut pairs: Vec<(u32, f32)> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
        .collect();
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    (pairs[0], pairs[1])
}

/// Swaps the top two tokens of the step of `report` with the smallest margin of at least
/// [`MIN_MARGIN`]: the device now picks the runner-up. Returns (prompt, step, the host's
/// token, the device's, the margin).
fn swap_closest_step(report: &mut Value) -> (usize, usize, u32, u32, f32) {
    let mut best: Option<(usize, usize, u32, u32, f32)> = None;
    for (p, prompt) in report["prompts"].as_array().unwrap().iter().enumerate() {
        for (s, top) in prompt["top"].as_array().unwrap().iter().enumerate() {
            let ((a, la), (b, lb)) = top_two(top);
            assert_eq!(
                prompt["tokens"][s], a,
                "the runner's argmax heads its top list"
            );
            let margin = la - lb;
            if margin >= MIN_MARGIN && best.is_none_or(|x| margin < x.4) {
                best = Some((p, s, a, b, margin));
            }
        }
    }
    let (p, s, a, b, margin) = best.expect("a step with a margin");
    let step = &mut report["prompts"][p];
    step["tokens"][s] = json!(b);
    let top = step["top"][s].as_array_mut().unwrap();
    for pair in top.iter_mut() {
        if pair[0] == a {
            pair[0] = json!(b);
        } else if pair[0] == b {
            pair[0] = json!(a);
        }
    }
    (p, s, a, b, margin)
}

#[test]
fn a_constructed_near_tie_passes_within_the_tolerance_and_fails_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let archive = package_tiny(dir);
    std::fs::write(dir.join("prompts.txt"), PROMPTS).unwrap();

    // The real runner, as a plain run finds or builds it: the host's bits exactly.
    let plain = validate(dir, &archive, &["--json", "--threads", "1"])
        .ok()
        .json();
    assert_eq!(plain["tokens_match"], true, "{plain:#}");
    assert_eq!(plain["threads"], 1, "--threads reaches the runner");
    assert_eq!(plain["max_logit_diff"]["value"], 0.0);
    let real = plain["runner"].as_str().unwrap();

    let standin = dir.join("standin-runner");
    let (record, replay) = (dir.join("record.json"), dir.join("replay.json"));
    let script = STANDIN_RUNNER
        .replace("@REAL@", real)
        .replace("@RECORD@", record.to_str().unwrap())
        .replace("@REPLAY@", replay.to_str().unwrap());
    std::fs::write(&standin, script).unwrap();
    std::fs::set_permissions(&standin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let runner = ["--runner", standin.to_str().unwrap()];
    let mut args = runner.to_vec();
    args.push("--json");
    let recorded = validate(dir, &archive, &args).ok().json();
    assert_eq!(recorded["near_ties"], json!([]));

    let mut report = runner_report(&std::fs::read_to_string(&record).unwrap());
    let (p, s, expected, got, margin) = swap_closest_step(&mut report);
    let steps: usize = report["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tokens"].as_array().unwrap().len())
        .sum();
    std::fs::write(&replay, report.to_string()).unwrap();

    // Within the tolerance: a near-tie with the host's margin; the later steps still compared.
    let within = (2.0 * margin).to_string();
    let mut args = runner.to_vec();
    args.extend(["--tolerance", &within, "--json"]);
    let run = validate(dir, &archive, &args);
    let report = run.json();
    assert_eq!(run.code, 0, "{report:#}\n{}", run.stderr);
    assert_eq!(report["ok"], true);
    assert_eq!(report["tokens_match"], false);
    assert!(report["first_divergence"].is_null());
    let ties = report["near_ties"].as_array().unwrap();
    assert_eq!(ties.len(), 1, "{report:#}");
    let tie = &ties[0];
    assert_eq!(
        (&tie["prompt"], &tie["token"], &tie["expected"], &tie["got"]),
        (&json!(p), &json!(s), &json!(expected), &json!(got))
    );
    assert_eq!(tie["margin"].as_f64().unwrap() as f32, margin);
    // The swapped logits are the step's only difference from the host.
    let worst = &report["max_logit_diff"];
    assert_eq!((&worst["prompt"], &worst["token"]), (&json!(p), &json!(s)));
    assert_eq!(worst["value"].as_f64().unwrap() as f32, margin);
    // The same bound as a relative tolerance alone: R times the host's scale at that step.
    let rel = (2.0 * f64::from(margin) / worst["scale"].as_f64().unwrap()).to_string();
    let mut args = runner.to_vec();
    args.extend(["--rel-tolerance", &rel, "--json"]);
    let relative = validate(dir, &archive, &args).ok().json();
    assert_eq!(relative["tolerance"], 0.0);
    let ties = relative["near_ties"].as_array().unwrap();
    assert_eq!(ties.len(), 1, "{relative:#}");
    let t = ties[0]["tolerance"].as_f64().unwrap();
    assert!((t - 2.0 * f64::from(margin)).abs() < 1e-6, "{relative:#}");
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tokens")
        .unwrap();
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("{steps} steps within")) && detail.contains("1 near-tie"),
        "{detail}"
    );
    // The human report names it.
    let mut args = runner.to_vec();
    args.extend(["--tolerance", &within]);
    let human = validate(dir, &archive, &args).ok().stdout;
    let line = format!("near-tie: prompt {p} token {s}: host {expected} device {got}");
    assert!(human.contains(&line), "{human}");

    // Outside it: the first divergence, with the same margin; no near-tie.
    let outside = (margin / 2.0).to_string();
    let mut args = runner.to_vec();
    args.extend(["--tolerance", &outside, "--json"]);
    let run = validate(dir, &archive, &args);
    let report = run.json();
    assert_eq!(run.code, 1, "{report:#}\n{}", run.stderr);
    assert_eq!(report["ok"], false);
    assert_eq!(report["near_ties"], json!([]));
    let d = &report["first_divergence"];
    assert_eq!(
        (&d["prompt"], &d["token"], &d["expected"], &d["got"]),
        (&json!(p), &json!(s), &json!(expected), &json!(got))
    );
    assert_eq!(d["margin"].as_f64().unwrap() as f32, margin);
}
