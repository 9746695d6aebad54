//! `download` and the commands that take a repository id (`package`, `compile`) against the
//! loopback hub of [`crate::hubserver`]: the token rule, gated and missing repos, offline
//! mode, filters, pinned revisions, local dirs, named files, and a cache written by the Python
//! `huggingface_hub`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::download::{fixture_bytes, start, tiny_repo, Home, GEMMA, MAIN, PATIENCE, V1, WEIGHTS};
use crate::hubserver::HubServer;
use crate::{fixtures, gemma3_tiny};

#[test]
fn token_goes_to_the_hub_only_never_to_the_storage_origin() {
    let server = start();
    let home = Home::new();
    server.faults(|f| f.redirect_lfs = true);
    let env = [("HF_TOKEN", "hf_secret")];
    home.alc(&server, &env, &["-q", "download", GEMMA]).ok();
    let seen = server.seen();
    let storage: Vec<_> = seen.iter().filter(|s| s.listener == "storage").collect();
    assert_eq!(storage.len(), 1, "{seen:?}");
    assert!(
        !storage[0].headers.contains_key("authorization"),
        "{seen:?}"
    );
    for s in seen.iter().filter(|s| s.listener == "hub") {
        assert_eq!(
            s.headers.get("authorization").map(String::as_str),
            Some("Bearer hf_secret"),
            "{s:?}"
        );
    }
    let got = fs::read(home.snapshot(GEMMA, MAIN).join(WEIGHTS)).unwrap();
    assert_eq!(got, fixture_bytes(WEIGHTS));
}

#[test]
fn gated_repo_needs_a_token_which_may_come_from_hf_home() {
    let server = start();
    let home = Home::new();
    server.faults(|f| f.gated = Some((GEMMA.into(), "hf_granted".into())));
    let run = home.alc(&server, &[], &["download", GEMMA]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("HTTP 401") && run.stderr.contains("gated or private"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("HF_TOKEN"), "{}", run.stderr);
    let refused = home.alc(&server, &[("HF_TOKEN", "hf_wrong")], &["download", GEMMA]);
    assert!(
        refused.stderr.contains("token was refused"),
        "{}",
        refused.stderr
    );
    fs::create_dir_all(home.path().join("hf")).unwrap();
    fs::write(home.path().join("hf/token"), "hf_granted\n").unwrap();
    home.alc(&server, &[], &["-q", "download", GEMMA]).ok();
}

#[test]
fn missing_repos_revisions_and_server_errors_are_explained() {
    let server = start();
    let home = Home::new();
    let run = home.alc(&server, &[], &["download", "ava-test/nope"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("repository ava-test/nope not found"),
        "{}",
        run.stderr
    );
    let run = home.alc(&server, &[], &["download", GEMMA, "--revision", "v9"]);
    assert!(run.stderr.contains("revision \"v9\""), "{}", run.stderr);
    let run = home.alc(&server, &[], &["download", "not/a/repo"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("invalid repository id"),
        "{}",
        run.stderr
    );

    // Two 500s are retried; a file that keeps failing gives up after a bounded number of tries.
    server.faults(|f| {
        f.status = vec![
            ("/api/models/".into(), 500, 2),
            (format!("/resolve/{MAIN}/config.json"), 503, u32::MAX),
        ]
    });
    let started = Instant::now();
    let run = home.alc(&server, &[], &["download", GEMMA]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("config.json") && run.stderr.contains("HTTP 503"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < PATIENCE);
    let failed_heads = server
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/config.json"))
        .count();
    assert!(failed_heads >= 1, "{:?}", server.seen());
}

#[test]
fn offline_uses_the_cache_alone_and_says_what_is_missing() {
    let server = start();
    let home = Home::new();
    let off = [("HF_HUB_OFFLINE", "1")];
    let run = home.alc(&server, &off, &["download", GEMMA]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("offline") && run.stderr.contains("not in the cache"),
        "{}",
        run.stderr
    );
    home.alc(
        &server,
        &[],
        &["-q", "download", GEMMA, "--exclude", "goldens.json"],
    )
    .ok();
    server.clear();
    let a = home.alc(&server, &off, &["download", GEMMA]).ok();
    let b = home
        .alc(&server, &[], &["--json", "download", "--offline", GEMMA])
        .ok();
    assert_eq!(
        a.stdout.trim(),
        home.snapshot(GEMMA, MAIN).to_str().unwrap()
    );
    assert_eq!(b.json()["commit"], MAIN);
    let pinned = home.alc(&server, &off, &["download", &format!("{GEMMA}@{MAIN}")]);
    pinned.ok();
    let missing = home.alc(
        &server,
        &off,
        &["download", GEMMA, "--include", "goldens.json"],
    );
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("goldens.json"),
        "{}",
        missing.stderr
    );
    assert!(server.seen().is_empty(), "{:?}", server.seen());
}

#[test]
fn include_and_exclude_globs() {
    let server = start();
    let home = Home::new();
    let args = [
        "--json",
        "download",
        GEMMA,
        "--include",
        "*.json",
        "--exclude",
        "tok*",
    ];
    let report = home.alc(&server, &[], &args).ok().json();
    let mut names: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["config.json", "generation_config.json", "goldens.json"]
    );
    assert!(server
        .file_requests()
        .iter()
        .all(|s| s.path.ends_with(".json") && !s.path.contains("/tok")));
    let none = home.alc(&server, &[], &["download", GEMMA, "--include", "*.onnx"]);
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("--include"), "{}", none.stderr);
}

#[test]
fn revision_pinned_by_commit_or_tag() {
    let server = start();
    let home = Home::new();
    let args = [
        "--json",
        "download",
        GEMMA,
        "--revision",
        V1,
        "--include",
        "config.json",
    ];
    let report = home.alc(&server, &[], &args).ok().json();
    assert_eq!(report["commit"], V1);
    let legacy = fixtures().join("models/gemma3-tiny-legacy/config.json");
    let got = home.snapshot(GEMMA, V1).join("config.json");
    assert_eq!(fs::read(got).unwrap(), fs::read(legacy).unwrap());
    assert!(!home.repo_dir(GEMMA).join("refs").join(V1).exists());
    assert!(server.seen().iter().all(|s| s.path.contains(V1)));
    let tagged = home
        .alc(
            &server,
            &[],
            &["--json", "download", &format!("{GEMMA}@v1")],
        )
        .ok()
        .json();
    assert_eq!(tagged["commit"], V1);
    let refs = fs::read_to_string(home.repo_dir(GEMMA).join("refs/v1")).unwrap();
    assert_eq!(refs, V1);
}

#[test]
fn python_huggingface_hub_cache_is_reused_as_is() {
    let (repo, commit) = tiny_repo("ava-test/tiny");
    let server = HubServer::start(vec![repo]);
    let home = Home::new();
    copy_tree(&fixtures().join("hub/cache"), &home.cache());
    let report = home
        .alc(&server, &[], &["--json", "download", "ava-test/tiny"])
        .ok()
        .json();
    assert_eq!(report["commit"], commit.as_str());
    assert_eq!(server.file_requests().len(), 0, "{:?}", server.seen());
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    assert!(files.iter().all(|f| f["downloaded"] == false));
    let snapshot = home.snapshot("ava-test/tiny", &commit);
    let notes = fs::read_to_string(snapshot.join("nested/notes.txt")).unwrap();
    assert!(notes.contains("deeper relative paths"));
    // And offline, from its refs/main.
    let off = home.alc(
        &server,
        &[("HF_HUB_OFFLINE", "true")],
        &["download", "ava-test/tiny"],
    );
    assert_eq!(off.ok().stdout.trim(), snapshot.to_str().unwrap());
}

#[test]
fn local_dir_holds_plain_files_and_resume_metadata() {
    let server = start();
    let home = Home::new();
    let args = [
        "-q",
        "download",
        GEMMA,
        "--local-dir",
        "out",
        "--exclude",
        "goldens.json",
    ];
    home.alc(&server, &[], &args).ok();
    let out = home.path().join("out");
    let weights = out.join(WEIGHTS);
    assert!(!fs::symlink_metadata(&weights)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&weights).unwrap(), fixture_bytes(WEIGHTS));
    let meta = out.join(".cache/huggingface/download/model.safetensors.metadata");
    let text = fs::read_to_string(meta).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], MAIN);
    assert_eq!(lines[1].len(), 64);
    assert!(lines[2].parse::<f64>().is_ok(), "{text}");
    assert!(
        !home.cache().exists(),
        "a local-dir download leaves the cache alone"
    );

    server.clear();
    home.alc(&server, &[], &args).ok();
    assert_eq!(server.file_requests().len(), 0, "{:?}", server.seen());

    // A file edited since is fetched again; the others are not.
    fs::write(out.join("config.json"), b"{}").unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(out.join("config.json"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    server.clear();
    home.alc(&server, &[], &args).ok();
    assert_eq!(
        fs::read(out.join("config.json")).unwrap(),
        fixture_bytes("config.json")
    );
    let paths: Vec<String> = server
        .file_requests()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert!(
        paths.iter().all(|p| p.ends_with("/config.json")),
        "{paths:?}"
    );
}

#[test]
fn package_accepts_a_repo_id_and_records_its_source() {
    let server = start();
    let home = Home::new();
    let args = [
        "--json",
        "package",
        GEMMA,
        "-o",
        "model.tar",
        "--exclude",
        "goldens.json",
    ];
    let report = home.alc(&server, &[], &args).ok().json();
    assert_eq!(report["source"]["repository"], GEMMA);
    assert_eq!(report["source"]["revision"], MAIN);
    assert!(home.path().join("model.tar").is_file());
    let bad = home.alc(&server, &[], &["package", "no-such-dir/x/y", "-o", "m.tar"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("no such file or directory"),
        "{}",
        bad.stderr
    );
}

/// Copies a tree, recreating symlinks as symlinks (the hub cache's snapshots).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `alc compile` names archives after the source and records the hub commit; a second source
/// of the same name never silently replaces the first's archive.
#[test]
fn compile_names_archives_by_source_records_the_commit_and_never_replaces_another() {
    let server = start();
    let home = Home::new();
    let fixture = gemma3_tiny();
    let compile = |source: &str, extra: &[&str]| {
        let mut args = vec![
            "--cache-dir",
            "cache",
            "compile",
            source,
            "--quant",
            "f32",
            "--target",
            "linux-x86_64",
            "--exclude",
            "goldens.json",
            "-o",
            "out",
            "--json",
        ];
        args.extend_from_slice(extra);
        home.alc(&server, &[], &args)
    };
    let source_of = |archive: &str| {
        let m = home
            .alc(&server, &[], &["inspect", archive, "--json"])
            .ok()
            .json();
        (
            m["manifest"]["source"]["repository"]
                .as_str()
                .unwrap()
                .to_string(),
            m["manifest"]["source"]["revision"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    let v1 = "out/gemma3-tiny-f32-linux-x86_64-v1.tar";
    let local = compile(fixture.to_str().unwrap(), &[]).ok().json();
    assert_eq!(local["archives"][0]["path"], v1);
    let (repo, rev) = source_of(v1);
    assert_eq!(repo, "local");
    assert!(rev.starts_with("sha256:"), "{rev}");

    // The hub repository of the same name: refused, the local archive untouched.
    let clash = compile(GEMMA, &[]);
    assert_eq!(clash.code, 1, "{}", clash.stderr);
    assert!(clash.stderr.contains("another source"), "{}", clash.stderr);
    assert!(clash.stderr.contains("--force"), "{}", clash.stderr);
    assert_eq!(source_of(v1).0, "local");

    // --package-version auto: the next version, with the commit the hub resolved `main` to.
    let auto = compile(GEMMA, &["--package-version", "auto"]).ok().json();
    let v2 = "out/gemma3-tiny-f32-linux-x86_64-v2.tar";
    assert_eq!(auto["archives"][0]["path"], v2);
    assert_eq!(source_of(v2), (GEMMA.to_string(), MAIN.to_string()));
    // --force replaces v1; the same source again needs no --force.
    compile(GEMMA, &["--force"]).ok();
    assert_eq!(source_of(v1), (GEMMA.to_string(), MAIN.to_string()));
    compile(GEMMA, &[]).ok();
}

#[test]
fn a_missing_local_path_is_never_fetched() {
    let server = start();
    let home = Home::new();
    for arg in [
        "model.tar",
        "dist/model.tar",
        "ava-test/gemma3-tiny.gguf",
        "./ava-test/gemma3-tiny",
        "ava-test/gemma3-tiny/extra",
        "gemma3-tiny",
    ] {
        let r = home.alc(&server, &[], &["package", arg, "-o", "x.tar"]);
        assert_eq!(r.code, 1, "{arg}: {}", r.stderr);
        assert!(
            r.stderr.contains("no such file or directory"),
            "{arg}: {}",
            r.stderr
        );
    }
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    // A well-formed id with no such path is fetched.
    home.alc(&server, &[], &["package", GEMMA, "-o", "x.tar"])
        .ok();
    assert!(!server.seen().is_empty());
}

#[test]
fn named_files_token_flag_and_dry_run() {
    let server = start();
    let home = Home::new();
    // A dry run lists the files with their sizes and fetches nothing.
    let plan = home
        .alc(&server, &[], &["--json", "download", GEMMA, "--dry-run"])
        .ok()
        .json();
    assert_eq!(plan["commit"], MAIN);
    let files = plan["files"].as_array().unwrap();
    assert_eq!(files.len(), fs::read_dir(gemma3_tiny()).unwrap().count());
    for f in files {
        let name = f["path"].as_str().unwrap();
        assert_eq!(f["size"], fixture_bytes(name).len() as u64, "{name}");
        assert_eq!(f["present"], false, "{name}");
    }
    assert!(server.file_requests().is_empty(), "{:?}", server.seen());
    assert!(!home.snapshot(GEMMA, MAIN).exists());

    // Files named after the repository, as the hub's CLI takes them: those alone.
    let report = home
        .alc(
            &server,
            &[],
            &["--json", "download", GEMMA, "config.json", "tokenizer.json"],
        )
        .ok()
        .json();
    let names: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["config.json", "tokenizer.json"]);
    let run = home.alc(&server, &[], &["download", GEMMA, "nope.json"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("nope.json: no such file"),
        "{}",
        run.stderr
    );

    // The dry run now sees what is here, in JSON and as text.
    let plan = home
        .alc(&server, &[], &["--json", "download", GEMMA, "--dry-run"])
        .ok()
        .json();
    for f in plan["files"].as_array().unwrap() {
        let here = ["config.json", "tokenizer.json"].contains(&f["path"].as_str().unwrap());
        assert_eq!(f["present"], here, "{f}");
    }
    let text = home
        .alc(&server, &[], &["download", GEMMA, "--dry-run"])
        .ok()
        .stdout;
    assert!(
        text.contains("(already here)") && text.contains(WEIGHTS),
        "{text}"
    );

    // --token is sent (and wins over HF_TOKEN) to a gated repository.
    server.faults(|f| f.gated = Some((GEMMA.into(), "hf_granted".into())));
    let env = [("HF_TOKEN", "hf_wrong")];
    let refused = home.alc(&server, &env, &["download", GEMMA, "config.json"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    home.alc(
        &server,
        &env,
        &[
            "-q",
            "download",
            GEMMA,
            "config.json",
            "--token",
            "hf_granted",
        ],
    )
    .ok();
    let bad = home.alc(&server, &[], &["download", GEMMA, "--token", "a\nb"]);
    assert_eq!(bad.code, 2);
}
