//! The KV cache options on the tiny fixtures: f16 storage gives the same greedy tokens as f32
//! (itself equal to the transformers goldens), q8 the same logits within a small error, the cache is sized for the session's
//! context (not `max_position_embeddings`), and sliding-window layers hold only their window.

use std::path::{Path, PathBuf};

use ava_core::LayerKind;
use ava_runtime::{Engine, GenerateOptions, KvCache, KvDtype};

/// Leading greedy tokens the q8 cache must reproduce exactly (before any near-tie).
const TOKENS_Q8: usize = 4;
/// Largest logit error of the q8 cache, relative to the largest logit.
const Q8_TOLERANCE: f32 = 0.02;
/// Decode steps compared under teacher forcing.
const FORCED_STEPS: usize = 32;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name)
}

/// Greedy tokens of two turns (the second prefill reads the cache the first wrote).
fn two_turns(engine: &Engine, prompt: &[u32], kv: KvDtype) -> Vec<u32> {
    let options = GenerateOptions {
        max_tokens: 32,
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    let mut session = engine.session_as(256, kv);
    let out = session.generate(prompt, &options, &mut |_| true).unwrap();
    let more = session
        .generate(&[2, 10, 11], &options, &mut |_| true)
        .unwrap();
    [out.tokens, more.tokens].concat()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// The logits after `prompt` and after each of `tokens` fed one at a time.
fn forced_logits(engine: &Engine, prompt: &[u32], tokens: &[u32], kv: KvDtype) -> Vec<Vec<f32>> {
    let mut cache = engine.model().new_cache_as(256, kv);
    let mut out = vec![engine.forward(prompt, &mut cache).unwrap()];
    for &t in tokens.iter().take(FORCED_STEPS) {
        out.push(engine.forward(&[t], &mut cache).unwrap());
    }
    out
}

/// f16 keeps every greedy token. q8 rounds each head row to 8 bits: on these random-weight
/// models greedy decoding walks through near-ties, where it may pick the other token after
/// a while, so q8 is held to its first tokens and to the logits of every step of the same
/// history (a small error).
#[test]
fn compact_kv_caches_give_the_f32_results() {
    for model in ["gemma3-tiny", "gemma3-tiny-legacy"] {
        let dir = fixture(model);
        let engine = Engine::open(&dir).unwrap();
        let goldens: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("goldens.json")).unwrap()).unwrap();
        for p in goldens["prompts"].as_array().unwrap() {
            let prompt = ids(&p["input_ids"]);
            let reference = two_turns(&engine, &prompt, KvDtype::F32);
            let golden = ids(&p["greedy_ids"]);
            assert_eq!(
                reference[..golden.len()],
                golden[..],
                "{model}: f32 = golden"
            );
            let f16_tokens = two_turns(&engine, &prompt, KvDtype::F16);
            assert_eq!(f16_tokens, reference, "{model}: f16 KV cache");
            let q8_tokens = two_turns(&engine, &prompt, KvDtype::Q8);
            assert_eq!(
                q8_tokens[..TOKENS_Q8],
                reference[..TOKENS_Q8],
                "{model}: q8"
            );
            // The same history through both caches: every step's logits agree closely.
            let exact = forced_logits(&engine, &prompt, &reference, KvDtype::F32);
            let q8 = forced_logits(&engine, &prompt, &reference, KvDtype::Q8);
            let scale = exact.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
            let err = exact
                .iter()
                .flatten()
                .zip(q8.iter().flatten())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= Q8_TOLERANCE * scale,
                "{model}: q8 logits off by {err} of {scale}"
            );
        }
    }
}

#[test]
fn the_cache_is_sized_for_the_context_and_sliding_layers_for_their_window() {
    let engine = Engine::open(&fixture("gemma3-tiny")).unwrap();
    let cfg = engine.model().config().clone();
    let context = 100;
    assert!(context < cfg.max_position_embeddings && cfg.sliding_window < context);
    let width = cfg.num_key_value_heads * cfg.head_dim;
    for kv in KvDtype::ALL {
        let mut session = engine.session_as(context, kv);
        let options = GenerateOptions {
            max_tokens: 4,
            ignore_eos: true,
            ..GenerateOptions::default()
        };
        session
            .generate(&[2, 10, 11, 12], &options, &mut |_| true)
            .unwrap();
        let cache = session.cache();
        assert_eq!(cache.dtype(), kv);
        assert_eq!(cache.max_context(), context);
        for (i, kind) in cfg.layer_types.iter().enumerate() {
            let want = match kind {
                LayerKind::Sliding => cfg.sliding_window,
                _ => context,
            };
            assert_eq!(cache.layer_slots(i), Some(want), "layer {i} ({kind:?})");
        }
        assert_eq!(
            cache.bytes(),
            KvCache::bytes_for(&cfg, context, kv),
            "{}",
            kv.name()
        );
        let slots = cfg
            .layer_types
            .iter()
            .map(|k| match k {
                LayerKind::Sliding => cfg.sliding_window,
                _ => context,
            })
            .sum::<usize>();
        let f32_bytes = 2 * slots * width * 4;
        match kv {
            KvDtype::F32 => assert_eq!(cache.bytes(), f32_bytes),
            // The compact planes plus one layer's f32 scratch.
            _ => assert!(cache.bytes() < f32_bytes, "{}", kv.name()),
        }
    }
    // Asking for more than the model's maximum is capped at it.
    let big = engine.session_as(10 * cfg.max_position_embeddings, KvDtype::F16);
    assert_eq!(big.cache().max_context(), cfg.max_position_embeddings);
}

#[test]
fn kv_cache_names_round_trip_and_unknown_ones_are_refused() {
    for kv in KvDtype::ALL {
        assert_eq!(kv.name().parse::<KvDtype>(), Ok(kv));
    }
    assert_eq!(KvDtype::default(), KvDtype::F16);
    assert!("bf16".parse::<KvDtype>().is_err());
}
