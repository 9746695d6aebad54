//! Utterance data and metrics shared by the `aon` INT8 verbs: reading labelled splits
//! (CLINC150 JSON, a JSON array, JSONL, text lines), turning text into graph inputs, accuracy and macro-F1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ava_passes::{albert, eval, Graph, Tensor};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{bail, tokenizer_err, Context};
use crate::intents::HOLDOUT_EVERY;
use crate::LABELS_FILE;

/// Name of the tokenizer file next to a model.
pub use ava_core::TOKENIZER_FILE;

/// One utterance and, when the data is labelled, its intent.
pub type Example = (String, Option<String>);

/// Reads `split` (`train`, `val`, `test`, ...) of utterance data, in one of four layouts:
/// - CLINC150 JSON: an object of splits, each an array of `[text, intent]`;
/// - a JSON array of utterances (strings, or `[text, intent]` pairs): every split is all of it;
/// - JSONL, one `{"text": ..., "intent": ...}` a line (`intent` optional): `train` is every
///   line but each 5th, other splits are each 5th line (unlabelled lines are in every split);
/// - plain text, one unlabelled utterance a line (all of them, any split).
///
/// A file that starts like JSON (`{` or `[`) but is none of these is an error, never read as
/// plain lines.
pub fn read_split(path: &Path, split: &str) -> crate::Result<Vec<Example>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let shown = path.display();
    let first = text.trim_start().chars().next();
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(v)) if v.get("text").is_none() => {
            let Some(rows) = v.get(split).and_then(Value::as_array) else {
                bail!("{shown}: no `{split}` split");
            };
            rows.iter().map(|r| utterance(r, path)).collect()
        }
        Ok(Value::Array(rows)) => rows.iter().map(|r| utterance(r, path)).collect(),
        _ if first == Some('{') => jsonl(&text, path, split),
        Err(e) if first == Some('[') => bail!("{shown}: not valid JSON: {e}"),
        _ => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| (l.to_string(), None))
            .collect()),
    }
}

/// One element of a JSON utterance array: a string, or `[text, intent]`.
fn utterance(r: &Value, path: &Path) -> crate::Result<Example> {
    match r {
        Value::String(t) => Ok((t.clone(), None)),
        Value::Array(a) => match (a.first().and_then(Value::as_str), a.get(1)) {
            (Some(t), i) => Ok((t.to_string(), i.and_then(Value::as_str).map(String::from))),
            _ => bail!("{}: expected [text, intent], got {r}", path.display()),
        },
        _ => bail!(
            "{}: expected an utterance (a string or [text, intent]), got {r}",
            path.display()
        ),
    }
}

/// JSONL: every non-empty line an object with a string `text`.
fn jsonl(text: &str, path: &Path, split: &str) -> crate::Result<Vec<Example>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}: line {}: not a JSON object", path.display(), n + 1))?;
        let Some(t) = v.get("text").and_then(Value::as_str) else {
            bail!(
                "{}: line {}: expected {{\"text\": ..., \"intent\": ...}}",
                path.display(),
                n + 1
            );
        };
        let ex = (
            t.to_string(),
            v.get("intent").and_then(Value::as_str).map(String::from),
        );
        let held_out = n % HOLDOUT_EVERY == HOLDOUT_EVERY - 1;
        if ex.1.is_none() || (split == "train") != held_out {
            out.push(ex);
        }
    }
    Ok(out)
}

/// Tokenizer + the input names a graph takes.
pub struct Encoder {
    tok: Tokenizer,
    inputs: Vec<String>,
}

impl Encoder {
    /// Loads `tokenizer.json` for `graph`.
    pub fn new(tokenizer: &Path, graph: &Graph) -> crate::Result<Self> {
        let text = std::fs::read_to_string(tokenizer)
            .with_context(|| format!("reading {}", tokenizer.display()))?;
        ava_runtime::tokenizer::check_json_syntax(&text)
            .with_context(|| format!("parsing {}", tokenizer.display()))?;
        let tok = Tokenizer::from_str(&text).map_err(tokenizer_err(tokenizer.display()))?;
        Ok(Encoder {
            tok,
            inputs: graph.inputs.iter().map(|i| i.name.clone()).collect(),
        })
    }

    /// Token ids of `text` with `[CLS]`/`[SEP]` (truncated as the tokenizer says).
    pub fn ids(&self, text: &str) -> crate::Result<Vec<i64>> {
        let e = self
            .tok
            .encode(text, true)
            .map_err(|e| crate::Error::Tokenizer(format!("tokenizing {text:?}: {e}")))?;
        Ok(e.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Graph inputs for one utterance (batch of 1, no padding).
    pub fn inputs(&self, text: &str) -> crate::Result<HashMap<String, Tensor>> {
        let ids = self.ids(text)?;
        let n = ids.len();
        let mut m = HashMap::new();
        for name in &self.inputs {
            let v = match name.as_str() {
                albert::INPUT_IDS => ids.clone(),
                albert::ATTENTION_MASK => vec![1; n],
                _ => vec![0; n],
            };
            m.insert(name.clone(), Tensor::i64(vec![1, n], v));
        }
        Ok(m)
    }
}

/// The tokenizer next to a model file (or inside a model directory).
pub fn tokenizer_next_to(model: &Path) -> PathBuf {
    if model.is_dir() {
        model.join(TOKENIZER_FILE)
    } else {
        model.with_file_name(TOKENIZER_FILE)
    }
}

/// `labels.json` next to a model: label names by class index.
pub fn labels_next_to(model: &Path) -> crate::Result<Vec<String>> {
    let p = if model.is_dir() {
        model.join(LABELS_FILE)
    } else {
        model.with_file_name(LABELS_FILE)
    };
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// Logits of every input set, evaluated one utterance at a time.
pub fn logits(graph: &Graph, inputs: &[HashMap<String, Tensor>]) -> crate::Result<Vec<Vec<f32>>> {
    inputs
        .iter()
        .map(|i| {
            let out = eval::run(graph, i)?;
            Ok(out[0].as_f32().context("logits are not f32")?.to_vec())
        })
        .collect()
}

/// Index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0
}

/// Fraction of `pred` equal to `gold`.
pub fn accuracy(pred: &[usize], gold: &[usize]) -> f64 {
    if gold.is_empty() {
        return 0.0;
    }
    pred.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / gold.len() as f64
}

/// Mean F1 over the classes that occur in `gold` or `pred`.
pub fn macro_f1(pred: &[usize], gold: &[usize]) -> f64 {
    let mut tp: HashMap<usize, f64> = HashMap::new();
    let mut np: HashMap<usize, f64> = HashMap::new();
    let mut ng: HashMap<usize, f64> = HashMap::new();
    for (&p, &g) in pred.iter().zip(gold) {
        *np.entry(p).or_default() += 1.0;
        *ng.entry(g).or_default() += 1.0;
        if p == g {
            *tp.entry(p).or_default() += 1.0;
        }
    }
    let classes: std::collections::BTreeSet<usize> = np.keys().chain(ng.keys()).copied().collect();
    let f1: f64 = classes
        .iter()
        .map(|c| {
            let t = tp.get(c).copied().unwrap_or(0.0);
            let d = np.get(c).copied().unwrap_or(0.0) + ng.get(c).copied().unwrap_or(0.0);
            if d == 0.0 {
                0.0
            } else {
                2.0 * t / d
            }
        })
        .sum();
    f1 / classes.len().max(1) as f64
}

/// Value at percentile `p` (0..=100) of `v` (sorted in place).
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, split: &str) -> crate::Result<Vec<Example>> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data");
        std::fs::write(&p, text).unwrap();
        read_split(&p, split)
    }

    fn texts(v: &[Example]) -> Vec<&str> {
        v.iter().map(|e| e.0.as_str()).collect()
    }

    #[test]
    fn reads_every_calibration_layout() {
        let array = read(r#"["what time is it", "play some jazz"]"#, "train").unwrap();
        assert_eq!(texts(&array), ["what time is it", "play some jazz"]);
        assert!(array.iter().all(|e| e.1.is_none()));
        assert_eq!(read(r#"["a", "b"]"#, "val").unwrap().len(), 2);
        let clinc = read(r#"{"train": [["hi", "greeting"]], "val": []}"#, "train").unwrap();
        assert_eq!(clinc, [("hi".to_string(), Some("greeting".to_string()))]);
        let lines: Vec<String> = (0..5)
            .map(|i| format!(r#"{{"text": "t{i}", "intent": "x"}}"#))
            .collect();
        let jsonl = lines.join("\n");
        assert_eq!(
            texts(&read(&jsonl, "train").unwrap()),
            ["t0", "t1", "t2", "t3"]
        );
        assert_eq!(texts(&read(&jsonl, "val").unwrap()), ["t4"]);
        let plain = read("first line\n\n  second line \n", "train").unwrap();
        assert_eq!(texts(&plain), ["first line", "second line"]);
    }

    #[test]
    fn json_that_is_not_utterances_is_an_error() {
        let err = |text: &str| format!("{:#}", read(text, "train").unwrap_err());
        assert!(err("[1, 2]").contains("expected an utterance"));
        assert!(err(r#"["a", "b""#).contains("not valid JSON"));
        assert!(err(r#"{"val": []}"#).contains("no `train` split"));
        assert!(err("{\"text\": \"a\"}\nnot json").contains("line 2"));
        assert!(err(r#"{"text": 3}"#).contains("line 1"));
    }

    #[test]
    fn metrics() {
        assert_eq!(accuracy(&[0, 1, 1], &[0, 1, 0]), 2.0 / 3.0);
        assert!((macro_f1(&[0, 0], &[0, 0]) - 1.0).abs() < 1e-12);
        // class 0: tp 1, pred 1, gold 2 -> 2/3; class 1: tp 1, pred 2, gold 1 -> 2/3.
        assert!((macro_f1(&[0, 1, 1], &[0, 1, 0]) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(argmax(&[0.1, 3.0, -1.0]), 1);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 50.0), 2.0);
    }
}
