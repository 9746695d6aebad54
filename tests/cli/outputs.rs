//! Outputs (docs/security.md): `-o` never replaces what the tools did not write themselves
//! unless `--force`; SIGINT/SIGTERM remove partial outputs and end the TVM driver; the leftovers
//! of a run killed outright are removed by the next run writing to the same place.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{alc, aon, config_dir, fixtures, gemma3_tiny};

/// The start of every partial output's name (`ava_core::partial::PREFIX`).
const PARTIAL: &str = ".ava-partial-";
/// How long a compile may take to reach its build stage.
const BUILD_START_LIMIT: Duration = Duration::from_secs(300);

fn package(dir: &Path, out: &str, extra: &[&str]) -> crate::Run {
    let fixture = gemma3_tiny();
    let mut args = vec!["package", fixture.to_str().unwrap(), "-o", out];
    args.extend_from_slice(extra);
    alc(dir, &args)
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn outputs_never_replace_what_the_tools_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A user's file at -o: refused, untouched; --force replaces it.
    std::fs::write(dir.join("notes.tar"), b"my notes").unwrap();
    let r = package(dir, "notes.tar", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(std::fs::read(dir.join("notes.tar")).unwrap(), b"my notes");
    package(dir, "notes.tar", &["--force"]).ok();
    // Our own archive is replaced without --force.
    package(dir, "notes.tar", &[]).ok();
    alc(dir, &["verify", "notes.tar"]).ok();

    // A symlink: refused; with --force the link itself is replaced, never its target.
    std::fs::write(dir.join("victim"), b"precious").unwrap();
    std::os::unix::fs::symlink(dir.join("victim"), dir.join("link.tar")).unwrap();
    let r = package(dir, "link.tar", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    package(dir, "link.tar", &["--force"]).ok();
    assert!(!dir
        .join("link.tar")
        .symlink_metadata()
        .unwrap()
        .is_symlink());
    assert_eq!(std::fs::read(dir.join("victim")).unwrap(), b"precious");

    // A FIFO (no reader: opening it for writing would block) and a device.
    mkfifo(&dir.join("fifo.tar"));
    let r = package(dir, "fifo.tar", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
    let r = package(dir, "/dev/null", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("device"), "{}", r.stderr);

    // ONNX outputs: a file that is not one of our models is refused.
    std::fs::write(dir.join("model.onnx"), b"not a model").unwrap();
    let albert = fixtures().join("models/albert-tiny-cls");
    let export = |extra: &[&str]| {
        let mut args = vec!["export", albert.to_str().unwrap(), "-o", "model.onnx"];
        args.extend_from_slice(extra);
        aon(dir, &args)
    };
    let r = export(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        std::fs::read(dir.join("model.onnx")).unwrap(),
        b"not a model"
    );
    export(&["--force"]).ok();
    export(&[]).ok();

    // `alc build` never replaces a directory that is not a stage directory.
    std::fs::create_dir(dir.join("home")).unwrap();
    std::fs::write(dir.join("home/diary.txt"), b"dear diary").unwrap();
    let fixture = gemma3_tiny();
    let args = [
        "build",
        fixture.to_str().unwrap(),
        "--target",
        "linux-x86_64",
        "-o",
        "home",
    ];
    let r = alc(dir, &args);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(dir.join("home/diary.txt").is_file());
    assert_eq!(partials(dir), Vec::<PathBuf>::new());
}

/// Every partial output under `dir`.
fn partials(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(PARTIAL) {
                found.push(path);
            } else if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            }
        }
    }
    found
}

/// `(pid, ppid, cmdline)` of every process.
fn processes() -> Vec<(u32, u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut fields = rest.split_whitespace();
            if fields.next()? == "Z" {
                return None;
            }
            let ppid = fields.next()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((pid, ppid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .collect()
}

/// The TVM driver process started (indirectly) by `root`, once it runs.
fn driver_of(root: u32) -> Option<u32> {
    let table = processes();
    let mut family = vec![root];
    let mut i = 0;
    while i < family.len() {
        for (pid, ppid, _) in &table {
            if *ppid == family[i] && !family.contains(pid) {
                family.push(*pid);
            }
        }
        i += 1;
    }
    table
        .iter()
        .find(|(pid, _, cmd)| family[1..].contains(pid) && cmd.contains("build.py"))
        .map(|(pid, _, _)| *pid)
}

fn alive(pid: u32) -> bool {
    processes().iter().any(|(p, _, _)| *p == pid)
}

/// `alc compile` of the tiny fixture, from `dir` (which holds a planted `.venv`).
fn start_compile(dir: &Path) -> Child {
    let fixture = gemma3_tiny();
    Command::new(env!("CARGO_BIN_EXE_alc"))
        .args(["--cache-dir", "cache", "compile"])
        .arg(&fixture)
        .args(["--quant", "q4bf16", "--target", "linux-x86_64", "-o", "out"])
        .current_dir(dir)
        .env("AVA_CONFIG_DIR", config_dir())
        .env_remove("AVA_KERNEL_CACHE")
        .env_remove("AVA_PYTHON")
        .env_remove("AVA_TVM_PYTHON")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child`'s TVM driver to start; panics with its stderr if it ends first.
fn wait_for_driver(child: &mut Child) -> u32 {
    let started = Instant::now();
    loop {
        if let Some(pid) = driver_of(child.id()) {
            return pid;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("compile ended ({status}) before its build stage: {err}");
        }
        assert!(started.elapsed() < BUILD_START_LIMIT, "no build stage");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

fn wait_gone(pid: u32) {
    let started = Instant::now();
    while alive(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{pid} lives on"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn interrupted_compile_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A `.venv` in the working directory is never the Python that runs.
    let planted = dir.join(".venv/bin/python");
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    let canary = dir.join("planted-python-ran");
    std::fs::write(
        &planted,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", canary.display()),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&planted).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&planted, perms).unwrap();

    // Killed outright during the build: its partial build directory stays behind.
    let mut first = start_compile(dir);
    let driver = wait_for_driver(&mut first);
    kill(first.id(), libc::SIGKILL);
    first.wait().unwrap();
    kill(driver, libc::SIGKILL);
    wait_gone(driver);
    assert!(
        !partials(dir).is_empty(),
        "a killed run leaves its partials"
    );

    // The next run removes them; interrupted in its own build, it removes its own partials,
    // ends the driver and exits 130.
    let mut second = start_compile(dir);
    let driver = wait_for_driver(&mut second);
    kill(second.id(), libc::SIGINT);
    let status = second.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    wait_gone(driver);
    assert_eq!(partials(dir), Vec::<PathBuf>::new());
    let out = dir.join("out");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());

    // SIGTERM the same way, with 143.
    let mut third = start_compile(dir);
    let driver = wait_for_driver(&mut third);
    kill(third.id(), libc::SIGTERM);
    let status = third.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status}");
    wait_gone(driver);
    assert_eq!(partials(dir), Vec::<PathBuf>::new());
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
    assert!(!canary.exists(), "the working directory's .venv ran");
}

/// The tiny ALBERT classifier exported to `dir/model.onnx` with its tokenizer and labels beside
/// it, and a labelled data file `dir/data.json` (CLINC150 layout) of its intents.
pub fn exported_classifier(dir: &Path) {
    let albert = fixtures().join("models/albert-tiny-cls");
    aon(
        dir,
        &["export", albert.to_str().unwrap(), "-o", "model.onnx"],
    )
    .ok();
    std::fs::copy(albert.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(albert.join("config.json")).unwrap()).unwrap();
    let id2label = config["id2label"].as_object().unwrap();
    let labels: Vec<&str> = (0..id2label.len())
        .map(|i| id2label[&i.to_string()].as_str().unwrap())
        .collect();
    std::fs::write(
        dir.join("labels.json"),
        serde_json::to_vec(&labels).unwrap(),
    )
    .unwrap();
    let test: Vec<[&str; 2]> = labels.iter().map(|l| ["what about it", *l]).collect();
    std::fs::write(
        dir.join("data.json"),
        serde_json::to_vec(&serde_json::json!({ "test": test })).unwrap(),
    )
    .unwrap();
}

/// Runs `write` (a command writing the output `name` in `dir`, with extra arguments) against a
/// user's file, a symlink, a FIFO and a device: each refused (exit 1) and left as it was;
/// `--force` replaces the user's file, and the tool's own output is replaced without it.
fn check_guarded(dir: &Path, name: &str, write: &dyn Fn(&str, &[&str]) -> crate::Run) {
    std::fs::write(dir.join(name), b"my notes").unwrap();
    let r = write(name, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(std::fs::read(dir.join(name)).unwrap(), b"my notes");
    write(name, &["--force"]).ok();
    assert_ne!(std::fs::read(dir.join(name)).unwrap(), b"my notes");
    let ours = std::fs::read(dir.join(name)).unwrap();
    write(name, &[]).ok();
    assert_eq!(std::fs::read(dir.join(name)).unwrap(), ours);

    std::fs::write(dir.join("victim"), b"precious").unwrap();
    let link = format!("link-{name}");
    std::os::unix::fs::symlink(dir.join("victim"), dir.join(&link)).unwrap();
    let r = write(&link, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_eq!(std::fs::read(dir.join("victim")).unwrap(), b"precious");

    let fifo = format!("fifo-{name}");
    mkfifo(&dir.join(&fifo));
    let r = write(&fifo, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
    let r = write("/dev/null", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("device"), "{}", r.stderr);
    assert_eq!(partials(dir), Vec::<PathBuf>::new());
}

#[test]
fn logits_out_is_guarded_like_other_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fixture = gemma3_tiny();
    let run = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            fixture.to_str().unwrap(),
            "--prompt-ids",
            "2,10,11",
            "--max-tokens",
            "1",
            "--logits-out",
            out,
        ];
        args.extend_from_slice(extra);
        alc(dir, &args)
    };
    check_guarded(dir, "logits.npy", &run);
    assert!(std::fs::read(dir.join("logits.npy"))
        .unwrap()
        .starts_with(b"\x93NUMPY"));
}

#[test]
fn eval_predictions_are_guarded_like_other_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    exported_classifier(dir);
    let eval = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "model.onnx",
            "--data",
            "data.json",
            "--predictions",
            out,
        ];
        args.extend_from_slice(extra);
        aon(dir, &args)
    };
    check_guarded(dir, "predictions.json", &eval);
    let p: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("predictions.json")).unwrap()).unwrap();
    assert_eq!(p["gold"].as_array().unwrap().len(), 5, "{p}");
}
