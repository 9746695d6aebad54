//! The command line as a user meets it: one clean error line, a quiet exit on a closed pipe,
//! shell completions and manual pages.

use std::process::{Command, Stdio};

use crate::common::package_tiny;
use crate::{alc, aon, config_dir};

#[test]
fn errors_are_one_line_saying_each_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["inspect", "missing.tar"][..],
        &["run", "./missing-dir", "--prompt", "x"][..],
        &["verify", "missing.tar"][..],
    ] {
        let run = alc(tmp.path(), args);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("alc: error: "), "{}", run.stderr);
        assert!(
            run.stderr.matches("(os error 2)").count() <= 1,
            "{}",
            run.stderr
        );
        assert!(run.stderr.matches("missing").count() == 1, "{}", run.stderr);
        assert!(
            !run.stderr.contains("Some(") && !run.stderr.contains("None"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    package_tiny(tmp.path());
    let (reader, writer) = std::io::pipe().unwrap();
    // The reading end is closed before the binary writes: every write fails with EPIPE.
    drop(reader);
    for args in [
        &["--json", "inspect", "m.tar"][..],
        &["inspect", "m.tar"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_alc"))
            .args(args)
            .current_dir(tmp.path())
            .env("AVA_CONFIG_DIR", config_dir())
            .stdout(Stdio::from(writer.try_clone().unwrap()))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
}

#[test]
fn completions_and_manual_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let bash = alc(tmp.path(), &["completions", "bash"]).ok().stdout;
    assert!(
        bash.contains("_alc()") && bash.contains("complete -F _alc"),
        "{bash}"
    );
    assert!(
        bash.contains("bench") && bash.contains("--prompt-file"),
        "{bash}"
    );
    let zsh = alc(tmp.path(), &["completions", "zsh"]).ok().stdout;
    assert!(zsh.starts_with("#compdef alc"), "{zsh}");
    let fish = aon(tmp.path(), &["completions", "fish"]).ok().stdout;
    assert!(
        fish.contains("complete -c aon") && fish.contains("classify"),
        "{fish}"
    );
    assert_eq!(alc(tmp.path(), &["completions", "tcsh"]).code, 2);

    let page = alc(tmp.path(), &["man"]).ok().stdout;
    assert!(
        page.contains(".TH alc 1") && page.contains("completions"),
        "{page}"
    );
    aon(tmp.path(), &["man", "--out-dir", "pages"]).ok();
    let run_page = std::fs::read_to_string(tmp.path().join("pages/aon-eval.1")).unwrap();
    assert!(
        run_page.contains(".TH aon-eval 1") && run_page.contains("limit"),
        "{run_page}"
    );
    assert!(tmp.path().join("pages/aon.1").is_file());
    assert!(!tmp.path().join("pages/aon-help.1").exists());
}
