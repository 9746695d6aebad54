//! `download` against the loopback hub of [`crate::hubserver`], the transfer itself: cache
//! layout, no second fetch, resume, verification, bodies that run long or stall. The hub
//! fixtures and the test home here are shared with [`crate::download_sources`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::hubserver::{revision_from_dir, HubServer, Repo};
use crate::{fixtures, gemma3_tiny, Run};

/// Commit of `ava-test/gemma3-tiny` at `main` (the transformers-5 fixture).
pub(crate) const MAIN: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
/// An older commit, tagged `v1` (the legacy fixture).
pub(crate) const V1: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
pub(crate) const GEMMA: &str = "ava-test/gemma3-tiny";
pub(crate) const WEIGHTS: &str = "model.safetensors";
/// Generous bound for anything a loaded machine has to wait for.
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

pub(crate) fn gemma_repo() -> Repo {
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
pub(crate) fn tiny_repo(id: &str) -> (Repo, String) {
    let hub = fixtures().join("hub");
    let desc: serde_json::Value =
        serde_json::from_slice(&fs::read(hub.join("repos.json")).unwrap()).unwrap();
    let d = &desc["ava-test/tiny"];
    let commit = d["commit"].as_str().unwrap().to_string();
    let dir = hub.join(d["dir"].as_str().unwrap());
    let repo = Repo::from_dir(id, &commit, &["main"], &dir);
    (repo, commit)
}

pub(crate) fn start() -> HubServer {
    HubServer::start(vec![gemma_repo(), tiny_repo("ava-test/tiny").0])
}

/// A temporary home for one test: the hub cache is `{home}/hf/hub`.
pub(crate) struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    pub(crate) fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn cache(&self) -> PathBuf {
        self.path().join("hf/hub")
    }

    pub(crate) fn repo_dir(&self, id: &str) -> PathBuf {
        self.cache()
            .join(format!("models--{}", id.replace('/', "--")))
    }

    pub(crate) fn snapshot(&self, id: &str, commit: &str) -> PathBuf {
        self.repo_dir(id).join("snapshots").join(commit)
    }

    /// The binary with a clean hub environment pointing at `server` and this home.
    pub(crate) fn command(
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

    pub(crate) fn run_bin(
        &self,
        bin: &str,
        server: &HubServer,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Run {
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

    pub(crate) fn alc(&self, server: &HubServer, env: &[(&str, &str)], args: &[&str]) -> Run {
        self.run_bin(env!("CARGO_BIN_EXE_alc"), server, env, args)
    }

    pub(crate) fn aon(&self, server: &HubServer, env: &[(&str, &str)], args: &[&str]) -> Run {
        self.run_bin(env!("CARGO_BIN_EXE_aon"), server, env, args)
    }
}

/// Files under `dir` whose name ends with `.incomplete`.
pub(crate) fn incomplete_files(dir: &Path) -> Vec<PathBuf> {
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

pub(crate) fn fixture_bytes(name: &str) -> Vec<u8> {
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
