//! `alc bench` and `aon bench`: the report's shape and that every figure is a positive speed
//! or latency (no timing thresholds).

use serde_json::Value;

use crate::{alc, aon, gemma3_tiny};

fn positive(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| x > 0.0 && x.is_finite())
}

#[test]
fn alc_bench_reports_each_test_in_json_and_markdown() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let model = model.to_str().unwrap();
    let args = [
        "bench",
        model,
        "-p",
        "8,16",
        "-n",
        "4",
        "-r",
        "3",
        "--threads",
        "2",
    ];
    let json = alc(tmp.path(), &[&["--json"][..], &args].concat())
        .ok()
        .json();
    assert_eq!(json["threads"], 2, "{json}");
    assert_eq!(json["repetitions"], 3, "{json}");
    assert_eq!(json["backend"], "native", "{json}");
    assert!(json["weights_bytes"].as_u64().unwrap() > 0, "{json}");
    let results = json["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["test"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pp8", "pp16", "tg4"]);
    for (r, (p, n)) in results.iter().zip([(8, 0), (16, 0), (0, 4)]) {
        assert_eq!(
            (r["n_prompt"].as_u64(), r["n_gen"].as_u64()),
            (Some(p), Some(n))
        );
        let samples = r["samples_ts"].as_array().unwrap();
        assert_eq!(samples.len(), 3, "{r}");
        assert!(samples.iter().all(positive), "{r}");
        assert!(positive(&r["avg_ts"]), "{r}");
        assert!(r["stddev_ts"].as_f64().unwrap() >= 0.0, "{r}");
        let mean = samples.iter().map(|s| s.as_f64().unwrap()).sum::<f64>() / 3.0;
        assert!(
            (mean - r["avg_ts"].as_f64().unwrap()).abs() <= 1e-9 * mean,
            "{r}"
        );
    }
    let text = alc(tmp.path(), &args).ok().stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].starts_with("| model |") && lines[0].contains("t/s"),
        "{text}"
    );
    for (line, test) in lines[2..].iter().zip(["pp8", "pp16", "tg4"]) {
        assert!(
            line.contains(&format!("| {test} |")) && line.contains(" ± "),
            "{text}"
        );
    }
}

#[test]
fn alc_bench_refuses_empty_and_oversized_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let model = model.to_str().unwrap();
    let run = alc(tmp.path(), &["bench", model, "-p", "0", "-n", "0"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("nothing to time"), "{}", run.stderr);
    let run = alc(tmp.path(), &["bench", model, "-p", "1000000", "-n", "0"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("at most"), "{}", run.stderr);
    assert_eq!(alc(tmp.path(), &["bench", model, "-r", "0"]).code, 2);
}

/// `aon bench`, and `aon eval --limit` (sharing the compiled archive): a limited eval samples
/// across the intents, not the first utterances of the file (sorted by intent).
#[test]
fn aon_bench_reports_latency_percentiles_and_eval_samples_every_intent() {
    let tmp = tempfile::tempdir().unwrap();
    let c = crate::aon_runtime::compile_tiny(tmp.path(), &[]);
    let archive = c["archive"].as_str().unwrap();
    let run = aon(
        tmp.path(),
        &[
            "bench",
            archive,
            "-r",
            "2",
            "--limit",
            "5",
            "--threads",
            "1",
            "--json",
        ],
    )
    .ok();
    let r = run.json();
    assert_eq!(r["utterances"], 5, "{r}");
    assert_eq!(r["repetitions"], 2, "{r}");
    assert_eq!(r["threads"], 1, "{r}");
    for key in [
        "p50_ms",
        "p95_ms",
        "mean_ms",
        "model_p50_ms",
        "model_p95_ms",
        "utterances_per_s",
    ] {
        assert!(positive(&r[key]), "{key}: {r}");
    }
    assert!(r["p95_ms"].as_f64() >= r["p50_ms"].as_f64(), "{r}");
    let text = aon(tmp.path(), &["bench", archive, "-r", "1", "--limit", "3"])
        .ok()
        .stdout;
    assert!(
        text.contains("3 utterances x 1") && text.contains("p95"),
        "{text}"
    );

    let clinc = crate::fixtures().join("gen/data/clinc150.json");
    let eval = |seed: &str| {
        let args = [
            "eval",
            archive,
            "--data",
            clinc.to_str().unwrap(),
            "--limit",
            "20",
            "--seed",
            seed,
            "--predictions",
            "p.json",
            "--json",
        ];
        let report = aon(tmp.path(), &args).ok().json();
        assert_eq!(report["utterances"], 20, "{report}");
        let dump: Value =
            serde_json::from_slice(&std::fs::read(tmp.path().join("p.json")).unwrap()).unwrap();
        (dump["gold"].clone(), dump["input_ids"].clone())
    };
    // The tiny classifier knows 5 intents: 20 utterances are 4 of each, where the first 20 of
    // the file (sorted by intent) would be one intent's.
    let (gold, ids) = eval("0");
    let labels = gold.as_array().unwrap();
    for intent in labels {
        assert_eq!(labels.iter().filter(|g| *g == intent).count(), 4, "{gold}");
    }
    assert_eq!(eval("0").1, ids);
    assert_ne!(eval("1").1, ids);
}
