//! The native Gemma 3 forward pass against transformers' goldens on the committed tiny
//! checkpoints (`fixtures/models/*/goldens.json`, made by `fixtures/gen/make_tiny.py`).

use std::path::{Path, PathBuf};

use ava_core::Checkpoint;
use ava_runtime::{Gemma3, ModelSource};

struct Golden {
    prompt: String,
    input_ids: Vec<u32>,
    last_logits: Vec<f32>,
    greedy_ids: Vec<u32>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name)
}

fn goldens(dir: &Path) -> Vec<Golden> {
    let text = std::fs::read(dir.join("goldens.json")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    json["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Golden {
            prompt: p["prompt"].as_str().unwrap().to_string(),
            input_ids: ids(&p["input_ids"]),
            last_logits: p["last_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
            greedy_ids: ids(&p["greedy_ids"]),
        })
        .collect()
}

fn load(name: &str) -> (Gemma3, Vec<Golden>) {
    let dir = fixture(name);
    let cfg = Checkpoint::open(&dir).unwrap().gemma3().unwrap();
    let source = ModelSource::open(&dir).unwrap();
    (Gemma3::load(&source, cfg).unwrap(), goldens(&dir))
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0 as u32
}

/// Greedy generation, one token at a time through the KV cache.
fn greedy(model: &Gemma3, prompt: &[u32], steps: usize) -> (Vec<f32>, Vec<u32>) {
    let mut cache = model.new_cache(256);
    let first = model.forward(prompt, &mut cache).unwrap();
    let mut out = vec![argmax(&first)];
    while out.len() < steps {
        let logits = model.forward(&out[out.len() - 1..], &mut cache).unwrap();
        out.push(argmax(&logits));
    }
    (first, out)
}

fn check(name: &str, logits_tolerance: Option<f32>) {
    let (model, goldens) = load(name);
    for g in &goldens {
        let (logits, tokens) = greedy(&model, &g.input_ids, g.greedy_ids.len());
        if let Some(tol) = logits_tolerance {
            let diff = logits
                .iter()
                .zip(&g.last_logits)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                diff <= tol,
                "{name} {:?}: max |logit diff| {diff}",
                g.prompt
            );
        }
        assert_eq!(tokens, g.greedy_ids, "{name} {:?}", g.prompt);
    }
}

#[test]
fn f32_fixture_matches_logits_and_greedy_tokens() {
    check("gemma3-tiny", Some(1e-3));
}

#[test]
fn bf16_fixture_matches_greedy_tokens() {
    // The goldens come from the bf16 weights upcast to f32, so logits agree closely too.
    check("gemma3-tiny-legacy", Some(1e-3));
}

#[test]
fn prefill_in_pieces_equals_prefill_at_once() {
    let (model, goldens) = load("gemma3-tiny");
    let ids = &goldens
        .iter()
        .max_by_key(|g| g.input_ids.len())
        .unwrap()
        .input_ids;
    let mut whole = model.new_cache(256);
    let expected = model.forward(ids, &mut whole).unwrap();
    // Chunks longer and shorter than the sliding window (8): the ring must hold what they need.
    for chunk in [1, 3, 8, 13] {
        let mut cache = model.new_cache(256);
        let mut logits = Vec::new();
        for piece in ids.chunks(chunk) {
            logits = model.forward(piece, &mut cache).unwrap();
        }
        let diff = logits
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "chunk {chunk}: {diff}");
        assert_eq!(cache.position(), ids.len());
    }
}

#[test]
fn context_limits_and_bad_tokens_are_errors() {
    let (model, _) = load("gemma3-tiny");
    let mut cache = model.new_cache(4);
    assert!(model.forward(&[2, 10, 11, 12, 13], &mut cache).is_err());
    assert_eq!(cache.position(), 0);
    model.forward(&[2, 10, 11, 12], &mut cache).unwrap();
    let err = model.forward(&[5], &mut cache).unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
    let mut cache = model.new_cache(16);
    assert!(model.forward(&[100_000], &mut cache).is_err());
    assert!(model.forward(&[], &mut cache).is_err());
}
