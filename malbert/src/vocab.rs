//! Vocabulary pruning of a Unigram `tokenizer.json` and the embedding rows that go with it.
//!
//! Kept: special (added) tokens, every piece the tokenizer produces on the given texts, and all
//! single-character pieces (so words outside the kept vocabulary still split into characters;
//! characters outside the kept alphabet become `<unk>`). Unigram picks the best segmentation
//! among the pieces it has; removing pieces the best segmentation of a text does not use leaves
//! that segmentation best, so the texts tokenize to the same pieces. [`prune`] checks it.

use std::collections::{BTreeSet, HashMap};

use crate::error::{bail, tokenizer_err, Context};
use serde_json::Value;
use tokenizers::Tokenizer;

/// Result of pruning: the new tokenizer.json and the kept old ids in new-id order.
pub struct Pruned {
    /// Rewritten tokenizer.json.
    pub json: Value,
    /// `kept[new_id] = old_id`.
    pub kept: Vec<u32>,
}

/// Ids that must never be dropped: added tokens and single-character pieces.
fn always_kept(json: &Value) -> crate::Result<BTreeSet<u32>> {
    let mut keep = BTreeSet::new();
    for t in json["added_tokens"].as_array().into_iter().flatten() {
        keep.insert(t["id"].as_u64().context("added token without id")? as u32);
    }
    let vocab = json["model"]["vocab"]
        .as_array()
        .context("model.vocab missing")?;
    for (i, entry) in vocab.iter().enumerate() {
        let piece = entry[0].as_str().unwrap_or_default();
        if piece.trim_start_matches('\u{2581}').chars().count() <= 1 {
            keep.insert(i as u32);
        }
    }
    if let Some(unk) = json["model"]["unk_id"].as_u64() {
        keep.insert(unk as u32);
    }
    Ok(keep)
}

/// Prunes `json` (the tokenizer `tok` was loaded from) to the pieces `texts` use.
pub fn prune<'a>(
    json: &Value,
    tok: &Tokenizer,
    texts: impl Iterator<Item = &'a str>,
) -> crate::Result<Pruned> {
    if json["model"]["type"] != "Unigram" {
        bail!(
            "vocabulary pruning supports Unigram (SentencePiece) tokenizers, not {}",
            json["model"]["type"]
        );
    }
    let texts: Vec<&str> = texts.collect();
    let encode = |t: &Tokenizer, s: &str| -> crate::Result<Vec<u32>> {
        Ok(t.encode(s, true)
            .map_err(|e| crate::Error::Tokenizer(format!("tokenizing {s:?}: {e}")))?
            .get_ids()
            .to_vec())
    };
    let before: Vec<Vec<u32>> = texts
        .iter()
        .map(|s| encode(tok, s))
        .collect::<crate::Result<_>>()?;
    let mut keep = always_kept(json)?;
    keep.extend(before.iter().flatten().copied());
    let kept: Vec<u32> = keep.into_iter().collect();
    let remap: HashMap<u32, u32> = kept
        .iter()
        .enumerate()
        .map(|(new, &old)| (old, new as u32))
        .collect();
    let out = rewrite(json, &kept, &remap)?;
    let new_tok = Tokenizer::from_bytes(serde_json::to_vec(&out)?)
        .map_err(tokenizer_err("rewritten tokenizer.json"))?;
    for (s, old) in texts.iter().zip(&before) {
        let want: Vec<u32> = old.iter().map(|i| remap[i]).collect();
        if encode(&new_tok, s)? != want {
            bail!("pruned tokenizer splits {s:?} differently");
        }
    }
    Ok(Pruned { json: out, kept })
}

fn rewrite(json: &Value, kept: &[u32], remap: &HashMap<u32, u32>) -> crate::Result<Value> {
    let mut out = json.clone();
    let vocab = json["model"]["vocab"]
        .as_array()
        .context("model.vocab missing")?;
    out["model"]["vocab"] = Value::Array(kept.iter().map(|&i| vocab[i as usize].clone()).collect());
    if let Some(unk) = json["model"]["unk_id"].as_u64() {
        out["model"]["unk_id"] = remap[&(unk as u32)].into();
    }
    for t in out["added_tokens"].as_array_mut().into_iter().flatten() {
        let id = t["id"].as_u64().context("added token without id")? as u32;
        t["id"] = remap[&id].into();
    }
    remap_post_processor(&mut out["post_processor"], remap);
    Ok(out)
}

/// `TemplateProcessing.special_tokens.*.ids` (also inside a `Sequence`).
fn remap_post_processor(pp: &mut Value, remap: &HashMap<u32, u32>) {
    if let Some(list) = pp.get_mut("processors").and_then(Value::as_array_mut) {
        list.iter_mut().for_each(|p| remap_post_processor(p, remap));
    }
    if let Some(specials) = pp.get_mut("special_tokens").and_then(Value::as_object_mut) {
        for s in specials.values_mut() {
            for id in s["ids"].as_array_mut().into_iter().flatten() {
                if let Some(new) = id.as_u64().and_then(|i| remap.get(&(i as u32))) {
                    *id = (*new).into();
                }
            }
        }
    }
}

/// Sets the truncation rule: inputs longer than `max_len` tokens lose pieces from the right
/// before `[CLS]`/`[SEP]` are added, so the result is exactly `max_len` tokens.
pub fn set_truncation(json: &mut Value, max_len: usize) {
    json["truncation"] = serde_json::json!({
        "direction": "Right", "max_length": max_len, "strategy": "LongestFirst", "stride": 0
    });
}
