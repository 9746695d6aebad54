//! Target specs: the TVM JSON-dict target, vector width and required CPU features of each
//! (target, CPU preset) pair.

use ava_core::Target;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// A CPU preset: what LLVM is told about the processor, and what the runtime must find on the
/// running CPU before it uses the library (an unsupported instruction would crash the process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuPreset {
    /// Name on the command line (`--cpu`).
    pub name: &'static str,
    /// LLVM `mcpu`, if any.
    pub mcpu: Option<&'static str>,
    /// LLVM `mattr` features.
    pub mattr: &'static [&'static str],
    /// CPU features the runtime checks for (std's `is_*_feature_detected!` names).
    pub requires: &'static [&'static str],
    /// f32 lanes the matrix kernels reduce over (two vector registers' worth).
    pub lanes: u32,
}

const X86_PRESETS: &[CpuPreset] = &[
    CpuPreset {
        name: "x86-64",
        mcpu: Some("x86-64"),
        mattr: &[],
        requires: &[],
        lanes: 8,
    },
    CpuPreset {
        name: "haswell",
        mcpu: Some("haswell"),
        mattr: &[],
        requires: &["avx2", "fma"],
        lanes: 16,
    },
    CpuPreset {
        name: "skylake-avx512",
        mcpu: Some("skylake-avx512"),
        mattr: &[],
        requires: &["avx2", "fma", "avx512f", "avx512bw"],
        lanes: 32,
    },
    CpuPreset {
        name: "cascadelake",
        mcpu: Some("cascadelake"),
        mattr: &[],
        requires: &["avx2", "fma", "avx512f", "avx512bw", "avx512vnni"],
        lanes: 32,
    },
];

const ARM_PRESETS: &[CpuPreset] = &[
    CpuPreset {
        name: "generic",
        mcpu: None,
        mattr: &["+neon"],
        requires: &[],
        lanes: 8,
    },
    CpuPreset {
        name: "cortex-a55",
        mcpu: Some("cortex-a55"),
        mattr: &["+neon", "+dotprod"],
        requires: &["dotprod"],
        lanes: 8,
    },
    CpuPreset {
        name: "cortex-a76",
        mcpu: Some("cortex-a76"),
        mattr: &["+neon", "+dotprod"],
        requires: &["dotprod"],
        lanes: 8,
    },
    CpuPreset {
        name: "cortex-x1",
        mcpu: Some("cortex-x1"),
        mattr: &["+neon", "+dotprod"],
        requires: &["dotprod"],
        lanes: 8,
    },
];

/// A target plus the CPU preset its kernels are tuned for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    /// The platform.
    pub target: Target,
    /// The CPU preset.
    pub cpu: CpuPreset,
}

impl TargetSpec {
    /// The spec for `target` with the named preset, or the target's default preset.
    ///
    /// The default for `linux-x86_64` follows the build machine (AVX-512 with VNNI, AVX-512 or
    /// AVX2 when it has them); for arm64 targets it is baseline NEON.
    pub fn new(target: Target, cpu: Option<&str>) -> Result<Self> {
        let presets = presets(target);
        let cpu = match cpu {
            Some(name) => presets
                .iter()
                .find(|p| p.name == name)
                .cloned()
                .ok_or_else(|| Error::UnknownCpu {
                    target,
                    cpu: name.to_string(),
                    valid: presets
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?,
            None => default_preset(target),
        };
        Ok(TargetSpec { target, cpu })
    }

    /// LLVM target triple.
    pub fn llvm_triple(&self) -> &'static str {
        match self.target {
            Target::AndroidArm64 => "aarch64-linux-android",
            Target::LinuxArm64 => "aarch64-linux-gnu",
            _ => "x86_64-unknown-linux-gnu",
        }
    }

    /// The TVM target as a JSON dict (the only form TVM 0.27 accepts).
    pub fn tvm_target(&self) -> Value {
        let mut t = json!({"kind": "llvm", "mtriple": self.llvm_triple()});
        if let Some(mcpu) = self.cpu.mcpu {
            t["mcpu"] = json!(mcpu);
        }
        if !self.cpu.mattr.is_empty() {
            t["mattr"] = json!(self.cpu.mattr);
        }
        t
    }
}

/// The presets a target accepts.
pub fn presets(target: Target) -> &'static [CpuPreset] {
    match target {
        Target::LinuxX86_64 => X86_PRESETS,
        _ => ARM_PRESETS,
    }
}

fn default_preset(target: Target) -> CpuPreset {
    let name = match target {
        Target::LinuxX86_64 => host_x86_preset(),
        _ => "generic",
    };
    presets(target)
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .unwrap_or_else(|| presets(target)[0].clone())
}

#[cfg(target_arch = "x86_64")]
fn host_x86_preset() -> &'static str {
    let avx512 =
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw");
    if avx512 && std::is_x86_feature_detected!("avx512vnni") {
        "cascadelake"
    } else if avx512 {
        "skylake-avx512"
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        "haswell"
    } else {
        "x86-64"
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn host_x86_preset() -> &'static str {
    "haswell"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn android_target_is_a_json_dict_with_neon() {
        let spec = TargetSpec::new(Target::AndroidArm64, Some("cortex-a76")).unwrap();
        let t = spec.tvm_target();
        assert_eq!(t["mtriple"], "aarch64-linux-android");
        assert_eq!(t["mcpu"], "cortex-a76");
        assert_eq!(t["mattr"], json!(["+neon", "+dotprod"]));
    }

    #[test]
    fn unknown_cpu_lists_the_valid_ones() {
        let err = TargetSpec::new(Target::LinuxArm64, Some("m1")).unwrap_err();
        assert!(err.to_string().contains("cortex-a76"), "{err}");
    }
}
