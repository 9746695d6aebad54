//! Out-of-scope detection for the `aon` verbs: an utterance whose best softmax score is below
//! a threshold is out of scope (`oos`). Reads the out-of-scope utterances of a data set,
//! scores a threshold (in-scope accuracy, out-of-scope recall) and chooses one on validation
//! data (`aon compile --oos-threshold auto`).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::data::{self, Example};
use crate::error::{bail, Context};

pub use ava_runtime::albert::{OOS_LABEL, OOS_STAGE};

/// CLINC150's out-of-scope splits are named `oos_<split>` (`oos_train`, `oos_val`, `oos_test`).
pub const OOS_SPLIT_PREFIX: &str = "oos_";

/// `split` of `path` (as [`data::read_split`] reads it) followed by its out-of-scope
/// companion `oos_<split>` when the file is CLINC150 JSON that has one. Out-of-scope
/// utterances carry the intent [`OOS_LABEL`], in JSONL as in CLINC150.
pub fn read_split_with_oos(path: &Path, split: &str) -> crate::Result<Vec<Example>> {
    let mut out = data::read_split(path, split)?;
    let oos = format!("{OOS_SPLIT_PREFIX}{split}");
    if json_has_split(path, &oos)? {
        out.extend(data::read_split(path, &oos)?);
    }
    Ok(out)
}

fn json_has_split(path: &Path, split: &str) -> crate::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str::<Value>(&text)
        .ok()
        .is_some_and(|v| v.get(split).is_some_and(Value::is_array)))
}

/// Whether an example is out of scope for a model with `labels`: its intent is [`OOS_LABEL`]
/// and the model has no class of that name (a model trained with an `oos` class scores it
/// like any other intent).
pub fn is_oos(intent: Option<&str>, labels: &[String]) -> bool {
    intent == Some(OOS_LABEL) && !labels.iter().any(|l| l == OOS_LABEL)
}

/// One scored utterance.
#[derive(Clone, Copy, Debug)]
pub struct Scored {
    /// The gold class of an in-scope utterance; `None` for an out-of-scope one.
    pub gold: Option<usize>,
    /// The model's best class.
    pub pred: usize,
    /// Its softmax probability.
    pub score: f32,
}

/// How a threshold does on a set of scored utterances.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OosMetrics {
    /// Utterances scored below it are out of scope.
    pub threshold: f32,
    /// In-scope utterances.
    pub in_scope: usize,
    /// In-scope utterances classified correctly and at or above the threshold.
    pub in_scope_correct: usize,
    /// `in_scope_correct / in_scope`.
    pub in_scope_accuracy: f64,
    /// Out-of-scope utterances.
    pub oos: usize,
    /// Out-of-scope utterances scored below the threshold.
    pub oos_detected: usize,
    /// `oos_detected / oos`.
    pub oos_recall: f64,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// In-scope accuracy and out-of-scope recall of `threshold` on `scored`.
pub fn metrics(scored: &[Scored], threshold: f32) -> OosMetrics {
    let (mut in_scope, mut correct, mut oos, mut detected) = (0, 0, 0, 0);
    for s in scored {
        let below = s.score < threshold;
        match s.gold {
            Some(g) => {
                in_scope += 1;
                if !below && s.pred == g {
                    correct += 1;
                }
            }
            None => {
                oos += 1;
                if below {
                    detected += 1;
                }
            }
        }
    }
    OosMetrics {
        threshold,
        in_scope,
        in_scope_correct: correct,
        in_scope_accuracy: ratio(correct, in_scope),
        oos,
        oos_detected: detected,
        oos_recall: ratio(detected, oos),
    }
}

/// The `auto` rule: the threshold maximising the mean of in-scope accuracy and out-of-scope
/// recall on `scored` (balanced accuracy of the in-scope/out-of-scope decision, with a wrong
/// intent counted as a miss), the smallest such one on ties. Candidates are 0 and the
/// midpoints between consecutive distinct scores, so the result never sits on a score.
pub fn choose(scored: &[Scored]) -> crate::Result<OosMetrics> {
    let (n_in, n_oos) = scored.iter().fold((0, 0), |(i, o), s| {
        (i + s.gold.is_some() as usize, o + s.gold.is_none() as usize)
    });
    if n_in == 0 || n_oos == 0 {
        bail!(
            "choosing an out-of-scope threshold needs in-scope and out-of-scope validation \
             utterances (CLINC150's `oos_val` split, or JSONL lines with intent `{OOS_LABEL}`); \
             got {n_in} in scope and {n_oos} out of scope"
        );
    }
    let mut scores: Vec<f32> = scored.iter().map(|s| s.score).collect();
    scores.sort_by(f32::total_cmp);
    scores.dedup();
    let candidates =
        std::iter::once(0.0).chain(scores.windows(2).map(|w| w[0] + (w[1] - w[0]) / 2.0));
    let balanced = |m: &OosMetrics| m.in_scope_accuracy + m.oos_recall;
    let mut best = metrics(scored, 0.0);
    for t in candidates {
        let m = metrics(scored, t);
        if balanced(&m) > balanced(&best) {
            best = m;
        }
    }
    Ok(best)
}

/// How the archive's threshold is set (`aon compile --oos-threshold`): a fixed value or `auto`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum OosRule {
    /// This softmax score.
    Fixed(f32),
    /// Chosen on the validation split (in-scope `val` and `oos_val`) by [`choose`].
    Auto,
}

impl std::str::FromStr for OosRule {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "auto" {
            return Ok(OosRule::Auto);
        }
        match s.parse::<f32>() {
            Ok(t) if (0.0..=1.0).contains(&t) => Ok(OosRule::Fixed(t)),
            _ => Err(format!("`{s}`: expected `auto` or a score between 0 and 1")),
        }
    }
}

/// The out-of-scope threshold stored in an archive (the manifest's [`OOS_STAGE`] stage).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OosReport {
    /// Utterances whose best softmax score is below it are out of scope.
    pub threshold: f32,
    /// `auto` (chosen on validation) or `fixed`.
    pub rule: &'static str,
    /// What is compared with it.
    pub score: &'static str,
    /// How it does on the validation utterances (in scope: `val`; out of scope: `oos_val`);
    /// `None` when a fixed threshold has no out-of-scope validation data to be scored on.
    pub val: Option<OosMetrics>,
}

/// The threshold `rule` gives on the validation utterances `scored`: a fixed one scored there
/// when they include out-of-scope ones, or the one [`choose`] picks.
pub fn threshold(rule: OosRule, scored: &[Scored]) -> crate::Result<OosReport> {
    let has_oos = scored.iter().any(|s| s.gold.is_none());
    let (threshold, rule, val) = match rule {
        OosRule::Fixed(t) => (t, "fixed", has_oos.then(|| metrics(scored, t))),
        OosRule::Auto => {
            let m = choose(scored).context("--oos-threshold auto")?;
            (m.threshold, "auto", Some(m))
        }
    };
    Ok(OosReport {
        threshold,
        rule,
        score: "max softmax probability",
        val,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(gold: Option<usize>, pred: usize, score: f32) -> Scored {
        Scored { gold, pred, score }
    }

    #[test]
    fn metrics_count_below_threshold_as_oos() {
        let v = [
            s(Some(0), 0, 0.9),
            s(Some(1), 1, 0.3),
            s(Some(1), 0, 0.8),
            s(None, 0, 0.2),
            s(None, 1, 0.6),
        ];
        let m = metrics(&v, 0.5);
        assert_eq!((m.in_scope, m.in_scope_correct), (3, 1));
        assert_eq!((m.oos, m.oos_detected), (2, 1));
        assert!((m.oos_recall - 0.5).abs() < 1e-12);
    }

    #[test]
    fn rules_parse_and_set_the_threshold() {
        assert_eq!("auto".parse::<OosRule>(), Ok(OosRule::Auto));
        assert_eq!("0.25".parse::<OosRule>(), Ok(OosRule::Fixed(0.25)));
        assert!("1.5".parse::<OosRule>().is_err());
        assert!("high".parse::<OosRule>().is_err());
        let v = [
            s(Some(0), 0, 0.9),
            s(Some(1), 1, 0.7),
            s(None, 0, 0.2),
            s(None, 1, 0.4),
        ];
        let fixed = threshold(OosRule::Fixed(0.3), &v).unwrap();
        assert_eq!((fixed.threshold, fixed.rule), (0.3, "fixed"));
        assert_eq!(fixed.val.as_ref().map(|m| m.oos_detected), Some(1));
        // Without out-of-scope utterances a fixed threshold is not scored, and auto fails.
        assert_eq!(threshold(OosRule::Fixed(0.3), &v[..2]).unwrap().val, None);
        let err = threshold(OosRule::Auto, &v[..2]).unwrap_err().to_string();
        assert!(err.starts_with("--oos-threshold auto"), "{err}");
        let auto = threshold(OosRule::Auto, &v).unwrap();
        assert_eq!(auto.rule, "auto");
        assert!((auto.threshold - 0.55).abs() < 1e-6);
    }

    #[test]
    fn auto_threshold_separates_and_prefers_the_smallest() {
        let v = [
            s(Some(0), 0, 0.9),
            s(Some(1), 1, 0.7),
            s(None, 0, 0.2),
            s(None, 1, 0.4),
        ];
        let m = choose(&v).unwrap();
        assert!((m.threshold - 0.55).abs() < 1e-6, "{m:?}");
        assert_eq!((m.in_scope_correct, m.oos_detected), (2, 2));
        assert!(choose(&v[..2]).is_err());
    }
}
