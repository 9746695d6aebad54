//! How the runner and its files reach a device: the host itself, qemu-aarch64, or adb.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context};
use ava_runtime::runner_report::{DeviceFacts, FactsReport};

use super::report::Unreachable;
use super::{ADB_ROOT, QEMU};
use crate::args::validate::Device;

/// A device with the runner, the archive and the runner's input files on it.
pub(super) struct Transport {
    device: Device,
    /// host: where the files are; qemu: the temporary directory; adb: the host-side staging.
    dir: tempfile::TempDir,
    archive: PathBuf,
    /// adb: the directory on the device.
    remote: String,
    /// The input files written next to the runner (pushed in this order).
    files: Vec<&'static str>,
}

impl Transport {
    /// Puts the runner, the archive and `files` (name, content) where the runner runs.
    pub(super) fn new(
        device: &Device,
        runner: &Path,
        archive: &Path,
        files: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ava-validate-")
            .tempdir()
            .context("creating a temporary directory")?;
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text)
                .with_context(|| format!("writing {name}"))?;
        }
        let archive = std::path::absolute(archive).context("resolving the archive path")?;
        let remote = format!(
            "{ADB_ROOT}/{}",
            dir.path().file_name().unwrap_or_default().to_string_lossy()
        );
        let t = Transport {
            device: device.clone(),
            dir,
            archive,
            remote,
            files: files.iter().map(|(name, _)| *name).collect(),
        };
        match device {
            Device::Host | Device::Qemu => {
                std::fs::copy(runner, t.dir.path().join("ava-runner"))
                    .with_context(|| format!("copying {}", runner.display()))?;
            }
            Device::Adb(_) => t.adb_push(runner, archive_name(&t.archive))?,
        }
        Ok(t)
    }

    pub(super) fn label(&self) -> String {
        match &self.device {
            Device::Host => "host".into(),
            Device::Qemu => "qemu-aarch64".into(),
            Device::Adb(None) => "adb".into(),
            Device::Adb(Some(s)) => format!("adb:{s}"),
        }
    }

    /// `ava-runner --facts`.
    pub(super) fn facts(&mut self) -> anyhow::Result<DeviceFacts> {
        let out = self.exec(&["--facts".to_string()])?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let facts = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<FactsReport>(l.trim()).ok())
            .with_context(|| {
                format!(
                    "ava-runner --facts printed no report (exit {:?}): {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        Ok(facts.device)
    }

    /// The archive's path as the runner sees it.
    pub(super) fn archive_arg(&self) -> String {
        match self.device {
            Device::Adb(_) => archive_name(&self.archive).to_string(),
            _ => self.archive.display().to_string(),
        }
    }

    /// Runs the runner with `argv` in its directory on the device.
    pub(super) fn exec(&self, argv: &[String]) -> anyhow::Result<Output> {
        let dir = self.dir.path();
        let mut cmd = match &self.device {
            Device::Host => Command::new(dir.join("ava-runner")),
            Device::Qemu => {
                let mut c = Command::new(QEMU[0]);
                c.args(&QEMU[1..]).arg("./ava-runner");
                c
            }
            Device::Adb(_) => {
                let line = format!(
                    "cd {} && chmod 755 ava-runner && ./ava-runner {}",
                    self.remote,
                    argv.join(" ")
                );
                let mut c = self.adb();
                c.args(["shell", &line]);
                return c.output().context("running adb shell");
            }
        };
        cmd.args(argv).current_dir(dir);
        cmd.output()
            .with_context(|| format!("running {:?}", cmd.get_program()))
    }

    pub(super) fn adb(&self) -> Command {
        let mut c = Command::new("adb");
        if let Device::Adb(Some(serial)) = &self.device {
            c.args(["-s", serial]);
        }
        c
    }

    /// Pushes the runner, the archive and the input files (the state was checked first).
    pub(super) fn adb_push(&self, runner: &Path, archive_name: &str) -> anyhow::Result<()> {
        self.adb_ok(&["shell", &format!("mkdir -p {}", self.remote)])?;
        let inputs: Vec<(PathBuf, &str)> = self
            .files
            .iter()
            .map(|name| (self.dir.path().join(name), *name))
            .collect();
        let pushes = [
            (runner.to_path_buf(), "ava-runner"),
            (self.archive.clone(), archive_name),
        ]
        .into_iter()
        .chain(inputs);
        for (local, name) in pushes {
            let local = local.to_string_lossy();
            self.adb_ok(&["push", &local, &format!("{}/{name}", self.remote)])?;
        }
        Ok(())
    }

    pub(super) fn adb_ok(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = self.adb().args(args).output().context("running adb")?;
        if !out.status.success() {
            bail!(
                "adb {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Transport {
    /// Removes the pushed files from an adb device, whatever happened (local files go with
    /// the temporary directory).
    fn drop(&mut self) {
        if matches!(self.device, Device::Adb(_)) {
            let _ = self.adb_ok(&["shell", &format!("rm -rf {}", self.remote)]);
        }
    }
}

/// `adb get-state`: anything but `device` (no device, unauthorized, offline, several devices
/// and no serial) is [`Unreachable`] with adb's own message.
pub(super) fn adb_state(serial: Option<&str>) -> anyhow::Result<()> {
    let mut cmd = Command::new("adb");
    if let Some(serial) = serial {
        cmd.args(["-s", serial]);
    }
    let out = cmd
        .arg("get-state")
        .output()
        .map_err(|e| Unreachable(format!("running adb (Debian package `adb`): {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && stdout == "device" {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let msg = [stderr, stdout]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    Err(Unreachable(if msg.is_empty() {
        "adb get-state failed".into()
    } else {
        msg
    })
    .into())
}

/// The last `n` lines of `text`.
pub(super) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(super) fn archive_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model.tar")
}
