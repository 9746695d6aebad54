//! Outputs: what `-o` may replace, temporary names and their cleanup, and interruption.
//!
//! A command writes each output under a temporary name in its destination directory
//! ([`ava_core::partial`], `.ava-partial-<pid>-...`) and renames it into place when complete.
//! Before writing, [`claim`] refuses to replace anything the tools would not have written
//! themselves (unless `--force`), removes the leftovers of killed runs from the destination
//! directory, and registers the directory so that SIGINT/SIGTERM remove this run's partial
//! outputs there. [`install_signal_handlers`] ends child processes (the TVM driver), removes
//! partial outputs and exits 130 (SIGINT) or 143 (SIGTERM).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ava_core::partial::{temp_prefix, writer_pid};
use ava_packaging::STAGE_FILE;

/// Exit status after SIGINT / SIGTERM (128 + signal number).
const EXIT_SIGINT: i32 = 130;
const EXIT_SIGTERM: i32 = 143;
/// How long child processes get to exit after SIGTERM before SIGKILL.
const CHILD_GRACE: Duration = Duration::from_secs(2);
const CHILD_POLL: Duration = Duration::from_millis(20);

/// Directories this process writes partial outputs into.
static WATCHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Set once a termination signal arrived: the main thread must not report or exit any more.
static TERMINATING: AtomicBool = AtomicBool::new(false);
/// While set, SIGINT does not end the process but sets [`INTERRUPTED`] (`alc chat`: Ctrl-C
/// stops a reply).
static CATCH_SIGINT: AtomicBool = AtomicBool::new(false);
/// A SIGINT arrived while [`CATCH_SIGINT`] was set.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// What an output path holds when the tools wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// An archive (`.tar`, `.tar.zst`) with a readable manifest.
    Archive,
    /// An ONNX model written by these tools (`producer_name` `ava-passes`).
    Onnx,
    /// A stage directory (holds `ava-stage.json`).
    StageDir,
    /// A NumPy `.npy` array (`alc run --logits-out`).
    Npy,
    /// `aon eval --predictions` JSON (an object with `labels`, `input_ids`, `gold` and
    /// `predicted`).
    Predictions,
}

/// The magic string every `.npy` file starts with.
const NPY_MAGIC: &[u8] = b"\x93NUMPY";
/// The keys of `aon eval --predictions` JSON.
const PREDICTION_KEYS: [&str; 4] = ["labels", "input_ids", "gold", "predicted"];

/// Makes `path` ready to be written: refuses to replace what the tools would not have written
/// themselves (a symlink, FIFO, socket or device; a file or directory of another kind than
/// `expect`) unless `force`, removes killed runs' leftovers beside it and watches its directory
/// for this run's partial outputs.
pub fn claim(path: &Path, expect: Expect, force: bool) -> anyhow::Result<()> {
    check_replace(path, expect, force)?;
    prepare(path);
    Ok(())
}

/// Removes killed runs' leftovers beside `path` and watches its directory for this run's
/// partial outputs (the part of [`claim`] that refuses nothing).
pub fn prepare(path: &Path) {
    let dir = parent_dir(path);
    if dir.is_dir() {
        clean_stale(&dir);
    }
    watch(&dir);
}

/// The refusal of [`claim`], without side effects.
pub fn check_replace(path: &Path, expect: Expect, force: bool) -> anyhow::Result<()> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    };
    if force {
        return Ok(());
    }
    let what = special_kind(&meta.file_type());
    if let Some(what) = what {
        bail!(
            "{} is {what}; refusing to replace it (pass --force to replace it anyway)",
            path.display()
        );
    }
    let ours = match expect {
        Expect::Archive => meta.is_file() && ava_packaging::read_manifest(path).is_ok(),
        Expect::Onnx => meta.is_file() && is_our_onnx(path),
        Expect::StageDir => meta.is_dir() && path.join(STAGE_FILE).is_file(),
        Expect::Npy => meta.is_file() && starts_with(path, NPY_MAGIC),
        Expect::Predictions => meta.is_file() && is_predictions(path),
    };
    if !ours {
        let written = match expect {
            Expect::Archive => "an archive",
            Expect::Onnx => "an ONNX model written by these tools",
            Expect::StageDir => "a stage directory written by these tools",
            Expect::Npy => "a .npy array",
            Expect::Predictions => "a predictions file written by these tools",
        };
        bail!(
            "{} exists and is not {written}; refusing to replace it (pass --force to replace \
             it anyway)",
            path.display()
        );
    }
    Ok(())
}

/// Names a file type an output never replaces without `--force`; `None` for files and dirs.
fn special_kind(t: &std::fs::FileType) -> Option<&'static str> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO");
        }
        if t.is_socket() {
            return Some("a socket");
        }
        if t.is_char_device() || t.is_block_device() {
            return Some("a device");
        }
    }
    if t.is_symlink() {
        return Some("a symbolic link");
    }
    None
}

fn is_our_onnx(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| ava_passes::onnx::producer(&b))
        .is_some_and(|p| p == ava_passes::onnx::PRODUCER)
}

fn starts_with(path: &Path, magic: &[u8]) -> bool {
    use std::io::Read;
    let mut head = vec![0; magic.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == magic)
}

fn is_predictions(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .is_some_and(|o| {
            o.len() == PREDICTION_KEYS.len() && PREDICTION_KEYS.iter().all(|k| o.contains_key(*k))
        })
}

/// The directory `path` is written into (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Registers `dir`: on SIGINT/SIGTERM, this process's partial outputs in it are removed.
pub fn watch(dir: &Path) {
    let mut watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
    if !watched.iter().any(|d| d == dir) {
        watched.push(dir.to_path_buf());
    }
}

/// Removes partial outputs in `dir` whose writer no longer runs (a run killed with SIGKILL).
pub fn clean_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = writer_pid(&name) {
            if pid != std::process::id() && !process_exists(pid) {
                remove_entry(&entry.path());
            }
        }
    }
}

/// Removes this process's partial outputs in every watched directory.
fn remove_own_partials() {
    let prefix = temp_prefix();
    let watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for dir in watched {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_entry(&entry.path());
            }
        }
    }
}

/// Removes a file, link or directory tree (never following a link).
pub fn remove_entry(path: &Path) {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Writes `bytes` to `path` through a partial file in the same directory, renamed into place.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    let tmp = tempfile::Builder::new()
        .prefix(&temp_prefix())
        .tempfile_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    std::fs::write(tmp.path(), bytes).with_context(|| format!("writing {}", path.display()))?;
    set_output_mode(tmp.path())?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Copies `from` to `to` through a partial file in `to`'s directory, renamed into place (a copy,
/// never a link: `std::fs::copy` lets the kernel share blocks where the file system can).
pub fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    let dir = parent_dir(to);
    let tmp = tempfile::Builder::new()
        .prefix(&temp_prefix())
        .tempfile_in(&dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    std::fs::copy(from, tmp.path()).with_context(|| format!("writing {}", to.display()))?;
    set_output_mode(tmp.path())?;
    tmp.persist(to)
        .with_context(|| format!("writing {}", to.display()))?;
    Ok(())
}

/// Temporary files are private (0600); an output gets the ordinary 0644.
fn set_output_mode(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting permissions of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Whether a process with this id exists (a zombie counts as gone).
fn process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).is_some_and(|(state, _)| state != 'Z'),
        Err(_) => false,
    }
}

/// The state and parent id in a `/proc/<pid>/stat` line (the name may hold spaces and parens).
fn stat_fields(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Every live descendant of this process (children first), from `/proc`.
fn descendants() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let table: Vec<(u32, char, u32)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (state, ppid) = stat_fields(&stat)?;
            Some((pid, state, ppid))
        })
        .collect();
    let mut found = vec![std::process::id()];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for &(pid, state, ppid) in &table {
            if ppid == parent && state != 'Z' && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// Ends every descendant: SIGTERM, then SIGKILL for those still alive after a grace period.
fn end_children() {
    let children = descendants();
    for &pid in &children {
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + CHILD_GRACE;
    while Instant::now() < deadline && children.iter().any(|&p| process_exists(p)) {
        std::thread::sleep(CHILD_POLL);
    }
    for &pid in children.iter().chain(descendants().iter()) {
        if process_exists(pid) {
            signal(pid, libc::SIGKILL);
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; a stale pid at worst fails with ESRCH.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Installs the SIGINT/SIGTERM handling described in the module docs. Call once, first thing.
pub fn install_signal_handlers() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == SIGINT && CATCH_SIGINT.load(Ordering::SeqCst) {
                INTERRUPTED.store(true, Ordering::SeqCst);
                continue;
            }
            TERMINATING.store(true, Ordering::SeqCst);
            end_children();
            remove_own_partials();
            eprintln!("interrupted: child processes ended, partial outputs removed");
            std::process::exit(if sig == SIGINT {
                EXIT_SIGINT
            } else {
                EXIT_SIGTERM
            });
        }
    });
}

/// While `on`, Ctrl-C (SIGINT) does not end the process: [`take_interrupt`] reports it. Turning
/// it on forgets an earlier Ctrl-C.
pub fn catch_interrupts(on: bool) {
    if on {
        INTERRUPTED.store(false, Ordering::SeqCst);
    }
    CATCH_SIGINT.store(on, Ordering::SeqCst);
}

/// Whether Ctrl-C was pressed while [`catch_interrupts`] was on (and clears it).
pub fn take_interrupt() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// Blocks forever once a termination signal arrived (the handler thread exits the process), so
/// that the main thread never reports a failure its interrupted children caused.
pub fn hold_if_terminating() {
    while TERMINATING.load(Ordering::SeqCst) {
        std::thread::park_timeout(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ava_core::partial::PREFIX;

    #[test]
    fn stat_lines() {
        assert_eq!(stat_fields("12 (a b) c) S 7 12 12"), Some(('S', 7)));
        assert_eq!(stat_fields("garbage"), None);
    }

    #[test]
    fn refusals() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("notes.txt");
        std::fs::write(&file, b"mine").unwrap();
        for expect in [Expect::Archive, Expect::Onnx, Expect::StageDir] {
            assert!(check_replace(&file, expect, false).is_err());
            assert!(check_replace(&file, expect, true).is_ok());
        }
        assert!(check_replace(&tmp.path().join("new"), Expect::Archive, false).is_ok());
        let stage = tmp.path().join("stage");
        std::fs::create_dir(&stage).unwrap();
        assert!(check_replace(&stage, Expect::StageDir, false).is_err());
        std::fs::write(stage.join(STAGE_FILE), b"{}").unwrap();
        assert!(check_replace(&stage, Expect::StageDir, false).is_ok());
    }

    #[test]
    fn stale_partials_of_dead_writers_go() {
        let tmp = tempfile::tempdir().unwrap();
        // A pid above the kernel's maximum never runs.
        let dead = tmp.path().join(format!("{PREFIX}4294967295-x"));
        let mine = tmp.path().join(format!("{}y", temp_prefix()));
        let other = tmp.path().join("keep.tar");
        for p in [&dead, &mine, &other] {
            std::fs::write(p, b"").unwrap();
        }
        clean_stale(tmp.path());
        assert!(!dead.exists());
        assert!(mine.exists() && other.exists());
    }
}
