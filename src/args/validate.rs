//! Arguments of `alc validate` and `aon validate`.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, ValueEnum};

use crate::args::run::{Backend, KvCache};

/// Where the archive runs.
#[derive(Clone, PartialEq, Eq)]
pub enum Device {
    /// This machine, directly.
    Host,
    /// `qemu-aarch64 -L /usr/aarch64-linux-gnu` in a temporary directory.
    Qemu,
    /// An Android device through the `adb` client, optionally by serial.
    Adb(Option<String>),
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Host => f.write_str("host"),
            Device::Qemu => f.write_str("qemu"),
            Device::Adb(None) => f.write_str("adb"),
            Device::Adb(Some(serial)) => write!(f, "adb:{serial}"),
        }
    }
}

/// The `--device` spelling: messages that format a device with `{:?}` show what the user typed.
impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(Device::Host),
            "qemu" => Ok(Device::Qemu),
            "adb" => Ok(Device::Adb(None)),
            _ => match s.strip_prefix("adb:") {
                Some(serial) if !serial.is_empty() => Ok(Device::Adb(Some(serial.to_string()))),
                _ => Err(format!(
                    "unknown device `{s}` (expected host, qemu, adb or adb:SERIAL)"
                )),
            },
        }
    }
}

/// How the runner binary is built when `alc validate` builds it.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerProfile {
    /// Optimized: the timings mean something.
    Release,
    /// Unoptimized, quicker to build (CI smoke tests).
    Dev,
}

/// `alc validate PKG --device host|qemu|adb[:SERIAL]`.
#[derive(Args, Clone, Debug)]
pub struct ValidateArgs {
    /// The archive (`.tar`) to validate.
    #[arg(value_name = "PKG")]
    pub archive: PathBuf,
    /// Where to run it: `host`, `qemu` (qemu-aarch64) or `adb[:SERIAL]`.
    #[arg(long, value_name = "DEVICE")]
    pub device: Device,
    /// Prompts, one per line as token ids separated by spaces or commas (default: a few
    /// built-in sentences tokenized with the archive's tokenizer).
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Tokens generated per prompt (greedy, EOS ignored).
    #[arg(long, default_value_t = 32, value_parser = crate::args::bounds::positive)]
    pub max_new_tokens: usize,
    /// Context the KV cache is sized for (the memory estimate uses it).
    #[arg(long, default_value_t = 4096, value_parser = crate::args::bounds::positive)]
    pub context: usize,
    /// How the KV cache stores keys and values (host reference and device alike).
    #[arg(long, value_enum, default_value_t = KvCache::F16)]
    pub kv_cache: KvCache,
    /// Which kernels the device runs (the host reference always runs `native`).
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// Absolute part of the tolerance: a step's largest logit difference may be at most
    /// `X + R * scale`, the scale being the host's largest |logit| at that step; a different
    /// greedy token where the host's margin between the two is within that is a near-tie, not
    /// a failure (default per weight format: docs/runtime.md, "Numerical contract"; given
    /// alone, either flag is the whole tolerance).
    #[arg(long, value_name = "X", value_parser = tolerance)]
    pub tolerance: Option<f32>,
    /// Relative part of the tolerance (`R` above).
    #[arg(long, value_name = "R", value_parser = tolerance)]
    pub rel_tolerance: Option<f32>,
    #[command(flatten)]
    pub trust: super::TrustArgs,
    /// Runner options.
    #[command(flatten)]
    pub runner: RunnerArgs,
}

fn tolerance(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("`{s}` is not a finite number >= 0")),
    }
}

/// Where the runner comes from (both validate verbs).
#[derive(Args, Clone, Debug)]
pub struct RunnerArgs {
    /// A prebuilt `ava-runner` for the device's target (default: `ava-runner-<triple>` next
    /// to this binary, else built with cargo from this checkout).
    #[arg(long, value_name = "FILE")]
    pub runner: Option<PathBuf>,
    /// Cargo profile of a runner this command builds.
    #[arg(long, value_enum, default_value_t = RunnerProfile::Release)]
    pub runner_profile: RunnerProfile,
    /// Threads the runner computes on, on the device (default: one per device core).
    #[arg(long, value_name = "N", value_parser = crate::args::bounds::threads)]
    pub threads: Option<usize>,
}

impl RunnerArgs {
    /// `--threads N` for the runner's command line, when given.
    pub fn threads_argv(&self) -> Vec<String> {
        self.threads
            .map(|n| vec!["--threads".to_string(), n.to_string()])
            .unwrap_or_default()
    }
}

/// Default number of utterances `aon validate` classifies.
pub const DEFAULT_MAX_UTTERANCES: usize = 100;

/// `aon validate PKG --device ... [--data FILE]`.
#[derive(Args, Clone, Debug)]
pub struct AonValidateArgs {
    /// The archive (`.tar`) to validate (an `aon compile` output).
    #[arg(value_name = "PKG")]
    pub archive: PathBuf,
    /// Where to run it: `host`, `qemu` (qemu-aarch64) or `adb[:SERIAL]`.
    #[arg(long, value_name = "DEVICE")]
    pub device: Device,
    /// Utterances: CLINC150 JSON or JSONL `{"text", "intent"}` (labelled: accuracy is
    /// reported), or text lines (default: the archive's own label names as utterances).
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Split of `--data` to take utterances from.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Utterances classified, evenly spaced over the split (or the labels).
    #[arg(long, default_value_t = DEFAULT_MAX_UTTERANCES, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub max_utterances: usize,
    #[command(flatten)]
    pub trust: super::TrustArgs,
    /// Runner options.
    #[command(flatten)]
    pub runner: RunnerArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_print_as_typed() {
        for text in ["host", "qemu", "adb", "adb:emulator-5554"] {
            let device: Device = text.parse().unwrap();
            assert_eq!(device.to_string(), text);
            assert_eq!(format!("{device:?}"), text);
        }
    }
}
