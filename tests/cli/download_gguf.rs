//! Hub sources that are a GGUF file of a repository (`compile`/`convert REPO --gguf FILE`) and
//! hub ids for the aon verbs, served by the loopback hub.

use std::fs;

use crate::download::{fixture_bytes, Home, WEIGHTS};
use crate::hubserver::{HubServer, Repo, RepoFile, Revision};
use crate::{fixtures, gemma3_tiny};

/// A GGUF repository as they are published: several quantizations, a README, and (in
/// `ava-test/gemma3-tiny-GGUF`, not in `-bare`) the tokenizer.json.
fn gguf_repo(id: &str, with_tokenizer: bool) -> Repo {
    let file = |path: &str, bytes: Vec<u8>| RepoFile {
        lfs: path.ends_with(".gguf"),
        path: path.into(),
        bytes,
    };
    let tiny = fs::read(fixtures().join("gguf/gemma3-tiny.gguf")).unwrap();
    let mut files = vec![
        file("README.md", b"# tiny GGUF".to_vec()),
        file("gemma3-tiny-Q8_0.gguf", tiny.clone()),
        file(
            "other/gemma3-tiny-BF16.gguf",
            tiny[..tiny.len() / 2].to_vec(),
        ),
    ];
    if with_tokenizer {
        files.push(file("tokenizer.json", fixture_bytes("tokenizer.json")));
    }
    Repo {
        id: id.into(),
        revisions: vec![Revision {
            commit: GGUF_COMMIT.into(),
            names: vec!["main".into()],
            files,
        }],
    }
}

/// Commit of the GGUF repositories at `main`.
const GGUF_COMMIT: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";

/// `compile`/`convert REPO --gguf FILE` fetch that file and the repository's tokenizer.json
/// alone, and record the commit.
#[test]
fn compile_and_convert_a_gguf_file_of_a_hub_repository() {
    let repo = "ava-test/gemma3-tiny-GGUF";
    let bare = "ava-test/gemma3-tiny-GGUF-bare";
    let server = HubServer::start(vec![gguf_repo(repo, true), gguf_repo(bare, false)]);
    let home = Home::new();
    let file = "gemma3-tiny-Q8_0.gguf";
    let compile = |source: &str, extra: &[&str]| {
        let mut args = vec![
            "--cache-dir",
            "cache",
            "--json",
            "compile",
            source,
            "--gguf",
            file,
            "--quant",
            "f32",
            "--target",
            "linux-x86_64",
            "--exclude",
            "goldens.json",
            "-o",
            "out",
        ];
        args.extend_from_slice(extra);
        home.alc(&server, &[], &args)
    };
    let report = compile(repo, &[]).ok().json();
    assert_eq!(report["stages"][0]["stage"], "convert");
    let archive = "out/gemma3-tiny-q8_0-f32-linux-x86_64-v1.tar";
    assert_eq!(report["archives"][0]["path"], archive);
    let fetched: Vec<String> = server
        .file_requests()
        .iter()
        .filter(|s| s.method == "GET")
        .map(|s| s.path.rsplit('/').next().unwrap().to_string())
        .collect();
    assert!(
        fetched.iter().all(|f| f == file || f == "tokenizer.json"),
        "{fetched:?}"
    );
    assert!(fetched.iter().any(|f| f == "tokenizer.json"), "{fetched:?}");
    let snapshot = home.snapshot(repo, GGUF_COMMIT);
    let mut cached: Vec<String> = fs::read_dir(&snapshot)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cached.sort();
    assert_eq!(cached, [file, "tokenizer.json"]);
    let manifest = home
        .alc(&server, &[], &["inspect", archive, "--json"])
        .ok()
        .json();
    assert_eq!(manifest["manifest"]["source"]["repository"], repo);
    assert_eq!(manifest["manifest"]["source"]["revision"], GGUF_COMMIT);

    // A repository without tokenizer.json: say so, and take --tokenizer.
    let run = compile(bare, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("--tokenizer"), "{}", run.stderr);
    let tokenizer = gemma3_tiny().join("tokenizer.json");
    let tok = tokenizer.to_str().unwrap();
    // Same file name, another repository: never over the first's archive.
    let clash = compile(bare, &["--tokenizer", tok]);
    assert!(clash.stderr.contains("another source"), "{}", clash.stderr);
    let next = compile(bare, &["--tokenizer", tok, "--package-version", "auto"])
        .ok()
        .json();
    assert_eq!(
        next["archives"][0]["path"],
        "out/gemma3-tiny-q8_0-f32-linux-x86_64-v2.tar"
    );
    // A file the repository does not have is named; so is a name that is no GGUF.
    let run = home.alc(
        &server,
        &[],
        &["convert", repo, "--gguf", "nope.gguf", "-o", "c"],
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("nope.gguf"), "{}", run.stderr);
    let run = home.alc(
        &server,
        &[],
        &["convert", repo, "--gguf", "README.md", "-o", "c"],
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not a .gguf"), "{}", run.stderr);

    // convert: the file in a sub-folder, the commit in the report, the tokenizer copied.
    let sub = "other/gemma3-tiny-BF16.gguf";
    let run = home.alc(
        &server,
        &[],
        &["convert", repo, "--gguf", sub, "-o", "half"],
    );
    assert_eq!(run.code, 1, "a truncated file is refused: {}", run.stderr);
    assert!(!home.path().join("half").exists());
    let report = home
        .alc(
            &server,
            &[("HF_HUB_OFFLINE", "1")],
            &["--json", "convert", repo, "--gguf", file, "-o", "ckpt"],
        )
        .ok()
        .json();
    assert_eq!(report["source"]["repository"], repo);
    assert_eq!(report["source"]["revision"], GGUF_COMMIT);
    assert!(home.path().join("ckpt/tokenizer.json").is_file());
    assert!(home.path().join("ckpt/model.safetensors").is_file());
}

/// `aon convert` and `aon compile` take a hub id as alc does, and record its commit.
#[test]
fn aon_convert_and_compile_take_a_hub_id_and_record_the_commit() {
    let id = "ava-test/albert-clinc";
    let commit = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";
    let dir = fixtures().join("models/albert-clinc");
    let server = HubServer::start(vec![Repo::from_dir(id, commit, &["main"], &dir)]);
    let home = Home::new();
    let report = home
        .aon(&server, &[], &["--json", "convert", id, "-o", "conv"])
        .ok()
        .json();
    assert_eq!(report["source"]["repository"], id);
    assert_eq!(report["source"]["revision"], commit);
    assert!(home.path().join("conv/labels.json").is_file());
    assert!(home.snapshot(id, commit).join(WEIGHTS).is_file());

    let clinc = fixtures().join("gen/data/clinc150.json");
    let args = [
        "--cache-dir",
        "cache",
        "--json",
        "compile",
        &format!("{id}@main"),
        "--intents",
        clinc.to_str().unwrap(),
        "--keep-head",
        "--quant",
        "f32",
        "--val-samples",
        "10",
        "-o",
        "out/",
    ];
    let report = home.aon(&server, &[], &args).ok().json();
    let archive = report["archive"].as_str().unwrap();
    assert_eq!(archive, "out/albert-clinc-f32-any-v1.tar");
    let m = home
        .alc(&server, &[], &["inspect", archive, "--json"])
        .ok()
        .json();
    assert_eq!(m["manifest"]["source"]["repository"], id);
    assert_eq!(m["manifest"]["source"]["revision"], commit);
    // A local directory stays local.
    let local = home
        .aon(
            &server,
            &[],
            &["convert", dir.to_str().unwrap(), "-o", "c2", "--json"],
        )
        .ok()
        .json();
    assert!(local.get("source").is_none(), "{local}");
}
