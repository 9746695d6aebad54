//! The archive naming scheme: `{family}-{size}-{quantization}-{target}-v{version}.tar[.zst]`.
//!
//! Example: `gemma3-270m-q4bf16-android-arm64-v1.tar`. The package `name` carries family and
//! size (`gemma3-270m`); quantization, target and version come from the manifest.

use crate::manifest::{Manifest, PackageTarget};
use crate::writer::PackageSpec;

/// Extension of an uncompressed archive.
pub const TAR_EXTENSION: &str = ".tar";
/// Extension of a zstd-compressed archive.
pub const TAR_ZST_EXTENSION: &str = ".tar.zst";

/// The conventional file name of an archive with this manifest.
pub fn archive_file_name(manifest: &Manifest, zstd: bool) -> String {
    file_name(
        &manifest.name,
        &manifest.quantization,
        manifest.target,
        &manifest.version,
        zstd,
    )
}

impl PackageSpec {
    /// The conventional file name of the archive this spec describes.
    pub fn file_name(&self, zstd: bool) -> String {
        file_name(
            &self.name,
            &self.quantization,
            self.target,
            &self.version,
            zstd,
        )
    }
}

fn file_name(
    name: &str,
    quantization: &str,
    target: PackageTarget,
    version: &str,
    zstd: bool,
) -> String {
    format!(
        "{}-{}-{}-v{}{}",
        slug(name),
        slug(quantization),
        target,
        slug(version.trim_start_matches('v')),
        if zstd {
            TAR_ZST_EXTENSION
        } else {
            TAR_EXTENSION
        }
    )
}

/// A short parameter-count label: `268_098_176` -> `268m`, `1_000_000_000` -> `1b`,
/// `431_000` -> `431k`.
pub fn size_label(parameters: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "b"), (1_000_000, "m"), (1_000, "k")];
    for (scale, unit) in UNITS {
        if parameters >= scale {
            let whole = parameters / scale;
            let tenth = (parameters % scale) * 10 / scale;
            return if whole < 10 && tenth > 0 {
                format!("{whole}.{tenth}{unit}")
            } else {
                format!("{whole}{unit}")
            };
        }
    }
    parameters.to_string()
}

/// Lower-cases and replaces anything outside `[a-z0-9._]` with `-`.
pub fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(size_label(268_098_176), "268m");
        assert_eq!(size_label(1_000_000_000), "1b");
        assert_eq!(size_label(3_880_000_000), "3.8b");
        assert_eq!(size_label(431_000), "431k");
        assert_eq!(size_label(12), "12");
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Gemma 3 / Tiny"), "gemma-3-tiny");
        assert_eq!(slug("q4bf16"), "q4bf16");
    }
}
