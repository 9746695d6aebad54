//! Deployment targets: the platforms packages are built for, by short name and Rust triple.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A platform a model package can be built for.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Target {
    /// Android on 64-bit ARM (phones).
    #[serde(rename = "android-arm64")]
    AndroidArm64,
    /// Linux (glibc) on 64-bit ARM (boards, servers).
    #[serde(rename = "linux-arm64")]
    LinuxArm64,
    /// Linux (glibc) on x86-64.
    #[serde(rename = "linux-x86_64")]
    LinuxX86_64,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 3] = [
        Target::AndroidArm64,
        Target::LinuxArm64,
        Target::LinuxX86_64,
    ];

    /// Short name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Target::AndroidArm64 => "android-arm64",
            Target::LinuxArm64 => "linux-arm64",
            Target::LinuxX86_64 => "linux-x86_64",
        }
    }

    /// Rust target triple.
    pub fn triple(self) -> &'static str {
        match self {
            Target::AndroidArm64 => "aarch64-linux-android",
            Target::LinuxArm64 => "aarch64-unknown-linux-gnu",
            Target::LinuxX86_64 => "x86_64-unknown-linux-gnu",
        }
    }

    /// The target this program was compiled for, if it is one of ours.
    pub fn host() -> Option<Target> {
        if cfg!(all(target_os = "android", target_arch = "aarch64")) {
            Some(Target::AndroidArm64)
        } else if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
            Some(Target::LinuxArm64)
        } else if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            Some(Target::LinuxX86_64)
        } else {
            None
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = Error;

    /// Accepts a short name (`linux-arm64`) or a triple (`aarch64-unknown-linux-gnu`).
    fn from_str(s: &str) -> Result<Self> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s || t.triple() == s)
            .ok_or_else(|| Error::Parse {
                what: "target",
                value: s.to_string(),
                valid: Target::ALL.map(Target::name).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_by_name_and_triple() -> Result<()> {
        for t in Target::ALL {
            assert_eq!(t.name().parse::<Target>()?, t);
            assert_eq!(t.triple().parse::<Target>()?, t);
            assert_eq!(t.to_string(), t.name());
            let json = serde_json::to_string(&t).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", t.name()));
        }
        Ok(())
    }

    #[test]
    fn unknown_target_lists_valid_names() {
        let msg = "ios-arm64".parse::<Target>().unwrap_err().to_string();
        assert!(msg.contains("ios-arm64"), "{msg}");
        assert!(
            msg.contains("android-arm64, linux-arm64, linux-x86_64"),
            "{msg}"
        );
    }

    #[test]
    fn host_is_known_on_ci_platforms() {
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(Target::host(), Some(Target::LinuxX86_64));
        }
    }
}
