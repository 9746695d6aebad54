//! `lib/<target>/kernels.json`, the kernel table: what `ava-targets` writes beside each kernel
//! library (`lib/<target>/libmodel.so`) and the runtime's `tvm` backend reads before `dlopen`
//! (docs/tvm.md). Both sides use [`KernelTable`]; the names and the version are defined here
//! only.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::Target;

/// File name of the kernel table inside `lib/<target>/`.
pub const TABLE_NAME: &str = "kernels.json";
/// File name of the kernel library inside `lib/<target>/`.
pub const LIBRARY_NAME: &str = "libmodel.so";
/// Version of `kernels.json`; readers refuse other versions.
pub const TABLE_FORMAT_VERSION: u32 = 1;
/// Folder of a stage directory or archive holding one sub-folder of kernels per target.
pub const LIB_DIR: &str = "lib";

/// Archive path of a target's kernel library (`lib/<target>/libmodel.so`).
pub fn library_path(target: Target) -> String {
    format!("{LIB_DIR}/{}/{LIBRARY_NAME}", target.name())
}

/// Archive path of a target's kernel table (`lib/<target>/kernels.json`).
pub fn table_path(target: Target) -> String {
    format!("{LIB_DIR}/{}/{TABLE_NAME}", target.name())
}

/// `kernels.json`. Only `format_version`, `requires` and the kernels' names are required when
/// reading; the other fields describe the build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelTable {
    /// [`TABLE_FORMAT_VERSION`].
    pub format_version: u32,
    /// Target name.
    #[serde(default)]
    pub target: String,
    /// CPU preset the kernels are tuned for.
    #[serde(default)]
    pub cpu: String,
    /// CPU features the library needs.
    pub requires: Vec<String>,
    /// File name of the library ([`LIBRARY_NAME`]).
    #[serde(default)]
    pub library: String,
    /// Apache TVM version that generated the kernels.
    #[serde(default)]
    pub tvm_version: Option<String>,
    /// The kernels the library exports.
    pub kernels: Vec<KernelEntry>,
}

/// One kernel of the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelEntry {
    /// Kernel name.
    pub name: String,
    /// Exported symbol (`__tvm_ffi_<name>`).
    #[serde(default)]
    pub symbol: String,
    /// The operation it computes.
    #[serde(default)]
    pub op: String,
    /// Its arguments, as the TVM driver describes them.
    #[serde(default)]
    pub args: Value,
}

/// What a reader looks at before the rest: a table of another version may differ in any field.
#[derive(Deserialize)]
struct Version {
    #[serde(default)]
    format_version: Value,
}

impl KernelTable {
    /// Parses `kernels.json` read from `path` (which names it in errors); refuses other
    /// versions.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let json = |source| Error::Json {
            path: path.to_path_buf(),
            source,
        };
        let version: Version = serde_json::from_slice(bytes).map_err(json)?;
        if version.format_version.as_u64() != Some(u64::from(TABLE_FORMAT_VERSION)) {
            return Err(Error::FormatVersion {
                path: path.to_path_buf(),
                what: "kernel table",
                found: version.format_version.to_string(),
                supported: TABLE_FORMAT_VERSION,
            });
        }
        serde_json::from_slice(bytes).map_err(json)
    }

    /// The file's text: pretty-printed with sorted keys (as `serde_json::Value` orders them),
    /// so its bytes depend on the contents only, and a final newline.
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> KernelTable {
        KernelTable {
            format_version: TABLE_FORMAT_VERSION,
            target: "linux-x86_64".into(),
            cpu: "x86-64-v3".into(),
            requires: vec!["avx2".into(), "fma".into()],
            library: LIBRARY_NAME.into(),
            tvm_version: Some("0.21.0".into()),
            kernels: vec![KernelEntry {
                name: "rms_norm_64".into(),
                symbol: "__tvm_ffi_rms_norm_64".into(),
                op: "rms_norm".into(),
                args: serde_json::json!([{"dtype": "float32", "shape": ["n", 64]}]),
            }],
        }
    }

    #[test]
    fn round_trips_with_sorted_keys() {
        let text = table().to_json();
        assert_eq!(
            KernelTable::parse(text.as_bytes(), Path::new("k")).unwrap(),
            table()
        );
        let keys: Vec<usize> = ["\"cpu\"", "\"format_version\"", "\"kernels\"", "\"target\""]
            .iter()
            .map(|k| text.find(k).unwrap())
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn a_minimal_table_reads_and_other_versions_are_refused() {
        let t = KernelTable::parse(
            br#"{"format_version": 1, "requires": [], "kernels": [{"name": "k"}]}"#,
            Path::new("k"),
        )
        .unwrap();
        assert_eq!((t.kernels[0].name.as_str(), t.target.as_str()), ("k", ""));
        let e = KernelTable::parse(
            br#"{"format_version": 2, "kernels": 7}"#,
            Path::new("/a/kernels.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/a/kernels.json: kernel table format 2"),
            "{e}"
        );
        for bad in [
            &br#"{"format_version": 1, "requires": [3], "kernels": []}"#[..],
            b"{",
        ] {
            assert!(KernelTable::parse(bad, Path::new("k")).is_err());
        }
    }

    #[test]
    fn paths_name_the_target() {
        assert_eq!(
            library_path(Target::LinuxArm64),
            "lib/linux-arm64/libmodel.so"
        );
        assert_eq!(
            table_path(Target::AndroidArm64),
            "lib/android-arm64/kernels.json"
        );
    }
}
