//! The real Gemma 3 270M through the runtime (`make test-real`, after `make real-models`):
//! greedy text as llama.cpp gives it, and logits against an independent NumPy forward.

use std::fs;
use std::path::{Path, PathBuf};

use crate::alc;
use crate::common::read_npy;

const PROMPT: &str = "The capital of France is";
/// llama.cpp's greedy continuation of `PROMPT` on this model (../shared/notes/models.md).
const LLAMA_CPP_CONTINUATION: &str = " the capital of the country of France. It is the largest";

fn models() -> PathBuf {
    std::env::var_os("AVA_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models"))
}

fn generate(model: &Path, dir: &Path) -> (serde_json::Value, Vec<f32>) {
    let run = alc(
        dir,
        &[
            "--json",
            "run",
            model.to_str().unwrap(),
            "--prompt",
            PROMPT,
            "--max-tokens",
            "12",
            "--logits-out",
            "l.npy",
        ],
    )
    .ok();
    let logits = read_npy(&fs::read(dir.join("l.npy")).unwrap());
    (run.json(), logits)
}

#[test]
#[ignore = "needs the real Gemma 3 270M: run `make test-real`"]
fn real_gemma3_270m_generates_like_llama_cpp_and_numpy() {
    let tmp = tempfile::tempdir().unwrap();
    let (report, logits) = generate(&models().join("gemma3-270m-f32"), tmp.path());
    assert_eq!(report["text"], LLAMA_CPP_CONTINUATION);
    let reference = read_npy(&fs::read(models().join("reference/capital-of-france.npy")).unwrap());
    assert_eq!(logits.len(), reference.len());
    let diff = logits
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-2, "max |logit - numpy| = {diff}");
}

#[test]
#[ignore = "needs the real Gemma 3 270M: run `make test-real`"]
fn real_gemma3_270m_bf16_archive_runs_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let model = models().join("gemma3-270m-bf16");
    alc(
        tmp.path(),
        &["-q", "package", model.to_str().unwrap(), "-o", "m.tar"],
    )
    .ok();
    let (report, _) = generate(&tmp.path().join("m.tar"), tmp.path());
    let text = report["text"].as_str().unwrap();
    assert!(text.starts_with(" the capital of"), "{text:?}");
    // Weights are used in place from the mapped archive; from the checkpoint directory they
    // are copied, so its peak resident memory is higher by about the weights' size.
    let (from_dir, _) = generate(&model, tmp.path());
    let archive_rss = report["peak_rss_bytes"].as_u64().unwrap();
    let dir_rss = from_dir["peak_rss_bytes"].as_u64().unwrap();
    let weights = report["weights_bytes"].as_u64().unwrap();
    assert!(
        archive_rss + weights / 2 < dir_rss,
        "archive {archive_rss}, directory {dir_rss}, weights {weights}"
    );
}

/// `PROMPT` as the Gemma 3 tokenizer gives it (`<bos>` first).
const PROMPT_IDS: &str = "2 818 5279 529 7001 563\n";

#[test]
#[ignore = "needs the real Gemma 3 270M: run `make test-real`"]
fn real_gemma3_270m_bf16_native_under_qemu_gives_the_host_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let model = models().join("gemma3-270m-bf16");
    alc(
        tmp.path(),
        &["-q", "package", model.to_str().unwrap(), "-o", "m.tar"],
    )
    .ok();
    fs::write(tmp.path().join("p.txt"), PROMPT_IDS).unwrap();
    // The native backend on linux-arm64 (qemu) against the host's, teacher-forced, each step's
    // logits compared: equal to the bit (docs/runtime.md, "Numerical contract").
    let run = alc(
        tmp.path(),
        &[
            "validate",
            "m.tar",
            "--device",
            "qemu",
            "--backend",
            "native",
            "--prompts",
            "p.txt",
            "--max-new-tokens",
            "3",
            "--context",
            "16",
            "--runner-profile",
            "dev",
            "--json",
        ],
    );
    let report = run.json();
    assert_eq!(run.code, 0, "{report:#}\n{}", run.stderr);
    assert_eq!(report["backend"], "native");
    assert_eq!(report["tokens_match"], true, "{report:#}");
    assert_eq!(report["max_logit_diff"]["value"], 0.0, "{report:#}");
    assert!(report["max_logit_diff"]["scale"].as_f64().unwrap() > 1.0);
}
