//! `ImportPlan::gemma3` on small GGUFs built here byte by byte: the optional keys llama.cpp
//! leaves out (layer pattern, local theta, RoPE scaling), an untied head, and the errors
//! (unknown architecture or tensor, shape mismatch, missing tensor, unsupported type).

use std::path::Path;

use ava_core::{Checkpoint, LayerKind, RopeScaling};
use ava_quantize::import::{write_checkpoint, ImportPlan, OutDtype};
use ava_quantize::GgufFile;

const HIDDEN: u64 = 256;
const HEADS: u64 = 2;
const HEAD_DIM: u64 = 32;
const FFN: u64 = 64;
const VOCAB: u64 = 8;
const ALIGN: usize = 32;
const F32: u32 = 0;
const Q2_K: u32 = 10;

struct Tensor {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

/// A gemma3 GGUF under construction: metadata entries (already encoded) and tensors.
struct Builder {
    kv: Vec<(String, Vec<u8>)>,
    tensors: Vec<Tensor>,
}

fn string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

impl Builder {
    fn gemma3(layers: u64) -> Self {
        let mut b = Builder {
            kv: Vec::new(),
            tensors: Vec::new(),
        };
        b.set_str("general.architecture", "gemma3");
        for (k, v) in [
            ("context_length", 128),
            ("embedding_length", HIDDEN as u32),
            ("block_count", layers as u32),
            ("feed_forward_length", FFN as u32),
            ("attention.head_count", HEADS as u32),
            ("attention.head_count_kv", 1),
            ("attention.key_length", HEAD_DIM as u32),
            ("attention.value_length", HEAD_DIM as u32),
            ("attention.sliding_window", 16),
        ] {
            b.set_u32(&format!("gemma3.{k}"), v);
        }
        b.set_f32("gemma3.attention.layer_norm_rms_epsilon", 1e-6);
        b.set_f32("gemma3.rope.freq_base", 1e6);
        b.tensor("token_embd.weight", &[HIDDEN, VOCAB]);
        b.tensor("output_norm.weight", &[HIDDEN]);
        let (q, kv) = (HEADS * HEAD_DIM, HEAD_DIM);
        for l in 0..layers {
            for (name, dims) in [
                ("attn_q", vec![HIDDEN, q]),
                ("attn_k", vec![HIDDEN, kv]),
                ("attn_v", vec![HIDDEN, kv]),
                ("attn_output", vec![q, HIDDEN]),
                ("attn_q_norm", vec![HEAD_DIM]),
                ("attn_k_norm", vec![HEAD_DIM]),
                ("attn_norm", vec![HIDDEN]),
                ("post_attention_norm", vec![HIDDEN]),
                ("ffn_norm", vec![HIDDEN]),
                ("post_ffw_norm", vec![HIDDEN]),
                ("ffn_gate", vec![HIDDEN, FFN]),
                ("ffn_up", vec![HIDDEN, FFN]),
                ("ffn_down", vec![FFN, HIDDEN]),
            ] {
                b.tensor(&format!("blk.{l}.{name}.weight"), &dims);
            }
        }
        b
    }

    fn set(&mut self, key: &str, ty: u32, value: Vec<u8>) {
        self.kv.retain(|(k, _)| k != key);
        let mut v = ty.to_le_bytes().to_vec();
        v.extend(value);
        self.kv.push((key.to_string(), v));
    }

    fn set_u32(&mut self, key: &str, v: u32) {
        self.set(key, 4, v.to_le_bytes().to_vec());
    }

    fn set_f32(&mut self, key: &str, v: f32) {
        self.set(key, 6, v.to_le_bytes().to_vec());
    }

    fn set_str(&mut self, key: &str, v: &str) {
        self.set(key, 8, string(v));
    }

    fn set_bools(&mut self, key: &str, v: &[bool]) {
        let mut out = 7u32.to_le_bytes().to_vec();
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.iter().map(|&b| b as u8));
        self.set(key, 9, out);
    }

    /// An F32 tensor whose element `i` is `i / 1000` (norms: `1 + i / 1000`).
    fn tensor(&mut self, name: &str, dims: &[u64]) {
        let n: u64 = dims.iter().product();
        let base = if name.ends_with("norm.weight") {
            1.0
        } else {
            0.0
        };
        let data = (0..n)
            .flat_map(|i| (base + i as f32 / 1000.0).to_le_bytes())
            .collect();
        self.tensors.retain(|t| t.name != name);
        self.tensors.push(Tensor {
            name: name.into(),
            dims: dims.to_vec(),
            ty: F32,
            data,
        });
    }

    fn remove(&mut self, name: &str) {
        self.tensors.retain(|t| t.name != name);
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            out.extend(string(k));
            out.extend(v);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            out.extend(string(&t.name));
            out.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(t.ty.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset += t.data.len().next_multiple_of(ALIGN);
        }
        for t in &self.tensors {
            out.resize(out.len().next_multiple_of(ALIGN), 0);
            out.extend(&t.data);
        }
        out
    }

    fn open(&self) -> GgufFile {
        GgufFile::from_bytes(Path::new("built.gguf"), self.bytes()).unwrap()
    }

    fn plan_err(&self) -> String {
        ImportPlan::gemma3(&self.open()).unwrap_err().to_string()
    }
}

#[test]
fn defaults_follow_llama_cpp() {
    let plan = ImportPlan::gemma3(&Builder::gemma3(12).open()).unwrap();
    let p = &plan.params;
    assert!(!p.layer_types_from_file);
    let global: Vec<usize> = (0..12)
        .filter(|&i| p.layer_types[i] == LayerKind::Full)
        .collect();
    assert_eq!(global, [5, 11]);
    assert_eq!((p.rope_theta_global, p.rope_theta_local), (1e6, 1e4));
    assert_eq!(
        p.rms_norm_eps, 1e-6,
        "f32 1e-6 is written as 1e-6, not 9.99e-7"
    );
    assert_eq!((p.bos_token_id, p.eos_token_id, p.pad_token_id), (2, 1, 0));
    assert!(p.tie_word_embeddings);
    assert_eq!(plan.config.query_pre_attn_scalar, HEAD_DIM as f64);
    assert_eq!(plan.tensors.len(), 2 + 12 * 13);
}

#[test]
fn optional_keys_are_honoured() {
    let mut b = Builder::gemma3(3);
    b.set_bools(
        "gemma3.attention.sliding_window_pattern",
        &[true, false, true],
    );
    b.set_f32("gemma3.rope.freq_base_swa", 5e4);
    b.set_str("gemma3.rope.scaling.type", "linear");
    b.set_f32("gemma3.rope.scaling.factor", 8.0);
    let plan = ImportPlan::gemma3(&b.open()).unwrap();
    let (s, f) = (LayerKind::Sliding, LayerKind::Full);
    assert_eq!(plan.config.layer_types, [s, f, s]);
    assert!(plan.params.layer_types_from_file);
    assert_eq!(plan.config.rope_local.theta, 5e4);
    assert_eq!(
        plan.config.rope_global.scaling,
        RopeScaling::Linear { factor: 8.0 }
    );
    assert_eq!(plan.config.rope_local.scaling, RopeScaling::None);
    b.set_u32("gemma3.attention.sliding_window_pattern", 2);
    let plan = ImportPlan::gemma3(&b.open()).unwrap();
    assert_eq!(plan.config.layer_types, [s, f, s]);
}

#[test]
fn untied_head_and_norm_offset_are_written() {
    let mut b = Builder::gemma3(1);
    b.tensor("output.weight", &[HIDDEN, VOCAB]);
    let file = b.open();
    let plan = ImportPlan::gemma3(&file).unwrap();
    assert!(!plan.params.tie_word_embeddings);
    let tmp = tempfile::tempdir().unwrap();
    write_checkpoint(&file, &plan, OutDtype::F32, tmp.path(), &mut |_| {}).unwrap();
    let ck = Checkpoint::open(tmp.path()).unwrap();
    let head = ck.tensor("lm_head.weight").unwrap();
    assert_eq!(head.shape, [VOCAB as usize, HIDDEN as usize]);
    let norm = ck
        .tensor("model.layers.0.self_attn.q_norm.weight")
        .unwrap()
        .to_f32_vec()
        .unwrap();
    assert_eq!(norm[0], 0.0);
    assert!((norm[5] - 0.005).abs() < 1e-7, "{}", norm[5]);
    let q = ck.tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(q.shape, [(HEADS * HEAD_DIM) as usize, HIDDEN as usize]);
    assert_eq!(
        q.to_f32_vec().unwrap()[HIDDEN as usize + 1],
        (HIDDEN + 1) as f32 / 1000.0
    );
}

#[test]
fn errors_name_the_tensor_or_key() {
    let mut b = Builder::gemma3(1);
    b.set_str("general.architecture", "llama");
    assert!(b
        .plan_err()
        .contains("built.gguf: unsupported architecture `llama`"));

    let mut b = Builder::gemma3(1);
    b.tensor("blk.0.attn_qkv.weight", &[HIDDEN, 3]);
    assert!(b
        .plan_err()
        .contains("tensor `blk.0.attn_qkv.weight`: not a known gemma3 tensor"));

    let mut b = Builder::gemma3(1);
    b.tensor("blk.0.ffn_up.weight", &[HIDDEN, FFN + 1]);
    let e = b.plan_err();
    assert!(
        e.contains("tensor `blk.0.ffn_up.weight`: shape mismatch"),
        "{e}"
    );

    let mut b = Builder::gemma3(1);
    b.remove("blk.0.attn_k_norm.weight");
    let e = b.plan_err();
    assert!(
        e.contains("tensor `blk.0.attn_k_norm.weight`: missing"),
        "{e}"
    );

    let mut b = Builder::gemma3(1);
    b.tensor("blk.1.attn_q.weight", &[HIDDEN, HEADS * HEAD_DIM]);
    assert!(b.plan_err().contains("`blk.1.attn_q.weight`: unexpected"));

    let mut b = Builder::gemma3(1);
    let t = b
        .tensors
        .iter_mut()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    t.ty = Q2_K;
    t.data.truncate((VOCAB * 84) as usize);
    let e = b.plan_err();
    assert!(
        e.contains("`token_embd.weight`: unsupported tensor type Q2_K"),
        "{e}"
    );

    // Hostile sizes are refused by name before anything is sized by them.
    for (key, value) in [
        ("block_count", u32::MAX),
        ("attention.head_count", 1 << 20),
        ("embedding_length", u32::MAX),
        ("feed_forward_length", u32::MAX),
        ("context_length", u32::MAX),
    ] {
        let mut b = Builder::gemma3(1);
        b.set_u32(&format!("gemma3.{key}"), value);
        let e = b.plan_err();
        assert!(e.contains(key) && e.contains("limit"), "{key}: {e}");
    }

    let mut b = Builder::gemma3(1);
    b.set_str("gemma3.block_count", "one");
    assert!(b
        .plan_err()
        .contains("metadata `gemma3.block_count`: expected an unsigned integer"));

    let mut b = Builder::gemma3(1);
    b.kv.retain(|(k, _)| k != "gemma3.attention.sliding_window");
    assert!(b
        .plan_err()
        .contains("`gemma3.attention.sliding_window`: missing"));
}
