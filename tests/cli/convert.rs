//! `alc convert`: GGUF -> Hugging Face checkpoint, on the committed tiny GGUFs
//! (`fixtures/gguf/`, made by `fixtures/gen/make_gguf.py`) and, in the ignored `real_*` tests
//! (`make test-real`), on the real Gemma 3 270M fetched by `make real-models`.

use std::path::{Path, PathBuf};

use ava_core::{Checkpoint, DType, LayerKind};

use crate::{alc, fixtures, listing};

fn tiny_gguf() -> PathBuf {
    fixtures().join("gguf/gemma3-tiny.gguf")
}

fn legacy() -> PathBuf {
    fixtures().join("models/gemma3-tiny-legacy")
}

fn convert(dir: &Path, extra: &[&str]) -> crate::Run {
    let gguf = tiny_gguf();
    let mut args = vec!["convert", gguf.to_str().unwrap(), "-o", "out"];
    args.extend_from_slice(extra);
    alc(dir, &args)
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn tiny_gguf_gives_back_the_original_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = convert(tmp.path(), &["--json"]).ok();
    let report = run.json();
    assert_eq!(report["tensors"], 80);
    assert_eq!(report["dtype"], "f32");
    assert_eq!(report["vocab_rows"], 512);
    assert_eq!(report["source_types"]["BF16"], 43);
    let out = Checkpoint::open(&tmp.path().join("out")).unwrap();
    let cfg = out.gemma3().unwrap();
    out.check_shapes(&cfg.expected_tensors()).unwrap();
    let original = Checkpoint::open(&legacy()).unwrap();
    assert_eq!(out.tensor_infos().len(), original.tensor_infos().len());
    for info in original.tensor_infos() {
        let want = original.tensor(&info.name).unwrap().to_f32_vec().unwrap();
        let view = out.tensor(&info.name).unwrap();
        assert_eq!(view.dtype, DType::F32);
        assert_eq!(view.shape, info.shape.as_slice(), "{}", info.name);
        let got = view.to_f32_vec().unwrap();
        if info.name.ends_with("norm.weight") {
            // bf16 w -> f32 (w + 1) in the GGUF -> f32 (w + 1) - 1: off by at most half an ulp of 1.
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0, f32::max);
            assert!(worst <= 1e-6, "{}: {worst}", info.name);
        } else {
            assert_eq!(got, want, "{}", info.name);
        }
    }
    assert_eq!(
        listing(tmp.path()),
        vec!["out"],
        "no temporary directory left behind"
    );
}

#[test]
fn tiny_gguf_config_matches_the_original_where_gguf_can_say() {
    let tmp = tempfile::tempdir().unwrap();
    convert(tmp.path(), &[]).ok();
    let ours = Checkpoint::open(&tmp.path().join("out"))
        .unwrap()
        .gemma3()
        .unwrap();
    let orig = Checkpoint::open(&legacy()).unwrap().gemma3().unwrap();
    assert_eq!(ours.vocab_size, orig.vocab_size);
    assert_eq!(ours.hidden_size, orig.hidden_size);
    assert_eq!(ours.intermediate_size, orig.intermediate_size);
    assert_eq!(ours.num_hidden_layers, orig.num_hidden_layers);
    assert_eq!(ours.num_attention_heads, orig.num_attention_heads);
    assert_eq!(ours.num_key_value_heads, orig.num_key_value_heads);
    assert_eq!(ours.head_dim, orig.head_dim);
    assert_eq!(ours.rms_norm_eps, orig.rms_norm_eps);
    assert_eq!(ours.sliding_window, orig.sliding_window);
    assert_eq!(ours.max_position_embeddings, orig.max_position_embeddings);
    assert_eq!(ours.rope_global, orig.rope_global);
    assert_eq!(ours.rope_local, orig.rope_local);
    assert_eq!(ours.tie_word_embeddings, orig.tie_word_embeddings);
    assert_eq!(ours.bos_token_id, orig.bos_token_id);
    assert_eq!(ours.pad_token_id, orig.pad_token_id);
    assert_eq!(ours.hidden_activation, orig.hidden_activation);
    // What a llama.cpp GGUF cannot carry, so llama.cpp (and we) assume Gemma 3's values: the
    // fixture's layer pattern 3 becomes 5:1, query_pre_attn_scalar 24 becomes head_dim, and
    // only the first EOS id (1 of [1, 6]) is kept.
    let s = LayerKind::Sliding;
    assert_eq!(ours.layer_types, vec![s, s, s, s, s, LayerKind::Full]);
    assert_eq!(
        orig.layer_types,
        vec![s, s, LayerKind::Full, s, s, LayerKind::Full]
    );
    assert_eq!(ours.query_pre_attn_scalar, ours.head_dim as f64);
    assert_eq!(orig.query_pre_attn_scalar, 24.0);
    assert_eq!(ours.eos_token_ids, vec![1]);
    let raw = json_file(&tmp.path().join("out/config.json"));
    assert_eq!(raw["model_type"], "gemma3_text");
    assert_eq!(raw["architectures"][0], "Gemma3ForCausalLM");
    assert_eq!(
        raw["rope_parameters"]["sliding_attention"]["rope_theta"],
        10000.0
    );
    assert_eq!(
        raw["rope_parameters"]["full_attention"]["rope_type"],
        "default"
    );
    assert_eq!(raw["dtype"], "float32");
}

#[test]
fn bf16_output_and_tokenizer_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = legacy().join("tokenizer.json");
    convert(
        tmp.path(),
        &["--dtype", "bf16", "--tokenizer", tok.to_str().unwrap()],
    )
    .ok();
    let out = tmp.path().join("out");
    assert_eq!(
        listing(&out),
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        std::fs::read(&tok).unwrap()
    );
    let ours = Checkpoint::open(&out).unwrap();
    let orig = Checkpoint::open(&legacy()).unwrap();
    assert_eq!(ours.gemma3().unwrap().dtype.as_deref(), Some("bfloat16"));
    // The fixture is bf16 already: every matrix comes back byte for byte, and the norms too
    // (the f32 error of +1 -1 is far below half a bf16 ulp).
    for info in orig.tensor_infos() {
        let (a, b) = (
            ours.tensor(&info.name).unwrap(),
            orig.tensor(&info.name).unwrap(),
        );
        assert_eq!(a.dtype, DType::BF16);
        assert_eq!(a.data, b.data, "{}", info.name);
    }
}

#[test]
fn existing_output_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("out")).unwrap();
    let run = convert(tmp.path(), &[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
}

#[test]
fn bad_inputs_name_the_file_and_leave_nothing() {
    // Hostile files generated by the GGUF reader's tests, written outside the working directory.
    let inputs = tempfile::tempdir().unwrap();
    let mut cases = vec![
        (
            fixtures().join("gguf/blocks.gguf"),
            "unsupported architecture `blocks-test`",
        ),
        (
            write_input(inputs.path(), "valid", &crate::hostile_gguf::valid()),
            "tensor `token_embd.weight`: missing",
        ),
    ];
    for name in [
        "bad-magic",
        "truncated-header",
        "data-past-eof",
        "absurd-tensor-count",
    ] {
        let case = crate::hostile_gguf::case(name);
        cases.push((write_input(inputs.path(), name, &case.bytes), case.error));
    }
    for (path, needle) in cases {
        let file = path.display();
        let tmp = tempfile::tempdir().unwrap();
        let run = alc(
            tmp.path(),
            &["convert", path.to_str().unwrap(), "-o", "out"],
        );
        assert_eq!(run.code, 1, "{file}: {}", run.stderr);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(run.stderr.contains(name), "{file}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{file}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{file}: {}", run.stderr);
        assert!(
            listing(tmp.path()).is_empty(),
            "{file}: left {:?}",
            listing(tmp.path())
        );
    }
}

/// Writes `bytes` as `{name}.gguf` in `dir`.
fn write_input(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn truncated_tensor_data_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(tiny_gguf()).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
    let run = alc(tmp.path(), &["convert", "cut.gguf", "-o", "out"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("cut.gguf") && run.stderr.contains("tensor `"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("runs past the end"), "{}", run.stderr);
    assert_eq!(listing(tmp.path()), ["cut.gguf"]);
}

// --- the real Gemma 3 270M (`make test-real`) ----------------------------------------------

fn real_models() -> PathBuf {
    std::env::var_os("AVA_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models"))
}

#[test]
#[ignore = "needs the real Gemma 3 270M: run `make test-real`"]
fn real_gemma3_270m_config() {
    for dtype in ["f32", "bf16"] {
        let dir = real_models().join(format!("gemma3-270m-{dtype}"));
        let ck = Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{e} (run `make real-models`)"));
        let cfg = ck.gemma3().unwrap();
        ck.check_shapes(&cfg.expected_tensors()).unwrap();
        assert_eq!(cfg.hidden_size, 640);
        assert_eq!(cfg.num_hidden_layers, 18);
        assert_eq!(cfg.num_attention_heads, 4);
        assert_eq!(cfg.num_key_value_heads, 1);
        assert_eq!(cfg.head_dim, 256);
        assert_eq!(cfg.intermediate_size, 2048);
        assert_eq!(cfg.sliding_window, 512);
        assert_eq!(cfg.vocab_size, 262_144);
        assert_eq!(cfg.max_position_embeddings, 32_768);
        assert_eq!(cfg.query_pre_attn_scalar, 256.0);
        assert_eq!(cfg.rope_global.theta, 1_000_000.0);
        assert_eq!(cfg.rope_local.theta, 10_000.0);
        assert_eq!(cfg.rms_norm_eps, 1e-6);
        assert!(cfg.tie_word_embeddings);
        let global: Vec<usize> = (0..18)
            .filter(|&i| cfg.layer_types[i] == LayerKind::Full)
            .collect();
        assert_eq!(global, [5, 11, 17]);
        assert_eq!(
            (
                cfg.bos_token_id,
                cfg.eos_token_ids.clone(),
                cfg.pad_token_id
            ),
            (2, vec![1], 0)
        );
        assert!(dir.join("tokenizer.json").is_file());
    }
}

#[test]
#[ignore = "needs the real Gemma 3 270M: run `make test-real`"]
fn real_gemma3_270m_matches_gguf_py() {
    let reference = json_file(&real_models().join("gguf-reference.json"));
    let f32_dir = real_models().join("gemma3-270m-f32");
    let bf16_dir = real_models().join("gemma3-270m-bf16");
    let (ck, ck16) = (
        Checkpoint::open(&f32_dir).unwrap(),
        Checkpoint::open(&bf16_dir).unwrap(),
    );
    let mut types = std::collections::BTreeSet::new();
    for t in reference["tensors"].as_array().unwrap() {
        let name = t["hf_name"].as_str().unwrap();
        types.insert(t["type"].as_str().unwrap().to_string());
        let (view, view16) = (ck.tensor(name).unwrap(), ck16.tensor(name).unwrap());
        assert_eq!((view.dtype, view16.dtype), (DType::F32, DType::BF16));
        let cols = *view.shape.last().unwrap();
        let rows = t["rows"].as_array().unwrap();
        for (row, bits) in rows.iter().zip(t["bits"].as_array().unwrap()) {
            let r = row.as_u64().unwrap() as usize;
            let got = &view.data[r * cols * 4..(r + 1) * cols * 4];
            let got16 = &view16.data[r * cols * 2..(r + 1) * cols * 2];
            let want = bits.as_array().unwrap();
            assert_eq!(want.len(), cols, "{name} row {r}");
            for (i, w) in want.iter().enumerate() {
                let w = f32::from_bits(w.as_u64().unwrap() as u32);
                let g = f32::from_le_bytes(got[4 * i..4 * i + 4].try_into().unwrap());
                assert_eq!(g.to_bits(), w.to_bits(), "{name}[{r}, {i}]: {g} vs {w}");
                let g16 = half::bf16::from_le_bytes([got16[2 * i], got16[2 * i + 1]]);
                assert_eq!(g16, half::bf16::from_f32(w), "{name}[{r}, {i}] bf16");
            }
        }
    }
    for ty in ["F32", "Q5_0", "Q8_0", "Q4_K", "Q6_K"] {
        assert!(
            types.contains(ty),
            "reference has no {ty} tensor: {types:?}"
        );
    }
}
