//! arm64 parity under qemu: a random-weight Gemma 3 with a sliding window much smaller than
//! the generated length (many ring-buffer wraps) and GQA, compiled for linux-arm64 in every
//! weight format and checked step by step against the host native backend by `alc validate
//! --device qemu` (docs/runtime.md, "Numerical contract"): the arm64 native backend gives the
//! host's logits exactly; the arm64 TVM kernels differ by float ordering only (f32, bf16,
//! q8bf16), or stay within the q4bf16 tolerance (int8 activations).

use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use crate::{alc, gemma3_tiny};

/// Shape of the random checkpoint: window 4 (every 4th token wraps the ring), 4 query heads
/// on 2 KV heads, hidden 128 (so groups of 32, 64 and 128 all fit).
const HIDDEN: usize = 128;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 32;
const FFN: usize = 256;
const WINDOW: usize = 4;
const LAYERS: [&str; 3] = ["sliding_attention", "sliding_attention", "full_attention"];
const VOCAB: usize = 512;
/// Generated tokens per prompt: 16 times the window.
const NEW_TOKENS: &str = "64";
/// Positions of a session: the longer prompt and the generated tokens.
const CONTEXT: &str = "80";
/// Formats without int8 activations (`--quant`, with `/GROUP` for a group size).
const FLOAT_FORMATS: [&str; 3] = ["f32", "bf16", "q8bf16/32"];
/// q4bf16 in every group size.
const Q4_FORMATS: [&str; 3] = ["q4bf16/32", "q4bf16/64", "q4bf16/128"];
/// Largest TVM logit difference without int8 activations (float ordering: ~1e-5).
const FLOAT_ORDERING: f64 = 1e-4;
/// Token-id prompts: shorter and longer than the window.
const PROMPTS: &str = "2 10 20\n2 300 301 302 303 304 305 306 307\n";

/// xorshift64 and Box-Muller: deterministic normal samples without a dependency.
struct Normal(u64);

impl Normal {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self, mean: f32, std: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u, v) = (self.unit(), self.unit());
                let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                mean + std * z as f32
            })
            .collect()
    }
}

/// Writes the random checkpoint into `dir` (weights drawn as fixtures/gen/make_tiny.py does:
/// norms N(0, 0.5), the final norm N(1, 0.5), matrices N(0, 0.1); the tiny fixture's
/// tokenizer).
pub fn random_checkpoint(dir: &Path) -> PathBuf {
    let out = dir.join("win4");
    std::fs::create_dir_all(&out).unwrap();
    let mut rng = Normal(0x005E_ED0F_A4C4);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, mean: f32, std: f32| {
        let data = rng.sample(mean, std, shape.iter().product());
        tensors.push((name, shape, data));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, HIDDEN],
        0.0,
        0.1,
    );
    add("model.norm.weight".into(), vec![HIDDEN], 1.0, 0.5);
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    for i in 0..LAYERS.len() {
        let l = |n: &str| format!("model.layers.{i}.{n}.weight");
        for (n, shape) in [
            ("self_attn.q_proj", [q, HIDDEN]),
            ("self_attn.k_proj", [kv, HIDDEN]),
            ("self_attn.v_proj", [kv, HIDDEN]),
            ("self_attn.o_proj", [HIDDEN, q]),
            ("mlp.gate_proj", [FFN, HIDDEN]),
            ("mlp.up_proj", [FFN, HIDDEN]),
            ("mlp.down_proj", [HIDDEN, FFN]),
        ] {
            add(l(n), shape.to_vec(), 0.0, 0.1);
        }
        for (n, width) in [
            ("input_layernorm", HIDDEN),
            ("post_attention_layernorm", HIDDEN),
            ("pre_feedforward_layernorm", HIDDEN),
            ("post_feedforward_layernorm", HIDDEN),
            ("self_attn.q_norm", HEAD_DIM),
            ("self_attn.k_norm", HEAD_DIM),
        ] {
            add(l(n), vec![width], 0.0, 0.5);
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    let tiny = gemma3_tiny();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny.join("config.json")).unwrap()).unwrap();
    let c = cfg.as_object_mut().unwrap();
    c.remove("_sliding_window_pattern");
    for (k, v) in [
        ("hidden_size", serde_json::json!(HIDDEN)),
        ("num_hidden_layers", serde_json::json!(LAYERS.len())),
        ("num_attention_heads", serde_json::json!(HEADS)),
        ("num_key_value_heads", serde_json::json!(KV_HEADS)),
        ("head_dim", serde_json::json!(HEAD_DIM)),
        ("intermediate_size", serde_json::json!(FFN)),
        ("sliding_window", serde_json::json!(WINDOW)),
        ("layer_types", serde_json::json!(LAYERS)),
        ("vocab_size", serde_json::json!(VOCAB)),
    ] {
        c.insert(k.into(), v);
    }
    std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(tiny.join(f), out.join(f)).unwrap();
    }
    out
}

/// `alc compile` of `ckpt` for linux-arm64 in `format` (`q4bf16/64`: with a group size).
fn compile(dir: &Path, ckpt: &Path, format: &str) -> PathBuf {
    let (quant, group) = format.split_once('/').unwrap_or((format, "128"));
    let out = format!("out-{}", format.replace('/', "g"));
    let args = [
        "--cache-dir",
        "cache",
        "compile",
        ckpt.to_str().unwrap(),
        "--quant",
        quant,
        "--group-size",
        group,
        "--target",
        "linux-arm64",
        "-o",
        &out,
        "--json",
    ];
    let report = alc(dir, &args).ok().json();
    dir.join(report["archives"][0]["path"].as_str().unwrap())
}

/// `alc validate` under qemu on `backend`, with the KV cache stored as `kv` on both sides;
/// the report (it passed).
fn validate(dir: &Path, archive: &Path, backend: &str, kv: &str) -> serde_json::Value {
    let args = [
        "validate",
        archive.to_str().unwrap(),
        "--device",
        "qemu",
        "--backend",
        backend,
        "--prompts",
        "prompts.txt",
        "--max-new-tokens",
        NEW_TOKENS,
        "--context",
        CONTEXT,
        "--kv-cache",
        kv,
        "--runner-profile",
        "dev",
        "--json",
    ];
    let run = alc(dir, &args);
    let report = run.json();
    assert_eq!(run.code, 0, "{report:#}\n{}", run.stderr);
    assert_eq!(report["backend"], backend);
    assert_eq!(report["ok"], true);
    report
}

fn max_diff(report: &serde_json::Value) -> f64 {
    report["max_logit_diff"]["value"].as_f64().unwrap()
}

/// Every format of `formats` compiled for linux-arm64 from one checkpoint and validated
/// under qemu on both backends.
fn parity(formats: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = random_checkpoint(tmp.path());
    std::fs::write(tmp.path().join("prompts.txt"), PROMPTS).unwrap();
    for format in formats {
        let archive = compile(tmp.path(), &ckpt, format);
        // The native backend: the host's bits, on the default f16 KV cache.
        let native = validate(tmp.path(), &archive, "native", "f16");
        assert_eq!(max_diff(&native), 0.0, "{format}: {native:#}");
        assert_eq!(native["tokens_match"], true);
        assert!(native["near_ties"].as_array().unwrap().is_empty());
        let tvm = if format.starts_with("q4") {
            // int8 activations: near-ties within the tolerance are allowed.
            let tvm = validate(tmp.path(), &archive, "tvm", "f16");
            // Within the tolerance at its step (abs + rel * the host's scale there).
            let tolerance = tvm["max_logit_diff"]["tolerance"].as_f64().unwrap();
            assert!(max_diff(&tvm) <= tolerance, "{format}: {tvm:#}");
            tvm
        } else {
            // Float ordering only, on an f32 KV cache (an f16 one rounds keys and values,
            // turning last-bit differences into f16 steps).
            let tvm = validate(tmp.path(), &archive, "tvm", "f32");
            assert!(max_diff(&tvm) < FLOAT_ORDERING, "{format}: {tvm:#}");
            assert_eq!(tvm["tokens_match"], true, "{format}: {tvm:#}");
            tvm
        };
        let ties = tvm["near_ties"].as_array().unwrap().len();
        eprintln!(
            "{format}: arm64 tvm max logit diff {:.3e}, {ties} near-tie(s)",
            max_diff(&tvm)
        );
    }
}

#[test]
fn arm64_parity_under_qemu_float_formats() {
    parity(&FLOAT_FORMATS);
}

#[test]
fn arm64_parity_under_qemu_q4bf16_groups() {
    parity(&Q4_FORMATS);
}
