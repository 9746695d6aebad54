//! Typed `config.json` readers for the supported model families, and family detection.

pub mod albert;
pub mod gemma3;

use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

pub use albert::AlbertConfig;
pub use gemma3::{Gemma3Config, LayerKind, RopeParams, RopeScaling};

use crate::error::{Error, Result};

/// A model architecture this toolchain understands.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// Gemma 3 decoder (text part), `Gemma3ForCausalLM` / `Gemma3ForConditionalGeneration`.
    Gemma3,
    /// ALBERT encoder, `AlbertModel` / `AlbertForSequenceClassification`.
    Albert,
}

impl ModelFamily {
    /// Every family.
    pub const ALL: [ModelFamily; 2] = [ModelFamily::Gemma3, ModelFamily::Albert];

    /// Short lowercase name: `"gemma3"`, `"albert"`.
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Gemma3 => "gemma3",
            ModelFamily::Albert => "albert",
        }
    }

    /// Detects the family from a parsed `config.json` (`path` is for messages): first by
    /// `model_type`, then by `architectures`.
    pub fn detect(path: &Path, config: &Value) -> Result<ModelFamily> {
        let model_type = config.get("model_type").and_then(Value::as_str);
        match model_type {
            Some("gemma3_text" | "gemma3") => return Ok(ModelFamily::Gemma3),
            Some("albert") => return Ok(ModelFamily::Albert),
            _ => {}
        }
        let architectures: Vec<&str> = config
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for arch in &architectures {
            if let Some(family) = family_of_architecture(arch) {
                return Ok(family);
            }
        }
        let found = match (model_type, architectures.is_empty()) {
            (Some(t), _) => t.to_string(),
            (None, false) => architectures.join(", "),
            (None, true) => "<no model_type or architectures>".to_string(),
        };
        Err(Error::UnknownFamily {
            path: path.to_path_buf(),
            model_type: found,
        })
    }
}

/// Maps HF class names; exact prefixes so that e.g. `Gemma3nForCausalLM` is not taken for Gemma 3.
fn family_of_architecture(arch: &str) -> Option<ModelFamily> {
    const GEMMA3: [&str; 3] = ["Gemma3For", "Gemma3TextModel", "Gemma3Model"];
    const ALBERT: [&str; 2] = ["AlbertFor", "AlbertModel"];
    if GEMMA3.iter().any(|p| arch.starts_with(p)) {
        Some(ModelFamily::Gemma3)
    } else if ALBERT.iter().any(|p| arch.starts_with(p)) {
        Some(ModelFamily::Albert)
    } else {
        None
    }
}

impl fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads and parses a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Typed access to one JSON object of a config file; errors name the file and dotted key.
///
/// A key set to `null` counts as absent, as in transformers.
#[derive(Clone)]
pub(crate) struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    /// The top-level object of a config.
    pub(crate) fn new(path: &'a Path, value: &'a Value) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| Error::config(path, "<root>", "config must be a JSON object"))?;
        Ok(Fields {
            path,
            obj,
            prefix: String::new(),
        })
    }

    /// Full dotted name of `key` (for messages).
    pub(crate) fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(crate) fn err(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::config(self.path, self.key(key), reason)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The nested object `key`, if present.
    pub(crate) fn child(&self, key: &str) -> Result<Option<Fields<'a>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let obj = v
            .as_object()
            .ok_or_else(|| self.err(key, format!("expected an object, found {v}")))?;
        Ok(Some(Fields {
            path: self.path,
            obj,
            prefix: format!("{}{key}.", self.prefix),
        }))
    }

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        self.err(key, format!("expected a non-negative integer, found {v}"))
                    })
            })
            .transpose()
    }

    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    pub(crate) fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.opt_usize(key)?
            .map(|n| {
                u32::try_from(n).map_err(|_| self.err(key, format!("{n} does not fit in u32")))
            })
            .transpose()
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| self.err(key, format!("expected a finite number, found {v}")))
            })
            .transpose()
    }

    pub(crate) fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.err(key, format!("expected true or false, found {v}")))
            })
            .transpose()
            .map(|b| b.unwrap_or(default))
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.err(key, format!("expected a string, found {v}")))
            })
            .transpose()
    }

    /// A list of strings.
    pub(crate) fn opt_str_list(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let bad = || self.err(key, format!("expected a list of strings, found {v}"));
        let items = v.as_array().ok_or_else(bad)?;
        items
            .iter()
            .map(|s| s.as_str().ok_or_else(bad))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// A token id or list of token ids (`eos_token_id: 1` or `[1, 106]`).
    pub(crate) fn opt_ids(&self, key: &str) -> Result<Option<Vec<u32>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let id = |x: &Value| x.as_u64().and_then(|n| u32::try_from(n).ok());
        let ids = match v {
            Value::Array(items) => items.iter().map(id).collect::<Option<Vec<_>>>(),
            other => id(other).map(|n| vec![n]),
        };
        ids.map(Some).ok_or_else(|| {
            self.err(
                key,
                format!("expected a token id or a list of ids, found {v}"),
            )
        })
    }

    /// Iterates the raw entries of this object.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.obj.iter()
    }
}

/// Requires `value > 0` for a size read from `key`.
pub(crate) fn positive(f: &Fields<'_>, key: &str, value: usize) -> Result<usize> {
    if value == 0 {
        return Err(f.err(key, "must be greater than 0"));
    }
    let max = limits::max_for(key);
    if value > max {
        return Err(f.err(
            key,
            format!("{value} is over this toolchain's limit of {max} (docs/security.md)"),
        ));
    }
    Ok(value)
}

/// Upper bounds on config sizes, checked before anything is allocated from them: far above
/// any released model, low enough that products of them fit in 64 bits and that a hostile
/// config cannot ask for absurd amounts of memory. Listed in `docs/security.md`.
pub mod limits {
    /// Most layers (`num_hidden_layers`, ALBERT groups and inner groups).
    pub const MAX_LAYERS: usize = 1024;
    /// Most attention heads (query or key/value).
    pub const MAX_HEADS: usize = 1024;
    /// Largest hidden, embedding or head size.
    pub const MAX_DIM: usize = 1 << 16;
    /// Largest feed-forward (intermediate) size.
    pub const MAX_INTERMEDIATE: usize = 1 << 20;
    /// Largest vocabulary (and token type vocabulary).
    pub const MAX_VOCAB: usize = 1 << 22;
    /// Longest context (`max_position_embeddings`, `sliding_window`).
    pub const MAX_CONTEXT: usize = 1 << 22;

    /// The bound of a config key (the largest of all for keys not listed).
    pub fn max_for(key: &str) -> usize {
        match key {
            "num_hidden_layers" | "num_hidden_groups" | "inner_group_num" => MAX_LAYERS,
            "sliding_window_pattern" | "_sliding_window_pattern" => MAX_LAYERS,
            "num_attention_heads" | "num_key_value_heads" => MAX_HEADS,
            "hidden_size" | "embedding_size" | "head_dim" => MAX_DIM,
            "intermediate_size" => MAX_INTERMEDIATE,
            "vocab_size" | "type_vocab_size" => MAX_VOCAB,
            "max_position_embeddings" | "sliding_window" => MAX_CONTEXT,
            _ => MAX_VOCAB.max(MAX_CONTEXT).max(MAX_INTERMEDIATE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detect(v: Value) -> Result<ModelFamily> {
        ModelFamily::detect(Path::new("/m/config.json"), &v)
    }

    #[test]
    fn detects_by_model_type_and_architecture() -> Result<()> {
        assert_eq!(
            detect(json!({"model_type": "gemma3_text"}))?,
            ModelFamily::Gemma3
        );
        assert_eq!(
            detect(json!({"model_type": "gemma3"}))?,
            ModelFamily::Gemma3
        );
        assert_eq!(
            detect(json!({"model_type": "albert"}))?,
            ModelFamily::Albert
        );
        let arch = json!({"architectures": ["AlbertForSequenceClassification"]});
        assert_eq!(detect(arch)?, ModelFamily::Albert);
        let arch = json!({"architectures": ["Gemma3ForConditionalGeneration"]});
        assert_eq!(detect(arch)?, ModelFamily::Gemma3);
        Ok(())
    }

    #[test]
    fn unknown_family_names_file_and_type() {
        let msg = detect(json!({"model_type": "gemma3n", "architectures": ["Gemma3nForCausalLM"]}))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("/m/config.json") && msg.contains("`gemma3n`"),
            "{msg}"
        );
        let msg = detect(json!({})).unwrap_err().to_string();
        assert!(msg.contains("no model_type"), "{msg}");
    }

    #[test]
    fn fields_report_dotted_keys() -> Result<()> {
        let v = json!({"a": {"b": "x"}, "n": null, "ids": [1, 106], "id": 2});
        let f = Fields::new(Path::new("/c.json"), &v)?;
        assert_eq!(f.opt_usize("n")?, None);
        assert_eq!(f.opt_ids("ids")?, Some(vec![1, 106]));
        assert_eq!(f.opt_ids("id")?, Some(vec![2]));
        let child = f.child("a")?.ok_or_else(|| f.err("a", "missing"))?;
        let msg = child.opt_usize("b").unwrap_err().to_string();
        assert_eq!(
            msg,
            "/c.json: config key `a.b`: expected a non-negative integer, found \"x\""
        );
        Ok(())
    }
}
