//! `download` (and `package REPO_ID`) against the loopback hub of [`crate::hubserver`]: cache
//! layout, no second fetch, resume, verification, the token rule, offline mode, filters,
//! pinned revisions, local dirs, and a cache written by the Python `huggingface_hub`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::hubserver::{revision_from_dir, HubServer, Repo, RepoFile, Revision};
use crate::{fixtures, gemma3_tiny, Run};

/// Commit of `ava-test/gemma3-tiny` at `main` (the transformers-5 fixture).
const MAIN: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
/// An older commit, tagged `v1` (the legacy fixture).
const V1: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const GEMMA: &str = "ava-test/gemma3-tiny";
const WEIGHTS: &str = "model.safetensors";
/// Generous bound for anything a loaded machine has to wait for.
const PATIENCE: Duration = Duration::from_secs(120);

fn gemma_repo() -> Repo {
    let models = fixtures().join("models");
    Repo {
        id: GEMMA.into(),
        revisions: vec![
            revision_from_dir(V1, &["v1"], &models.join("gemma3-tiny-legacy")),
            revision_from_dir(MAIN, &["main"], &gemma3_tiny()),
        ],
    }
}

/// `ava-test/tiny` as described by fixtures/hub/repos.json (the repository the Python cache
/// fixture was made from).
fn tiny_repo(id: &str) -> (Repo, String) {
    let hub = fixtures().join("hub");
    let desc: serde_json::Value =
        serde_json::from_slice(&fs::read(hub.join("repos.json")).unwrap()).unwrap();
    let d = &desc["ava-test/tiny"];
    let commit = d["commit"].as_str().unwrap().to_string();
    let dir = hub.join(d["dir"].as_str().unwrap());
    let repo = Repo::from_dir(id, &commit, &["main"], &dir);
    (repo, commit)
}

fn start() -> HubServer {
    HubServer::start(vec![gemma_repo(), tiny_repo("ava-test/tiny").0])
}

/// A temporary home for one test: the hub cache is `{home}/hf/hub`.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cache(&self) -> PathBuf {
        self.path().join("hf/hub")
    }

    fn repo_dir(&self, id: &str) -> PathBuf {
        self.cache()
            .join(format!("models--{}", id.replace('/', "--")))
    }

    fn snapshot(&self, id: &str, commit: &str) -> PathBuf {
        self.repo_dir(id).join("snapshots").join(commit)
    }

    /// The binary with a clean hub environment pointing at `server` and this home.
    fn command(
        &self,
        bin: &str,
        server: &HubServer,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(self.path())
            .env("HF_ENDPOINT", &server.url)
            .env("HF_HOME", self.path().join("hf"))
            .env("HOME", self.path())
            .env("HF_HUB_DISABLE_TELEMETRY", "1");
        for var in [
            "HF_HUB_CACHE",
            "HF_TOKEN",
            "HF_TOKEN_PATH",
            "HF_HUB_OFFLINE",
            "AVA_CACHE_DIR",
            "XDG_CACHE_HOME",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run_bin(&self, bin: &str, server: &HubServer, env: &[(&str, &str)], args: &[&str]) -> Run {
        let out = self
            .command(bin, server, env, args)
            .output()
            .expect("binary runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn alc(&self, server: &HubServer, env: &[(&str, &str)], args: &[&str]) -> Run {
        self.run_bin(env!("CARGO_BIN_EXE_alc"), server, env, args)
    }

    fn aon(&self, server: &HubServer, env: &[(&str, &str)], args: &[&str]) -> Run {
        self.run_bin(env!("CARGO_BIN_EXE_aon"), server, env, args)
    }
}

/// Files under `dir` whose name ends with `.incomplete`.
fn incomplete_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(incomplete_files(&p));
            } else if p.to_string_lossy().ends_with(".incomplete") {
                out.push(p);
            }
        }
    }
    out
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    fs::read(gemma3_tiny().join(name)).unwrap()
}

#[test]
fn fresh_download_then_nothing_fetched_again() {
    let server = start();
    let home = Home::new();
    let report = home
        .alc(&server, &[], &["--json", "download", GEMMA])
        .ok()
        .json();
    let snapshot = home.snapshot(GEMMA, MAIN);
    assert_eq!(report["commit"], MAIN);
    assert_eq!(report["revision"], "main");
    assert_eq!(PathBuf::from(report["path"].as_str().unwrap()), snapshot);
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), fs::read_dir(gemma3_tiny()).unwrap().count());
    for f in files {
        let name = f["path"].as_str().unwrap();
        let bytes = fixture_bytes(name);
        assert_eq!(fs::read(snapshot.join(name)).unwrap(), bytes, "{name}");
        assert_eq!(f["size"], bytes.len() as u64);
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        assert_eq!(f["sha256"], sha.as_str());
        assert_eq!(f["downloaded"], true);
        // huggingface_hub's layout: a relative link to the blob named by the etag.
        let link = fs::read_link(snapshot.join(name)).unwrap();
        let etag = f["etag"].as_str().unwrap();
        assert_eq!(link, Path::new("../../blobs").join(etag), "{name}");
    }
    let weights = files.iter().find(|f| f["path"] == WEIGHTS).unwrap();
    assert_eq!(weights["etag"], weights["sha256"]);
    let refs = fs::read_to_string(home.repo_dir(GEMMA).join("refs/main")).unwrap();
    assert_eq!(refs, MAIN);
    assert!(incomplete_files(&home.repo_dir(GEMMA)).is_empty());

    // Second run, by the other binary: only the revision API is asked, no file.
    server.clear();
    let human = home.aon(&server, &[], &["download", GEMMA]).ok();
    assert_eq!(human.stdout.trim(), snapshot.to_str().unwrap());
    assert_eq!(server.file_requests().len(), 0, "{:?}", server.seen());
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn resume_after_dropped_connection_continues_from_that_byte() {
    let server = start();
    let home = Home::new();
    let cut = 300_000;
    server.faults(|f| f.drop_after = Some((WEIGHTS.into(), cut)));
    home.alc(
        &server,
        &[],
        &["-q", "download", GEMMA, "--include", WEIGHTS],
    )
    .ok();
    let ranges: Vec<u64> = server
        .seen()
        .iter()
        .filter_map(|s| s.range_start())
        .collect();
    assert_eq!(ranges, vec![cut as u64]);
    let got = fs::read(home.snapshot(GEMMA, MAIN).join(WEIGHTS)).unwrap();
    assert_eq!(got, fixture_bytes(WEIGHTS));
}

#[test]
fn server_ignoring_range_restarts_the_file() {
    let server = start();
    let home = Home::new();
    server.faults(|f| {
        f.drop_after = Some((WEIGHTS.into(), 200_000));
        f.ignore_range = true;
    });
    home.alc(
        &server,
        &[],
        &["-q", "download", GEMMA, "--include", WEIGHTS],
    )
    .ok();
    assert!(server
        .seen()
        .iter()
        .any(|s| s.range_start() == Some(200_000)));
    let got = fs::read(home.snapshot(GEMMA, MAIN).join(WEIGHTS)).unwrap();
    assert_eq!(got, fixture_bytes(WEIGHTS));
}

#[test]
fn corrupt_bytes_are_detected_and_never_reach_the_snapshot() {
    for (file, what) in [
        (WEIGHTS, "sha256 mismatch"),
        ("config.json", "git blob sha1 mismatch"),
    ] {
        let server = start();
        let home = Home::new();
        server.faults(|f| f.corrupt = vec![file.into()]);
        let run = home.alc(&server, &[], &["download", GEMMA]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains(file) && run.stderr.contains(what),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(!home.snapshot(GEMMA, MAIN).join(file).exists());
        assert!(incomplete_files(&home.repo_dir(GEMMA)).is_empty());
        let blobs = fs::read_dir(home.repo_dir(GEMMA).join("blobs")).unwrap();
        assert!(blobs.count() < fs::read_dir(gemma3_tiny()).unwrap().count());
    }
}

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
fn killed_download_resumes_with_a_range_request() {
    let server = start();
    let home = Home::new();
    server.faults(|f| f.throttle = Some((4096, Duration::from_millis(50))));
    let args = ["-q", "download", GEMMA, "--include", WEIGHTS];
    let mut child = home
        .command(env!("CARGO_BIN_EXE_alc"), &server, &[], &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let blobs = home.repo_dir(GEMMA).join("blobs");
    let started = Instant::now();
    let partial = loop {
        let found = incomplete_files(&blobs)
            .into_iter()
            .find(|p| fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false));
        if let Some(p) = found {
            break p;
        }
        assert!(started.elapsed() < PATIENCE, "no partial download appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let have = fs::metadata(&partial).unwrap().len();
    assert!(have < fixture_bytes(WEIGHTS).len() as u64);

    server.faults(|f| f.throttle = None);
    server.clear();
    home.alc(&server, &[], &args).ok();
    let ranges: Vec<u64> = server
        .seen()
        .iter()
        .filter_map(|s| s.range_start())
        .collect();
    assert_eq!(ranges, vec![have]);
    let got = fs::read(home.snapshot(GEMMA, MAIN).join(WEIGHTS)).unwrap();
    assert_eq!(got, fixture_bytes(WEIGHTS));
    assert!(!partial.exists());
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
fn a_body_longer_than_its_declared_size_is_never_kept() {
    let server = start();
    let home = Home::new();
    server.faults(|f| f.oversize = Some((WEIGHTS.into(), 1)));
    let r = home.alc(&server, &[], &["download", GEMMA]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("more than the declared"), "{}", r.stderr);
    assert!(incomplete_files(&home.repo_dir(GEMMA)).is_empty());
    assert!(!home.snapshot(GEMMA, MAIN).join(WEIGHTS).exists());
}

#[test]
fn stalled_and_slow_downloads_end() {
    let server = start();
    let home = Home::new();
    // Headers, then silence for longer than any test waits: the stall timeout ends each
    // attempt, and the retries give up.
    server.faults(|f| f.stall = Some((WEIGHTS.into(), Duration::from_secs(3600))));
    let r = home.alc(&server, &[], &["download", GEMMA, "--stall-timeout", "0.3"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(WEIGHTS), "{}", r.stderr);
    // Bytes that keep coming, too slowly: the per-file deadline (here from the environment).
    server.faults(|f| {
        f.stall = None;
        f.throttle = Some((1000, Duration::from_millis(100)));
    });
    let r = home.alc(
        &server,
        &[("AVA_HUB_FILE_DEADLINE", "1")],
        &["download", GEMMA],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("not downloaded within 1 s"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_file_with_no_possible_check_is_refused_unless_no_verify() {
    let server = start();
    let home = Home::new();
    server.faults(|f| f.opaque = vec!["config.json".into()]);
    let r = home.alc(&server, &[], &["download", GEMMA]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("config.json") && r.stderr.contains("--no-verify"),
        "{}",
        r.stderr
    );
    home.alc(&server, &[], &["download", GEMMA, "--no-verify"])
        .ok();
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
