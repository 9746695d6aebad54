//! The runner side of both validate verbs: which target the device runs, finding or building
//! `ava-runner` for it, and the kernel-policy flag passed to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context};
use ava_core::Target;
use ava_packaging::{Manifest, PackageTarget};
use serde_json::Value;

use super::transport::{adb_state, tail_lines, Transport};
use crate::args::validate::{Device, RunnerArgs, RunnerProfile};
use crate::args::TrustArgs;
use crate::ui::Ui;

/// Lines of a failed cargo build shown in the error.
const CARGO_ERROR_LINES: usize = 30;

/// What a validate verb checks: the archives it runs, and the verb for the others.
pub(super) struct Verb {
    /// The manifest's `family`.
    pub family: &'static str,
    /// The refusal of another family: "`alc validate` runs Gemma 3 archives".
    pub runs: &'static str,
    /// The verb that runs the others.
    pub other: &'static str,
}

/// The options both validate verbs share.
pub(super) struct DeviceArgs<'a> {
    pub archive: &'a Path,
    pub device: &'a Device,
    pub runner: &'a RunnerArgs,
    pub trust: &'a TrustArgs,
}

/// A validation under way: the archive's manifest, the target the device runs, the runner.
pub(super) struct Start<'a> {
    args: DeviceArgs<'a>,
    pub manifest: Manifest,
    pub target: Target,
    pub runner: PathBuf,
}

impl<'a> Start<'a> {
    /// Reads the archive's manifest (refusing another family than `verb`'s), picks the target
    /// the device runs, checks that an adb device is reachable and finds or builds the runner.
    pub(super) fn new(args: DeviceArgs<'a>, verb: &Verb, ui: &Ui) -> anyhow::Result<Self> {
        let manifest = ava_packaging::read_manifest(args.archive)
            .with_context(|| format!("reading {}", args.archive.display()))?;
        if manifest.family != verb.family {
            bail!(
                "{}: {}; this one is `{}` (use `{}`)",
                args.archive.display(),
                verb.runs,
                manifest.family,
                verb.other
            );
        }
        let target = device_target(args.device, manifest.target)?;
        if let Device::Adb(serial) = args.device {
            adb_state(serial.as_deref())?;
        }
        let runner = locate_runner(target, args.runner, ui)?;
        ui.detail(format!("runner: {}", runner.display()));
        Ok(Start {
            args,
            manifest,
            target,
            runner,
        })
    }

    /// Puts the runner, the archive and `files` (name, content) on the device.
    pub(super) fn transport(&self, files: &[(&'static str, String)]) -> anyhow::Result<Transport> {
        Transport::new(self.args.device, &self.runner, self.args.archive, files)
    }

    /// Runs the runner on `device` with the archive, then `argv` and the kernel-policy flag;
    /// the device's files are removed before the result is returned.
    pub(super) fn run(
        &self,
        device: Transport,
        argv: &[String],
        ui: &Ui,
    ) -> anyhow::Result<Output> {
        ui.info(format!("running on {}", device.label()));
        let mut full = vec![device.archive_arg()];
        full.extend_from_slice(argv);
        full.extend(kernel_flag(self.args.archive, self.args.trust)?);
        let out = device.exec(&full);
        drop(device);
        out
    }
}

/// `--allow-unsigned-kernels` for the runner when the host's policy allows the archive's
/// kernels (the device runs the very archive checked here; it has no trust store of its own).
fn kernel_flag(archive: &Path, trust: &TrustArgs) -> anyhow::Result<Option<String>> {
    let verified = ava_packaging::read_signed_manifest(archive)
        .with_context(|| format!("reading {}", archive.display()))?;
    let policy = trust.policy(true)?;
    Ok(policy
        .judge(verified.signer.as_ref())
        .is_ok()
        .then(|| "--allow-unsigned-kernels".to_string()))
}

/// The target the runner is built for: the archive's, checked against what the device runs.
fn device_target(device: &Device, archive: PackageTarget) -> anyhow::Result<Target> {
    let natural = match device {
        Device::Host => Target::host().context("this host is not one of the targets")?,
        Device::Qemu => Target::LinuxArm64,
        Device::Adb(_) => Target::AndroidArm64,
    };
    let target = match archive {
        PackageTarget::Any => natural,
        PackageTarget::Native(t) => t,
    };
    let fits = match device {
        Device::Host => target == natural,
        Device::Qemu => target == Target::LinuxArm64,
        Device::Adb(_) => matches!(target, Target::AndroidArm64 | Target::LinuxArm64),
    };
    if !fits {
        bail!("a {target} archive does not run on --device {device:?} (it runs {natural})");
    }
    Ok(target)
}

/// `--runner`, else `ava-runner-<triple>` next to this binary, else a cargo build.
fn locate_runner(target: Target, args: &RunnerArgs, ui: &Ui) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.runner {
        if !path.is_file() {
            bail!("--runner {}: no such file", path.display());
        }
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    let prebuilt = exe.with_file_name(format!("ava-runner-{}", target.triple()));
    if prebuilt.is_file() {
        return Ok(prebuilt);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "no ava-runner for {target}: pass --runner FILE or place {} next to {}",
            prebuilt.display(),
            exe.display()
        );
    }
    build_runner(target, &manifest, args.runner_profile, ui)
}

/// `cargo build -p ava-runtime --bin ava-runner --target T`; cargo's target dir is the cache.
fn build_runner(
    target: Target,
    manifest: &Path,
    profile: RunnerProfile,
    ui: &Ui,
) -> anyhow::Result<PathBuf> {
    ui.info(format!(
        "building ava-runner for {} (cargo)",
        target.triple()
    ));
    let root = manifest.parent().unwrap_or(Path::new("."));
    // Android: `cargo rustc`, to link the binary alone with the NDK-less link arguments.
    let link_args = match target {
        Target::AndroidArm64 => Some(
            ava_targets::android_runner::rustc_link_args(root)
                .context("preparing the NDK-less Android link")?,
        ),
        _ => None,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // From the workspace root: cargo reads .cargo/config.toml (cross linkers) from the cwd.
    cmd.current_dir(root)
        .arg(if link_args.is_some() {
            "rustc"
        } else {
            "build"
        })
        .arg("--manifest-path")
        .arg(manifest)
        .args([
            "-p",
            "ava-runtime",
            "--bin",
            "ava-runner",
            "--features",
            "runner",
        ])
        .args([
            "--target",
            target.triple(),
            "--message-format",
            "json-render-diagnostics",
        ]);
    if profile == RunnerProfile::Release {
        cmd.arg("--release");
    }
    if let Some(args) = &link_args {
        cmd.arg("--").args(args);
    }
    // A make jobserver inherited through a cargo test run names file descriptors that are not
    // the jobserver in this process; a nested cargo must not use them.
    for var in ["MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"] {
        cmd.env_remove(var);
    }
    cmd.stdin(std::process::Stdio::null());
    let out = cmd.output().context("running cargo to build ava-runner")?;
    if !out.status.success() {
        let hint = if target == Target::AndroidArm64 {
            "\nthis links without the NDK (docs/validate.md); with the NDK instead: `cargo ndk \
             -t arm64-v8a build -p ava-runtime --bin ava-runner --features runner --release` \
             and pass --runner"
        } else {
            ""
        };
        bail!(
            "building ava-runner for {} failed:\n{}{hint}",
            target.triple(),
            tail_lines(&String::from_utf8_lossy(&out.stderr), CARGO_ERROR_LINES)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "ava-runner")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo built no ava-runner executable")
}
