//! `ava-stage.json`: what the stage that wrote a directory (quantize, build, `aon compile`)
//! says about it: manifest fields (name, family, quantization, target, source) and per-stage
//! metadata that `package` copies into the manifest's `stages`. Format:
//! `docs/formats/stage-dir.md`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::manifest::{PackageTarget, Source};
use crate::{Error, Result};

/// The stage file's name inside a stage output directory (never packaged).
pub const STAGE_FILE: &str = "ava-stage.json";

/// The contents of `ava-stage.json`; every field optional. Fields are declared in alphabetical
/// order, so the file lists its keys sorted, as a JSON object map does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageFile {
    /// Model family (`gemma3`, `albert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Archive name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Weight format (`q4bf16`, `int8`, `bf16`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// Where the weights came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Metadata of each stage that ran, by stage name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages: BTreeMap<String, serde_json::Value>,
    /// The target native code in the directory was built for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PackageTarget>,
}

impl StageFile {
    /// Reads `dir/ava-stage.json`; `None` when the directory has none.
    pub fn read(dir: &Path) -> Result<Option<StageFile>> {
        let path = dir.join(STAGE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::StageFile {
                path,
                reason: e.to_string(),
            })
    }

    /// Writes `dir/ava-stage.json`: pretty JSON and a final newline.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STAGE_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::StageFile {
            path: path.clone(),
            reason: e.to_string(),
        })? + "\n";
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_sorted_keys_and_refuses_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(StageFile::read(dir.path()).unwrap(), None);
        let stage = StageFile {
            name: Some("m".into()),
            family: Some("gemma3".into()),
            quantization: Some("q4bf16".into()),
            stages: [("quantize".to_string(), serde_json::json!({"method": "rtn"}))].into(),
            ..Default::default()
        };
        stage.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(STAGE_FILE)).unwrap();
        let want = serde_json::to_string_pretty(&serde_json::json!({
            "name": "m", "family": "gemma3", "quantization": "q4bf16",
            "stages": {"quantize": {"method": "rtn"}}
        }))
        .unwrap()
            + "\n";
        assert_eq!(text, want);
        assert_eq!(StageFile::read(dir.path()).unwrap(), Some(stage));
        std::fs::write(dir.path().join(STAGE_FILE), r#"{"nmae": "typo"}"#).unwrap();
        let err = StageFile::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("invalid stage metadata"), "{err}");
    }
}
