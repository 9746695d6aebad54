//! `alc run` against the transformers goldens of the tiny fixtures.

use std::fs;

use crate::common::{package_tiny, read_npy};
use crate::{alc, alc_stdin, gemma3_tiny};

fn golden(index: usize) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(gemma3_tiny().join("goldens.json")).unwrap()).unwrap();
    json["prompts"][index].clone()
}

#[test]
fn greedy_run_matches_goldens_from_an_archive() {
    let tmp = tempfile::tempdir().unwrap();
    package_tiny(tmp.path());
    let g = golden(0);
    let prompt = g["prompt"].as_str().unwrap();
    let run = alc(
        tmp.path(),
        &[
            "--json",
            "run",
            "m.tar",
            "--prompt",
            prompt,
            "--max-tokens",
            "32",
            "--ignore-eos",
            "--logits-out",
            "l.npy",
        ],
    )
    .ok();
    let report = run.json();
    assert_eq!(report["tokens"], g["greedy_ids"]);
    assert_eq!(report["stop_reason"], "max_tokens");
    assert_eq!(
        report["prompt_tokens"],
        g["input_ids"].as_array().unwrap().len()
    );
    for key in ["load_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s"] {
        assert!(report["timings"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(report["kv_cache_bytes"].as_u64().unwrap() > 0);
    let logits = read_npy(&fs::read(tmp.path().join("l.npy")).unwrap());
    let expected: Vec<f32> = g["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let diff = logits
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff <= 1e-3, "{diff}");
}

#[test]
fn streamed_text_and_prompt_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let g = golden(2);
    let ids: Vec<String> = g["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let model = gemma3_tiny();
    let run = alc(
        tmp.path(),
        &[
            "run",
            model.to_str().unwrap(),
            "--prompt-ids",
            &ids.join(","),
            "--max-tokens",
            "32",
            "--ignore-eos",
        ],
    )
    .ok();
    assert_eq!(
        run.stdout,
        format!("{}\n", g["greedy_text"].as_str().unwrap())
    );
}

#[test]
fn bad_requests_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let model = model.to_str().unwrap();
    let run = alc(
        tmp.path(),
        &[
            "run",
            model,
            "--prompt",
            "a b c d e f g h i j k l m n o p",
            "--context",
            "4",
        ],
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("context full"), "{}", run.stderr);
    let run = alc(tmp.path(), &["run", model, "--prompt-ids", "2,99999"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("outside the vocabulary"),
        "{}",
        run.stderr
    );
    assert_eq!(alc(tmp.path(), &["run", model]).code, 2);
    let run = alc(tmp.path(), &["run", "no-such-model", "--prompt", "x"]);
    assert_eq!(run.code, 1);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn prompt_from_stdin_and_from_a_file_match_the_inline_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let model = model.to_str().unwrap();
    let g = golden(0);
    let prompt = g["prompt"].as_str().unwrap();
    let ids = |run: crate::Run| {
        let report = run.ok().json();
        (report["tokens"].clone(), report["prompt_tokens"].clone())
    };
    let common = ["--json", "run", model, "--max-tokens", "8", "--ignore-eos"];
    fn with<'a>(common: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [common, extra].concat()
    }
    let stdin = ids(alc_stdin(
        tmp.path(),
        &with(&common, &["--prompt", "-"]),
        prompt,
    ));
    assert_eq!(
        stdin.0.as_array().unwrap()[..],
        g["greedy_ids"].as_array().unwrap()[..8]
    );
    assert_eq!(stdin.1, g["input_ids"].as_array().unwrap().len());
    fs::write(tmp.path().join("p.txt"), prompt).unwrap();
    let file = ids(alc(tmp.path(), &with(&common, &["--prompt-file", "p.txt"])));
    assert_eq!(file, stdin);
    let file_stdin = ids(alc_stdin(
        tmp.path(),
        &with(&common, &["--prompt-file", "-"]),
        prompt,
    ));
    assert_eq!(file_stdin, stdin);
    // A longer prompt on stdin gives a longer prompt: stdin is really read.
    let longer = format!("{prompt} {prompt}");
    let other = ids(alc_stdin(
        tmp.path(),
        &with(&common, &["--prompt", "-"]),
        &longer,
    ));
    assert!(other.1.as_u64() > stdin.1.as_u64());
    let run = alc(
        tmp.path(),
        &with(&common, &["--prompt-file", "missing.txt"]),
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("missing.txt"), "{}", run.stderr);
    let run = alc(
        tmp.path(),
        &with(&common, &["--prompt", "x", "--prompt-file", "p.txt"]),
    );
    assert_eq!(run.code, 2);
}

#[test]
fn threads_flag_sizes_the_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let g = golden(0);
    let prompt = g["prompt"].as_str().unwrap();
    for threads in ["1", "3"] {
        let run = alc(
            tmp.path(),
            &[
                "--json",
                "run",
                model.to_str().unwrap(),
                "--prompt",
                prompt,
                "--max-tokens",
                "8",
                "--ignore-eos",
                "--threads",
                threads,
            ],
        )
        .ok();
        let report = run.json();
        assert_eq!(report["threads"].to_string(), threads);
        assert_eq!(
            report["tokens"].as_array().unwrap()[..],
            g["greedy_ids"].as_array().unwrap()[..8]
        );
    }
    for bad in ["0", "5000", "x"] {
        let run = alc(tmp.path(), &["run", "m", "--prompt", "x", "--threads", bad]);
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
    }
}
