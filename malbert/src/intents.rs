//! Labelled utterances for `aon convert --intents`: CLINC150's JSON layout or JSONL.

use std::path::Path;

use crate::error::{bail, Context};
use serde_json::Value;

/// JSONL files: every `HOLDOUT_EVERY`-th example (the last of each group) is validation.
pub const HOLDOUT_EVERY: usize = 5;

/// Training and validation examples, `(text, intent)`.
#[derive(Debug, Default)]
pub struct Intents {
    /// Fitting examples.
    pub train: Vec<(String, String)>,
    /// Held-out examples for the reported accuracy.
    pub val: Vec<(String, String)>,
}

impl Intents {
    /// Sorted distinct intent names of the training split.
    pub fn labels(&self) -> Vec<String> {
        let mut l: Vec<String> = self.train.iter().map(|(_, i)| i.clone()).collect();
        l.sort();
        l.dedup();
        l
    }

    /// Every text, both splits.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.train.iter().chain(&self.val).map(|(t, _)| t.as_str())
    }
}

/// Reads CLINC150 JSON (`train` and `val` keys; out-of-scope splits ignored) or JSONL.
pub fn read(path: &Path) -> crate::Result<Intents> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let out = if text.trim_start().starts_with('{') && serde_json::from_str::<Value>(&text).is_ok()
    {
        let v: Value = serde_json::from_str(&text)?;
        if v.get("train").is_some() {
            Intents {
                train: pairs(&v["train"], path)?,
                val: pairs(v.get("val").unwrap_or(&Value::Null), path)?,
            }
        } else {
            jsonl(&text, path)?
        }
    } else {
        jsonl(&text, path)?
    };
    if out.train.is_empty() {
        bail!("{}: no training examples", path.display());
    }
    Ok(out)
}

fn pairs(v: &Value, path: &Path) -> crate::Result<Vec<(String, String)>> {
    let Some(rows) = v.as_array() else {
        return Ok(vec![]);
    };
    rows.iter()
        .map(|r| {
            match r.as_array().map(|a| {
                (
                    a.first().and_then(Value::as_str),
                    a.get(1).and_then(Value::as_str),
                )
            }) {
                Some((Some(t), Some(i))) => Ok((t.to_string(), i.to_string())),
                _ => bail!("{}: expected [text, intent], got {r}", path.display()),
            }
        })
        .collect()
}

fn jsonl(text: &str, path: &Path) -> crate::Result<Intents> {
    let mut out = Intents::default();
    for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}: line {}", path.display(), n + 1))?;
        let (Some(t), Some(i)) = (v["text"].as_str(), v["intent"].as_str()) else {
            bail!(
                "{}: line {}: expected {{\"text\", \"intent\"}}",
                path.display(),
                n + 1
            );
        };
        let split = if n % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 {
            &mut out.val
        } else {
            &mut out.train
        };
        split.push((t.to_string(), i.to_string()));
    }
    Ok(out)
}
