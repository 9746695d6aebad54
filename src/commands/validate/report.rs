//! What `alc validate` and `aon validate` share in their reports: the checks, the exit codes,
//! reading the runner's report (`ava_runtime::runner_report`) and its statistics.

use std::io::Write as _;
use std::process::{ExitCode, Output};

use ava_runtime::runner_report::{Status, REPORT_VERSION};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ui::{human_bytes, Ui};

/// Exit code when a check fails.
const EXIT_CHECK_FAILED: u8 = 1;
/// Exit code when the device cannot be reached (no device, unauthorized, offline).
const EXIT_UNREACHABLE: u8 = 2;

/// The device could not be reached; the message is the transport's own.
#[derive(Debug)]
pub(super) struct Unreachable(pub(super) String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device unreachable: {}", self.0)
    }
}

impl std::error::Error for Unreachable {}

/// What both validate verbs print: a JSON report, or its human form.
pub(super) trait Outcome: Serialize {
    /// Every check passed.
    fn ok(&self) -> bool;
    /// The human-readable report.
    fn human(&self) -> String;
}

/// Prints a report (or the error) and maps it to the exit code.
pub(super) fn exit<R: Outcome>(ui: &Ui, result: anyhow::Result<R>) -> ExitCode {
    match result {
        Ok(report) => {
            let ok = report.ok();
            if let Err(e) = ui.result(&report, || report.human()) {
                return crate::finish(ui, Err(e));
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_CHECK_FAILED)
            }
        }
        Err(e) => match e.downcast_ref::<Unreachable>() {
            Some(Unreachable(msg)) => {
                eprintln!("{}: error: device unreachable: {msg}", ui.tool.name());
                if ui.json {
                    let value =
                        serde_json::json!({ "ok": false, "unreachable": true, "error": msg });
                    let _ = writeln!(std::io::stdout(), "{value}");
                }
                ExitCode::from(EXIT_UNREACHABLE)
            }
            None => crate::finish(ui, Err(e)),
        },
    }
}

/// ` on N threads`, when the runner said.
pub(super) fn on_threads(threads: Option<usize>) -> String {
    threads
        .map(|n| format!(" on {n} threads"))
        .unwrap_or_default()
}

/// One named check of a report and its verdict.
#[derive(Serialize)]
pub(super) struct Check {
    pub(super) name: &'static str,
    pub(super) ok: bool,
    pub(super) detail: String,
}

/// The first lines of a human report: verdict and checks.
pub(super) fn human_head(
    archive: &str,
    device: &str,
    target: &str,
    ok: bool,
    checks: &[Check],
) -> String {
    let mut s = format!(
        "{archive} on {device} ({target}): {}\n",
        if ok { "PASS" } else { "FAIL" }
    );
    for c in checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        s.push_str(&format!("  {mark} {:<11} {}\n", c.name, c.detail));
    }
    s
}

/// The `memory` check: `estimate` (made of `breakdown`) against the device's `MemTotal`.
pub(super) fn fits_check(estimate: u64, device_total: Option<u64>, breakdown: &str) -> Check {
    let (ok, detail) = match device_total {
        None => (
            false,
            "the device did not report MemTotal; cannot check the estimate".to_string(),
        ),
        Some(total) if estimate > total => (
            false,
            format!(
                "does not fit: estimate {} ({breakdown}) > device RAM {}; not run",
                human_bytes(estimate),
                human_bytes(total)
            ),
        ),
        Some(total) => (
            true,
            format!(
                "estimate {} of device RAM {}",
                human_bytes(estimate),
                human_bytes(total)
            ),
        ),
    };
    Check {
        name: "memory",
        ok,
        detail,
    }
}

/// The runner's report from its output (its last line of JSON), or the `runner` check's
/// failure detail.
pub(super) fn runner_report<T: DeserializeOwned>(out: &Output) -> Result<T, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok());
    let status = parsed
        .as_ref()
        .and_then(|v| Status::deserialize(v).ok())
        .unwrap_or_default();
    match parsed {
        Some(v) if status.ok && status.report_version == Some(REPORT_VERSION) => {
            T::deserialize(v).map_err(|e| format!("malformed runner report: {e}"))
        }
        _ => Err(status.error.unwrap_or_else(|| {
            format!(
                "exit {:?}, no report: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })),
    }
}

/// The finite values of `values` (a `null` in the report, read as NaN, is left out).
pub(super) fn finite(values: impl Iterator<Item = f64>) -> Vec<f64> {
    values.filter(|v| v.is_finite()).collect()
}

/// `Some(v)` when `v` is finite.
pub(super) fn finite_one(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Nearest-rank percentile.
pub(super) fn percentile(values: &[f64], p: usize) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len()).div_ceil(100).max(1);
    v.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 50), Some(3.0));
        assert_eq!(percentile(&v, 95), Some(5.0));
        assert_eq!(percentile(&[], 50), None);
    }
}
