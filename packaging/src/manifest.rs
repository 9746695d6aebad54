//! `manifest.json`: the first entry of every archive, describing all the others.
//!
//! The format is specified in `docs/formats/package-v1.md`; keep the two in step.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use ava_core::checkpoint::{CONFIG_FILE, GENERATION_CONFIG_FILE, LABELS_FILE};
use ava_core::Target;
use serde::{Deserialize, Serialize};

/// The archive format version of unsigned archives (signed ones have
/// [`crate::SIGNED_FORMAT_VERSION`]).
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest entry, always the first entry of the tar stream.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Longest entry path, in bytes: it must fit the ustar `name` field, so no extension header
/// is ever needed for names.
pub const MAX_PATH_BYTES: usize = 100;

/// The parsed `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT_VERSION`], or [`crate::SIGNED_FORMAT_VERSION`] for a signed archive.
    pub format_version: u32,
    /// Package name, e.g. `gemma3-270m`.
    pub name: String,
    /// Package version, a positive integer as a string (`"1"`) or semver.
    pub version: String,
    /// Model family: `gemma3` or `albert`.
    pub family: String,
    /// Quantization of the weights: `bf16`, `f32`, `q4bf16`, `int8`, ...
    pub quantization: String,
    /// Target the archive is built for (`any` when it carries no native code).
    pub target: PackageTarget,
    /// The tool that wrote the archive.
    pub created_by: CreatedBy,
    /// Where the model came from.
    pub source: Source,
    /// Every other entry of the archive, sorted by path.
    pub files: Vec<FileEntry>,
    /// Metadata recorded by pipeline stages, keyed by stage name (`quantize`, `build`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: BTreeMap<String, serde_json::Value>,
}

/// The tool, version and commit that wrote an archive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatedBy {
    /// `alc` or `aon`.
    pub tool: String,
    /// The tool's version.
    pub version: String,
    /// The git commit the tool was built from (`unknown` outside a git checkout).
    pub git_commit: String,
}

/// Provenance of the packaged model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Hub repository id (`google/gemma-3-270m`) or `local`.
    pub repository: String,
    /// Resolved commit or revision, when known.
    #[serde(default)]
    pub revision: Option<String>,
    /// sha256 of each input file, by path relative to the input.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// One archive entry as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path inside the archive (`/`-separated).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the contents.
    pub sha256: String,
    /// What the file is for.
    pub role: Role,
}

/// What an archive entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Model weights (safetensors, ONNX, ...): stored 4096-byte aligned.
    Weights,
    /// Model configuration (config.json, generation config, weight index).
    Config,
    /// Tokenizer files.
    Tokenizer,
    /// A native kernel library (`lib/<target>/libmodel.so`): stored 4096-byte aligned.
    Library,
    /// Class labels of a classifier.
    Labels,
    /// Anything else the model needs (kernel tables, notes).
    Other,
}

impl Role {
    /// The role a file gets from its path when nothing says otherwise.
    pub fn from_path(path: &str) -> Role {
        let name = path.rsplit('/').next().unwrap_or(path);
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        match (name, ext) {
            (LABELS_FILE, _) => Role::Labels,
            (n, _) if n.starts_with("tokenizer") || n == "special_tokens_map.json" => {
                Role::Tokenizer
            }
            ("spiece.model" | "vocab.txt" | "merges.txt" | "vocab.json", _) => Role::Tokenizer,
            (_, "safetensors" | "onnx" | "gguf" | "bin") => Role::Weights,
            (_, "so" | "dylib" | "dll") => Role::Library,
            (CONFIG_FILE | GENERATION_CONFIG_FILE, _) => Role::Config,
            (n, "json") if n.ends_with(".index.json") => Role::Config,
            _ => Role::Other,
        }
    }

    /// Whether entries of this role start at a 4096-byte aligned offset in a `.tar`.
    pub fn is_aligned(self) -> bool {
        matches!(self, Role::Weights | Role::Library)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Role::Weights => "weights",
            Role::Config => "config",
            Role::Tokenizer => "tokenizer",
            Role::Library => "library",
            Role::Labels => "labels",
            Role::Other => "other",
        };
        f.write_str(s)
    }
}

/// The target an archive is for: one of [`Target`], or `any` for archives without native code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackageTarget {
    /// Portable: weights and data only, runs on the native backend anywhere.
    Any,
    /// Built for one target.
    Native(Target),
}

impl fmt::Display for PackageTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageTarget::Any => f.write_str("any"),
            PackageTarget::Native(t) => f.write_str(t.name()),
        }
    }
}

impl FromStr for PackageTarget {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "any" {
            return Ok(PackageTarget::Any);
        }
        s.parse::<Target>()
            .map(PackageTarget::Native)
            .map_err(|e| format!("{e} (or `any`)"))
    }
}

impl Serialize for PackageTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PackageTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Manifest {
    /// Checks everything that can be checked without the archive's contents.
    ///
    /// Returns a human-readable reason on failure.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.format_version != FORMAT_VERSION
            && self.format_version != crate::signing::SIGNED_FORMAT_VERSION
        {
            return Err(format!(
                "format_version {} is not supported (this tool reads versions {FORMAT_VERSION} \
                 and {})",
                self.format_version,
                crate::signing::SIGNED_FORMAT_VERSION
            ));
        }
        for (key, value) in [
            ("name", &self.name),
            ("version", &self.version),
            ("family", &self.family),
            ("quantization", &self.quantization),
        ] {
            if value.is_empty() {
                return Err(format!("`{key}` is empty"));
            }
        }
        let mut seen = BTreeSet::new();
        for file in &self.files {
            check_entry_path(&file.path)?;
            if file.path == MANIFEST_NAME || file.path == crate::signing::SIGNATURE_NAME {
                return Err(format!("`files` lists the reserved name {:?}", file.path));
            }
            if !seen.insert(file.path.as_str()) {
                return Err(format!("`files` lists {:?} twice", file.path));
            }
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{:?}: sha256 is not 64 hex digits", file.path));
            }
        }
        Ok(())
    }

    /// Sum of the sizes of all listed files.
    pub fn total_size(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |acc, f| acc.saturating_add(f.size))
    }

    /// The listed file at `path`.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Checks that an entry path is a safe, normalised relative path.
///
/// Refused: empty paths, absolute paths, `.` and `..` components, empty components, backslashes,
/// NUL and control characters, and paths longer than [`MAX_PATH_BYTES`].
pub fn check_entry_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.starts_with('/') {
        return Err("absolute path".into());
    }
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return Err("backslash or control character".into());
    }
    for part in path.split('/') {
        match part {
            "" => return Err("empty path component".into()),
            "." | ".." => return Err(format!("`{part}` component")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in [
            "a",
            "weights/model.safetensors",
            "lib/linux-arm64/libmodel.so",
        ] {
            assert!(check_entry_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a\\b",
            "a/",
        ] {
            assert!(check_entry_path(bad).is_err(), "{bad}");
        }
        assert!(check_entry_path(&"x".repeat(101)).is_err());
    }

    #[test]
    fn roles() {
        assert_eq!(Role::from_path("model.safetensors"), Role::Weights);
        assert_eq!(
            Role::from_path("model-00001-of-00002.safetensors"),
            Role::Weights
        );
        assert_eq!(
            Role::from_path("model.safetensors.index.json"),
            Role::Config
        );
        assert_eq!(Role::from_path("config.json"), Role::Config);
        assert_eq!(Role::from_path("tokenizer.json"), Role::Tokenizer);
        assert_eq!(Role::from_path("tokenizer_config.json"), Role::Tokenizer);
        assert_eq!(
            Role::from_path("lib/android-arm64/libmodel.so"),
            Role::Library
        );
        assert_eq!(Role::from_path("labels.json"), Role::Labels);
        assert_eq!(Role::from_path("README.md"), Role::Other);
    }

    #[test]
    fn targets_round_trip() {
        for s in ["any", "android-arm64", "linux-arm64", "linux-x86_64"] {
            let t: PackageTarget = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        assert!("windows".parse::<PackageTarget>().is_err());
    }
}
