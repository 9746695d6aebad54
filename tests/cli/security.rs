//! Signed archives and the native-code policy (docs/security.md), end to end: an archive whose
//! kernel library has a constructor that leaves a file behind shows whether the library was
//! ever loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

use ava_packaging::{write_archive, Compression, CreatedBy, InputFile, PackageSpec, Role, Source};

use super::hubserver::{HubServer, Repo};
use super::{alc, gemma3_tiny, Run};

/// The kernel target of the machine running the tests.
fn host_target() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "linux-arm64"
    } else {
        "linux-x86_64"
    }
}

/// A shared library whose constructor creates the file named by `$AVA_TEST_CANARY`.
fn canary_library(dir: &Path) -> PathBuf {
    let src = dir.join("canary.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <stdlib.h>\n\
         __attribute__((constructor)) static void planted(void) {\n\
           const char *p = getenv(\"AVA_TEST_CANARY\");\n\
           if (p) { FILE *f = fopen(p, \"w\"); if (f) { fputs(\"ran\", f); fclose(f); } }\n\
         }\n",
    )
    .unwrap();
    let lib = dir.join("libmodel.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("cc runs");
    assert!(status.success());
    lib
}

/// The canary library and a kernel table naming no kernel, in `dir`.
fn canary_kernels(dir: &Path) -> (PathBuf, PathBuf) {
    let lib = canary_library(dir);
    let table = dir.join("kernels.json");
    std::fs::write(
        &table,
        format!(
            r#"{{"format_version": 1, "target": "{}", "requires": [], "kernels": []}}"#,
            host_target()
        ),
    )
    .unwrap();
    (lib, table)
}

/// The tiny Gemma 3 with the canary library as its kernels for this machine, as an unsigned
/// archive (written with the library: the tools always sign).
fn hostile_archive(dir: &Path) -> PathBuf {
    archive_named(dir, "gemma3-canary", true)
}

/// The tiny Gemma 3 as an unsigned archive `canary.tar` called `name`, with the canary kernels
/// when `kernels`.
pub(crate) fn archive_named(dir: &Path, name: &str, kernels: bool) -> PathBuf {
    let mut inputs: Vec<InputFile> = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|name| InputFile {
            source: gemma3_tiny().join(name),
            path: name.to_string(),
            role: Role::from_path(name),
        })
        .collect();
    if kernels {
        let (lib, table) = canary_kernels(dir);
        for (source, file) in [(lib, "libmodel.so"), (table, "kernels.json")] {
            let path = format!("lib/{}/{file}", host_target());
            inputs.push(InputFile {
                role: Role::from_path(&path),
                source,
                path,
            });
        }
    }
    let spec = PackageSpec {
        name: name.into(),
        version: "1".into(),
        family: "gemma3".into(),
        quantization: "f32".into(),
        target: host_target().parse().unwrap(),
        created_by: CreatedBy {
            tool: "test".into(),
            version: "0".into(),
            git_commit: "none".into(),
        },
        source: Source::default(),
        stages: Default::default(),
        sign_with: None,
    };
    let out = dir.join("canary.tar");
    write_archive(&spec, &inputs, &out, Compression::None, &mut |_| {}).unwrap();
    out
}

/// `alc run` with the canary variable set, in `dir`.
fn run_with_canary(dir: &Path, canary: &Path, extra: &[&str]) -> Run {
    run_with_env(dir, canary, extra, &[])
}

/// [`run_with_canary`] with more environment variables.
fn run_with_env(dir: &Path, canary: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut args = vec![
        "run",
        "canary.tar",
        "--prompt-ids",
        "2,10,11",
        "--max-tokens",
        "2",
    ];
    args.extend_from_slice(extra);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alc"));
    cmd.args(&args)
        .current_dir(dir)
        .env("AVA_CONFIG_DIR", dir.join("config"))
        .env("AVA_TEST_CANARY", canary);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn unsigned_kernels_never_load_and_signed_ones_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    hostile_archive(dir);
    let canary = dir.join("constructor-ran");

    // An unsigned archive is format 1, as before signatures: still read, and said unsigned.
    let inspect = alc(dir, &["inspect", "canary.tar", "--json"]).ok();
    assert_eq!(inspect.json()["manifest"]["format_version"], 1);
    assert!(inspect.json()["signed_by"].is_null(), "{}", inspect.stdout);
    let v = alc(dir, &["verify", "canary.tar", "--json"]).ok();
    assert_eq!(v.json()["signature"], "unsigned");

    // Default policy: the model runs on the native backend, and says why.
    let r = run_with_canary(dir, &canary, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("native backend") && r.stderr.contains("not signed"),
        "{}",
        r.stderr
    );
    assert!(!canary.exists(), "the library's constructor ran");
    // Asking for TVM fails with the reason.
    let r = run_with_canary(dir, &canary, &["--backend", "tvm"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not signed"), "{}", r.stderr);
    assert!(!canary.exists(), "the library's constructor ran");

    // Signed with a key the run trusts: the library is loaded (its constructor runs).
    alc(dir, &["keygen", "-o", "ci.key"]).ok();
    alc(dir, &["sign", "canary.tar", "--key", "ci.key"]).ok();
    let v = alc(
        dir,
        &[
            "verify",
            "canary.tar",
            "--json",
            "--trusted-key",
            "ci.key.pub",
        ],
    )
    .ok();
    assert_eq!(v.json()["signature"], "signed");
    assert_eq!(v.json()["trusted"], true);
    let untrusted = run_with_canary(dir, &canary, &["--backend", "tvm"]);
    assert_eq!(untrusted.code, 1);
    assert!(
        untrusted.stderr.contains("not trusted"),
        "{}",
        untrusted.stderr
    );
    assert!(!canary.exists());
    run_with_canary(
        dir,
        &canary,
        &["--backend", "tvm", "--trusted-key", "ci.key.pub"],
    );
    assert!(canary.exists(), "a trusted signed library was not loaded");
}

/// Android apps may have no writable temporary directory: a trusted library loads with
/// `TMPDIR` naming a directory that does not exist, or a plain file (nothing can be created
/// under it, whatever the user's rights).
#[test]
fn trusted_kernels_load_without_a_writable_temp_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    hostile_archive(dir);
    alc(dir, &["keygen", "-o", "ci.key"]).ok();
    alc(dir, &["sign", "canary.tar", "--key", "ci.key"]).ok();
    let not_a_dir = dir.join("not-a-dir");
    std::fs::write(&not_a_dir, b"").unwrap();
    let trusted = ["--backend", "tvm", "--trusted-key", "ci.key.pub"];
    for (i, temp) in [dir.join("no-such-dir"), not_a_dir].iter().enumerate() {
        let canary = dir.join(format!("constructor-ran-{i}"));
        let r = run_with_env(dir, &canary, &trusted, &[("TMPDIR", temp)]);
        assert!(
            canary.exists(),
            "not loaded with TMPDIR={}: {}",
            temp.display(),
            r.stderr
        );
        // The canary library has no kernels: loading succeeded, the model check then fails.
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("the kernel library has no"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("ava-kernels"), "{}", r.stderr);
    }
    assert!(!dir.join("no-such-dir").exists());
    assert_eq!(std::fs::read(dir.join("not-a-dir")).unwrap(), b"");
}

/// `bin ARGS` in `dir` with the configuration directory `config`.
fn with_config(bin: &str, dir: &Path, config: &Path, args: &[&str]) -> Run {
    let mut cmd = super::command(bin, dir, args);
    cmd.env("AVA_CONFIG_DIR", config);
    super::finished(cmd.output().unwrap())
}

fn mode(path: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

/// The user's own key is made on first use and trusted; `--sign-key` and `sign` (both
/// binaries) sign with another key, trusted once its public key is in `trusted/`.
#[test]
fn keys_signing_and_the_trust_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = dir.join("config");
    let alc = |args: &[&str]| with_config(env!("CARGO_BIN_EXE_alc"), dir, &config, args);
    let aon = |args: &[&str]| with_config(env!("CARGO_BIN_EXE_aon"), dir, &config, args);
    let tiny = gemma3_tiny();
    let tiny = tiny.to_str().unwrap();
    let signer = |archive: &str| {
        let j = alc(&["inspect", archive, "--json"]).ok().json();
        j["signed_by"].as_str().unwrap().to_string()
    };
    let trusted = |archive: &str| {
        let j = alc(&["verify", archive, "--json"]).ok().json();
        assert_eq!(j["signature"], "signed");
        j["trusted"].as_bool().unwrap()
    };

    let first = alc(&["package", tiny, "-o", "own.tar"]).ok();
    assert!(
        first.stderr.contains("created your signing key"),
        "{}",
        first.stderr
    );
    assert_eq!(mode(&config), 0o700);
    assert_eq!(mode(&config.join("signing.key")), 0o600);
    let again = alc(&["package", tiny, "-o", "own2.tar"]).ok();
    assert!(!again.stderr.contains("created"), "{}", again.stderr);
    assert_eq!(signer("own.tar"), signer("own2.tar"));
    assert!(trusted("own.tar"));

    aon(&["keygen", "-o", "ci.key"]).ok();
    assert_eq!(mode(&dir.join("ci.key")), 0o600);
    alc(&["package", tiny, "-o", "ci.tar", "--sign-key", "ci.key"]).ok();
    archive_named(dir, "unsigned", false);
    aon(&["sign", "canary.tar", "--key", "ci.key"]).ok();
    assert_eq!(signer("ci.tar"), signer("canary.tar"));
    assert_ne!(signer("ci.tar"), signer("own.tar"));
    let v = alc(&["verify", "ci.tar"]).ok();
    assert!(v.stdout.contains("not a trusted key"), "{}", v.stdout);
    assert!(!trusted("ci.tar"));
    // Trusted through the store, with no flag.
    std::fs::create_dir_all(config.join("trusted")).unwrap();
    std::fs::copy(dir.join("ci.key.pub"), config.join("trusted/ci.pub")).unwrap();
    assert!(trusted("ci.tar") && trusted("canary.tar"));
}

#[test]
fn allow_unsigned_loads_local_archives_but_never_checkpoint_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    hostile_archive(dir);
    let canary = dir.join("constructor-ran");
    // A checkpoint directory with the same library: never loaded.
    let ckpt = dir.join("ckpt");
    std::fs::create_dir_all(ckpt.join("lib").join(host_target())).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(gemma3_tiny().join(f), ckpt.join(f)).unwrap();
    }
    for f in ["libmodel.so", "kernels.json"] {
        std::fs::copy(dir.join(f), ckpt.join("lib").join(host_target()).join(f)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_alc"))
        .args([
            "run",
            "ckpt",
            "--prompt-ids",
            "2,10",
            "--max-tokens",
            "1",
            "--backend",
            "tvm",
        ])
        .arg("--allow-unsigned-kernels")
        .current_dir(dir)
        .env("AVA_CONFIG_DIR", dir.join("config"))
        .env("AVA_TEST_CANARY", &canary)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checkpoint directory"));
    assert!(
        !canary.exists(),
        "a checkpoint directory's library was loaded"
    );
    // The explicit opt-in loads the unsigned archive's library.
    run_with_canary(
        dir,
        &canary,
        &["--backend", "tvm", "--allow-unsigned-kernels"],
    );
    assert!(
        canary.exists(),
        "--allow-unsigned-kernels did not load the library"
    );
}

/// The served repository whose checkpoint carries the canary library.
const CANARY_REPO: &str = "ava-test/canary";
const CANARY_COMMIT: &str = "c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4";

/// The tiny Gemma 3 checkpoint plus the canary library as `lib/<host>/libmodel.so`, as a hub
/// repository.
fn canary_repo(dir: &Path) -> Repo {
    let repo = dir.join("repo");
    super::copy_dir(&gemma3_tiny(), &repo);
    let kernels = repo.join("lib").join(host_target());
    std::fs::create_dir_all(&kernels).unwrap();
    let (lib, table) = canary_kernels(dir);
    std::fs::copy(lib, kernels.join("libmodel.so")).unwrap();
    std::fs::copy(table, kernels.join("kernels.json")).unwrap();
    Repo::from_dir(CANARY_REPO, CANARY_COMMIT, &["main"], &repo)
}

/// `alc ARGS` in `home` against `server`, with the canary variable set and `stdin` as input.
fn hub_alc(home: &Path, server: &HubServer, canary: &Path, args: &[&str], stdin: &str) -> Run {
    let input = home.join("stdin.txt");
    std::fs::write(&input, stdin).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alc"));
    cmd.args(args)
        .current_dir(home)
        .stdin(std::fs::File::open(&input).unwrap())
        .env("HF_ENDPOINT", &server.url)
        .env("HF_HOME", home.join("hf"))
        .env("HOME", home)
        .env("AVA_CONFIG_DIR", home.join("config"))
        .env("AVA_TEST_CANARY", canary);
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
    super::finished(cmd.output().unwrap())
}

/// Every command that takes a hub id and can run a model: the library of a hub download is
/// never loaded, with or without `--allow-unsigned-kernels`, and `package` does not carry it
/// into an archive signed with the user's (trusted) key.
#[test]
fn a_hub_download_never_loads_its_library() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let server = HubServer::start(vec![canary_repo(home)]);
    let canary = home.join("constructor-ran");
    let alc = |args: &[&str]| hub_alc(home, &server, &canary, args, "hello\n");
    let library = format!("lib/{}/libmodel.so", host_target());
    let snapshot = home
        .join("hf/hub/models--ava-test--canary/snapshots")
        .join(CANARY_COMMIT);

    // A model argument fetches the checkpoint without its kernel library.
    let run = [
        "run",
        CANARY_REPO,
        "--prompt-ids",
        "2,10,11",
        "--max-tokens",
        "2",
    ];
    alc(&run).ok();
    assert!(snapshot.join("config.json").is_file());
    assert!(!snapshot.join("lib").exists());
    let asked: Vec<String> = server.seen().into_iter().map(|s| s.path).collect();
    assert!(
        !asked.iter().any(|p| p.contains("libmodel.so")),
        "{asked:?}"
    );
    assert!(!canary.exists(), "the library's constructor ran");

    // With the whole repository in the cache (an explicit download), its snapshot holds the
    // library: still never loaded.
    alc(&["download", CANARY_REPO]).ok();
    assert!(snapshot.join(&library).is_file());
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    let chat = ["chat", CANARY_REPO, "--max-tokens", "2"];
    let bench = ["bench", CANARY_REPO, "-p", "4", "-n", "2", "-r", "1"];
    for base in [&run[..], &chat, &bench] {
        for policy in [&[][..], &["--allow-unsigned-kernels"]] {
            let r = alc(&with(base, policy)).ok();
            assert!(
                r.stderr.contains("native backend") && r.stderr.contains("checkpoint directory"),
                "{base:?} {policy:?}: {}",
                r.stderr
            );
            let r = alc(&with(base, &with(policy, &["--backend", "tvm"])));
            assert_eq!(r.code, 1, "{base:?} {policy:?}: {}", r.stderr);
            assert!(r.stderr.contains("checkpoint directory"), "{}", r.stderr);
            assert!(!canary.exists(), "{base:?} {policy:?}: the constructor ran");
        }
    }

    // `package` signs with the user's own key, which `run` trusts: the library stays out.
    let r = alc(&["package", CANARY_REPO, "-o", "hub.tar"]).ok();
    assert!(
        r.stderr.contains("left out") && r.stderr.contains(&library),
        "{}",
        r.stderr
    );
    let inspect = alc(&["inspect", "hub.tar", "--json"]).ok().json();
    let files = inspect["manifest"]["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .all(|f| !f["path"].as_str().unwrap().starts_with("lib/")),
        "{files:?}"
    );
    let r = alc(&[
        "run",
        "hub.tar",
        "--prompt-ids",
        "2",
        "--max-tokens",
        "1",
        "--backend",
        "tvm",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("no kernel library"), "{}", r.stderr);
    assert!(!canary.exists(), "a packaged hub library was loaded");
}

/// `aon classify` follows the same policy: the ALBERT archive's library is loaded only when
/// a trusted key signed it.
#[test]
fn aon_classify_loads_kernels_only_under_the_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let report = super::aon_runtime::compile_tiny(dir, &[]);
    let compiled = report["archive"].as_str().unwrap();
    alc(dir, &["unpack", compiled, "-o", "unpacked"]).ok();
    let unpacked = dir.join("unpacked");
    let m = ava_packaging::read_dir_manifest(&unpacked).unwrap();
    let mut inputs: Vec<InputFile> = m
        .files
        .iter()
        .map(|f| InputFile {
            source: unpacked.join(&f.path),
            path: f.path.clone(),
            role: f.role,
        })
        .collect();
    let (lib, table) = canary_kernels(dir);
    for (source, file) in [(lib, "libmodel.so"), (table, "kernels.json")] {
        let path = format!("lib/{}/{file}", host_target());
        inputs.push(InputFile {
            role: Role::from_path(&path),
            source,
            path,
        });
    }
    let spec = PackageSpec {
        name: m.name,
        version: m.version,
        family: m.family,
        quantization: m.quantization,
        target: host_target().parse().unwrap(),
        created_by: m.created_by,
        source: m.source,
        stages: m.stages,
        sign_with: None,
    };
    let archive = dir.join("albert.tar");
    write_archive(&spec, &inputs, &archive, Compression::None, &mut |_| {}).unwrap();
    let canary = dir.join("constructor-ran");
    let classify = |extra: &[&str]| {
        let mut args = vec!["classify", "albert.tar", "--text", "what is my balance"];
        args.extend_from_slice(extra);
        let mut cmd = super::command(env!("CARGO_BIN_EXE_aon"), dir, &args);
        cmd.env("AVA_CONFIG_DIR", dir.join("config"))
            .env("AVA_TEST_CANARY", &canary);
        super::finished(cmd.output().unwrap())
    };
    let r = classify(&[]).ok();
    assert!(
        r.stderr.contains("native backend") && r.stderr.contains("not signed"),
        "{}",
        r.stderr
    );
    let r = classify(&["--backend", "tvm"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not signed"), "{}", r.stderr);
    assert!(!canary.exists(), "the library's constructor ran");
    alc(dir, &["keygen", "-o", "ci.key"]).ok();
    super::aon(dir, &["sign", "albert.tar", "--key", "ci.key"]).ok();
    classify(&["--trusted-key", "ci.key.pub"]);
    assert!(canary.exists(), "a trusted signed library was not loaded");
}

#[test]
fn tampered_signed_archive_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    hostile_archive(dir);
    alc(dir, &["keygen", "-o", "ci.key"]).ok();
    alc(dir, &["sign", "canary.tar", "--key", "ci.key"]).ok();
    let inspect = alc(dir, &["inspect", "canary.tar", "--json"]).ok();
    assert_eq!(inspect.json()["manifest"]["format_version"], 2);
    assert_eq!(inspect.json()["signed_by"].as_str().unwrap().len(), 16);
    // Change the manifest (not any entry): only the signature can tell.
    let path = dir.join("canary.tar");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(13)
        .position(|w| w == b"gemma3-canary")
        .unwrap();
    bytes[at + 7] = b'C';
    std::fs::write(&path, bytes).unwrap();
    let v = alc(dir, &["verify", "canary.tar"]);
    assert_eq!(v.code, 1);
    assert!(v.stderr.contains("bad signature"), "{}", v.stderr);
    let r = alc(
        dir,
        &[
            "run",
            "canary.tar",
            "--prompt-ids",
            "2",
            "--max-tokens",
            "1",
        ],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("bad signature"), "{}", r.stderr);
}
