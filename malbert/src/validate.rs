//! The validation step of `aon compile`: the compiled classifier and its float original scored
//! on the intents' `val` split, the accuracy gate, and the out-of-scope threshold chosen or
//! scored there ([`oos::threshold`]).

use std::collections::HashMap;
use std::path::PathBuf;

use ava_runtime::albert::Classifier;

use crate::data::Example;
use crate::error::bail;
use crate::oos::{self, OosReport, OosRule, Scored};

/// What [`validate`] does.
#[derive(Clone, Debug)]
pub struct ValidateOptions {
    /// The labelled intents (CLINC150 JSON or JSONL) whose `val` split is scored.
    pub intents: PathBuf,
    /// In-scope utterances scored (the first N of `val` whose intent the model has), and as
    /// many out-of-scope ones.
    pub samples: usize,
    /// Largest accuracy drop against float allowed, in percentage points; `None`: no gate.
    pub max_accuracy_drop: Option<f64>,
    /// The out-of-scope threshold to set, if any.
    pub oos: Option<OosRule>,
}

/// What [`validate`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Validation {
    /// In-scope validation utterances scored.
    pub samples: usize,
    /// The float model's accuracy on them.
    pub float_accuracy: f64,
    /// The compiled model's accuracy on them.
    pub accuracy: f64,
    /// The out-of-scope threshold, when one was asked for.
    pub oos: Option<OosReport>,
}

/// Scores `built` against `float` on the validation split; an error when the accuracy drop is
/// over [`ValidateOptions::max_accuracy_drop`] or no threshold can be chosen.
pub fn validate(
    float: &Classifier,
    built: &Classifier,
    opts: &ValidateOptions,
) -> crate::Result<Validation> {
    let val = val_examples(opts, built.labels())?;
    let (float_accuracy, samples) = accuracy(&score(float, &val, false)?);
    let scored = score(built, &val, opts.oos.is_some())?;
    let (accuracy, _) = self::accuracy(&scored);
    if let Some(p) = opts.max_accuracy_drop {
        if 100.0 * (float_accuracy - accuracy) > p {
            bail!(
                "accuracy gate: {:.2}% against float {:.2}% on {samples} val utterances (allowed drop {p} points)",
                100.0 * accuracy,
                100.0 * float_accuracy
            );
        }
    }
    let oos = match opts.oos {
        Some(rule) => Some(oos::threshold(rule, &scored)?),
        None => None,
    };
    Ok(Validation {
        samples,
        float_accuracy,
        accuracy,
        oos,
    })
}

/// Scores `examples` with `c`: in-scope ones whose intent it knows (gold class), and, when
/// `with_oos`, out-of-scope ones.
pub fn score(c: &Classifier, examples: &[Example], with_oos: bool) -> crate::Result<Vec<Scored>> {
    let index: HashMap<&str, usize> = c
        .labels()
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut out = Vec::new();
    for (text, intent) in examples {
        let gold = match intent.as_deref().and_then(|i| index.get(i)) {
            Some(&g) => Some(g),
            None if with_oos && oos::is_oos(intent.as_deref(), c.labels()) => None,
            None => continue,
        };
        let r = c.classify(text)?;
        out.push(Scored {
            gold,
            pred: r.index,
            score: r.probs.get(r.index).copied().unwrap_or(0.0),
        });
    }
    Ok(out)
}

/// Fraction of the in-scope utterances of `scored` whose best class is the gold one, and
/// their number.
pub fn accuracy(scored: &[Scored]) -> (f64, usize) {
    let m = oos::metrics(scored, 0.0);
    (m.in_scope_accuracy, m.in_scope)
}

/// The validation utterances: the first `samples` in-scope ones of `val` whose intent
/// `labels` has, then the first `samples` out-of-scope ones (`oos_val`).
fn val_examples(opts: &ValidateOptions, labels: &[String]) -> crate::Result<Vec<Example>> {
    let all = oos::read_split_with_oos(&opts.intents, "val")?;
    let known = |e: &&Example| {
        e.1.as_deref()
            .is_some_and(|i| labels.iter().any(|l| l == i))
    };
    let out_of_scope = |e: &&Example| oos::is_oos(e.1.as_deref(), labels);
    let mut v: Vec<Example> = all
        .iter()
        .filter(known)
        .take(opts.samples)
        .cloned()
        .collect();
    v.extend(all.iter().filter(out_of_scope).take(opts.samples).cloned());
    Ok(v)
}
