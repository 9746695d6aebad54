//! `alc validate` / `aon validate`: run an archive on a device with the `ava-runner` binary
//! (runtime/src/bin/ava-runner.rs), compare its greedy tokens (or, for a classifier, its labels
//! and logits: [`aon`]) with a host reference run, check the memory estimate against the
//! device's RAM and report (docs/validate.md).
//!
//! Exit codes: 0 every check passed, 1 a check failed (or an error), 2 the device is
//! unreachable, unauthorized or offline.

use std::process::ExitCode;

use crate::args::validate::{AonValidateArgs, ValidateArgs};
use crate::ui::Ui;

/// Where files are pushed on an Android device (world-writable, executable).
const ADB_ROOT: &str = "/data/local/tmp";
/// The qemu command of `--device qemu` (Debian `qemu-user` + `libc6-dev-arm64-cross`).
const QEMU: [&str; 3] = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"];

mod alc;
mod aon;
mod compare;
mod report;
mod runner;
mod transport;

/// Runs `alc validate`; returns the process exit code.
pub fn run(args: &ValidateArgs, ui: &Ui) -> ExitCode {
    report::exit(ui, alc::validate(args, ui))
}

/// Runs `aon validate`; returns the process exit code.
pub fn run_aon(args: &AonValidateArgs, ui: &Ui) -> ExitCode {
    report::exit(ui, aon::validate(args, ui))
}

#[cfg(test)]
mod tests {
    use crate::args::validate::Device;

    #[test]
    fn devices_parse() {
        assert_eq!(
            "adb:XYZ".parse::<Device>(),
            Ok(Device::Adb(Some("XYZ".into())))
        );
        assert_eq!("qemu".parse::<Device>(), Ok(Device::Qemu));
        assert!("adb:".parse::<Device>().is_err());
    }
}
