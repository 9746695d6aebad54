//! The stage cache of the compile pipelines (`alc compile`, `aon compile`): one directory per
//! finished stage, `ROOT/<pipeline>/<stage>/<key>/`, named by a content key (sha256 over the
//! stage name, the tool's identity and the stage's inputs).
//!
//! An entry is filled in a private directory beside its final name and renamed into place, so a
//! cache never holds half a stage; every entry records the size and sha256 of each of its files
//! in [`DIGEST_FILE`], and an entry that no longer matches its record is removed and rebuilt.
//! Callers copy results out of an entry, never link them: editing an output must not change it.
//!
//! The cache has its own root ([`default_root`]: `$AVA_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/ava`, else `~/.cache/ava`), apart from the Hugging Face hub cache, whose
//! tools treat any foreign directory in theirs as damage.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The record of a cache entry's files, at the entry's top level.
pub const DIGEST_FILE: &str = "ava-cache.json";
/// The environment variable naming the cache root.
pub const CACHE_ENV: &str = "AVA_CACHE_DIR";
/// The cache's folder inside `$XDG_CACHE_HOME` (or `~/.cache`).
pub const CACHE_FOLDER: &str = "ava";
/// Hex digits of a stage key used in directory names.
pub const KEY_CHARS: usize = 24;
/// Read buffer of file hashing.
const HASH_BUFFER: usize = 1 << 20;

/// The cache root from a variable lookup: [`CACHE_ENV`], else `$XDG_CACHE_HOME/ava`, else
/// `$HOME/.cache/ava` (relative `.cache/ava` with no home).
pub fn default_root(var: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = var(CACHE_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return Path::new(&xdg).join(CACHE_FOLDER);
    }
    let home = var("HOME").unwrap_or_else(|| ".".to_string());
    Path::new(&home).join(".cache").join(CACHE_FOLDER)
}

/// [`default_root`] of the process environment (empty variables count as unset).
pub fn root_from_env() -> PathBuf {
    default_root(&|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// A stage key: sha256 over length-prefixed strings and file contents.
pub struct KeyHasher(Sha256);

impl KeyHasher {
    /// A key for `stage` of the tool identified by `tool` (version, commit: a new build never
    /// reuses an older build's entries).
    pub fn new(stage: &str, tool: &[&str]) -> Self {
        let mut h = KeyHasher(Sha256::new());
        h.text(stage);
        for part in tool {
            h.text(part);
        }
        h
    }

    /// Adds a length-prefixed string (so concatenations cannot collide).
    pub fn text(&mut self, s: &str) {
        self.0.update((s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
    }

    /// Adds a file's content.
    pub fn file(&mut self, path: &Path) -> Result<()> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = stream(f, &mut self.0).map_err(|e| Error::io(path, e))?;
        self.0.update(len.to_le_bytes());
        Ok(())
    }

    /// The key, lower-case hex.
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// Key of a source directory for `tool`: its files' names and contents (hidden entries skipped,
/// symlinks followed, as in a hub snapshot), sorted by name.
pub fn hash_dir(dir: &Path, tool: &[&str]) -> Result<String> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let mut h = KeyHasher::new("source", tool);
    for name in names {
        h.text(&name.to_string_lossy());
        h.file(&dir.join(&name))?;
    }
    Ok(h.finish())
}

/// One pipeline's part of the cache: `ROOT/<pipeline>/`.
#[derive(Clone, Debug)]
pub struct StageCache {
    dir: PathBuf,
    prepare: Option<fn(&Path)>,
}

/// What [`StageCache::lookup`] found.
pub enum Lookup {
    /// A finished entry whose files match their record.
    Hit(PathBuf),
    /// No usable entry: fill [`Pending::path`] and [`Pending::commit`] it.
    Miss(Pending),
}

/// An entry being filled, in a private directory beside its final name (removed on drop unless
/// committed).
pub struct Pending {
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl StageCache {
    /// The cache of `pipeline` (`alc`, `aon`) under `root`.
    pub fn new(root: &Path, pipeline: &str) -> Self {
        StageCache {
            dir: root.join(pipeline),
            prepare: None,
        }
    }

    /// Calls `prepare` on every stage folder before a private directory is made in it (the
    /// binaries remove the leftovers of killed runs there and register it for clean-up on a
    /// signal).
    pub fn with_prepare(mut self, prepare: fn(&Path)) -> Self {
        self.prepare = Some(prepare);
        self
    }

    /// `ROOT/<pipeline>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry of `stage` with `key` lives.
    pub fn entry(&self, stage: &str, key: &str) -> PathBuf {
        self.dir.join(stage).join(&key[..key.len().min(KEY_CHARS)])
    }

    /// The entry of `stage` with `key` when it exists and matches its record; otherwise a
    /// pending one to fill. A damaged entry is removed first, with a note through `note`.
    pub fn lookup(&self, stage: &str, key: &str, note: &dyn Fn(String)) -> Result<Lookup> {
        let dir = self.entry(stage, key);
        if reusable(&dir, note) {
            return Ok(Lookup::Hit(dir));
        }
        let parent = dir.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        if let Some(prepare) = self.prepare {
            prepare(parent);
        }
        let tmp = tempfile::Builder::new()
            .prefix(&ava_core::partial::temp_prefix())
            .tempdir_in(parent)
            .map_err(|e| Error::io(parent, e))?;
        Ok(Lookup::Miss(Pending { tmp, dir }))
    }
}

impl Pending {
    /// The private directory the stage writes into.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Records the files' digests and renames the directory into place; returns the entry.
    /// Another run finishing the same entry first is as good.
    pub fn commit(self) -> Result<PathBuf> {
        let record = digests(self.tmp.path())?;
        let path = self.tmp.path().join(DIGEST_FILE);
        let text = serde_json::to_vec_pretty(&record).map_err(|e| Error::Input {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        let kept = self.tmp.keep();
        if let Err(e) = std::fs::rename(&kept, &self.dir) {
            let _ = std::fs::remove_dir_all(&kept);
            if !self.dir.is_dir() {
                return Err(Error::io(&self.dir, e));
            }
        }
        Ok(self.dir)
    }
}

/// Size and sha256 of one file of a cache entry.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileDigest {
    size: u64,
    sha256: String,
}

/// Whether the entry `dir` may be reused: it exists and its files match its record. An entry
/// that exists but does not match (damaged, or written before records existed) is removed.
fn reusable(dir: &Path, note: &dyn Fn(String)) -> bool {
    if !dir.is_dir() {
        return false;
    }
    match check_entry(dir) {
        Ok(()) => return true,
        Err(why) => note(format!("{}: {why}; rebuilding it", dir.display())),
    }
    // Moved aside first: a concurrent reader never sees a half-removed entry under its name.
    let aside = dir.with_file_name(format!("{}stale", ava_core::partial::temp_prefix()));
    if std::fs::rename(dir, &aside).is_ok() {
        let _ = std::fs::remove_dir_all(&aside);
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
    false
}

/// Compares an entry's files with its record; the reason when they differ.
fn check_entry(dir: &Path) -> std::result::Result<(), String> {
    let text = std::fs::read(dir.join(DIGEST_FILE)).map_err(|_| "no record of its files")?;
    let recorded: BTreeMap<String, FileDigest> =
        serde_json::from_slice(&text).map_err(|_| "unreadable record of its files")?;
    let present = digests(dir).map_err(|e| e.to_string())?;
    for (name, want) in &recorded {
        match present.get(name) {
            None => return Err(format!("{name} is missing")),
            Some(got) if got != want => {
                return Err(format!("{name} does not match its recorded sha256"))
            }
            Some(_) => {}
        }
    }
    match present.keys().find(|k| !recorded.contains_key(*k)) {
        Some(extra) => Err(format!("{extra} is not part of the entry")),
        None => Ok(()),
    }
}

/// Size and sha256 of every file under `dir` (relative paths with `/`), except the record.
fn digests(dir: &Path) -> Result<BTreeMap<String, FileDigest>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            let rel = rel.to_string_lossy().replace('\\', "/");
            if rel == DIGEST_FILE {
                continue;
            }
            if !kind.is_file() {
                return Err(Error::Input {
                    path,
                    reason: "not a regular file in a cache entry".into(),
                });
            }
            let f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            let mut h = Sha256::new();
            let size = stream(f, &mut h).map_err(|e| Error::io(&path, e))?;
            let sha256 = hex::encode(h.finalize());
            out.insert(rel, FileDigest { size, sha256 });
        }
    }
    Ok(out)
}

/// Feeds everything `r` yields to `h`; returns the byte count.
fn stream(mut r: impl Read, h: &mut Sha256) -> std::io::Result<u64> {
    let (mut buf, mut len) = (vec![0u8; HASH_BUFFER], 0u64);
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(len);
        }
        len += n as u64;
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(cache: &StageCache, key: &str) -> PathBuf {
        let Lookup::Miss(p) = cache.lookup("stage", key, &|_| {}).unwrap() else {
            panic!("expected a miss");
        };
        std::fs::create_dir(p.path().join("checkpoint")).unwrap();
        std::fs::write(p.path().join("checkpoint/model.bin"), b"weights").unwrap();
        p.commit().unwrap()
    }

    #[test]
    fn damaged_entries_are_rebuilt() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = StageCache::new(tmp.path(), "alc");
        let key = "0123456789abcdef0123456789abcdef";
        let dir = fill(&cache, key);
        assert_eq!(dir, tmp.path().join("alc/stage/0123456789abcdef01234567"));
        assert!(matches!(cache.lookup("stage", key, &|_| {}).unwrap(), Lookup::Hit(d) if d == dir));
        std::fs::write(dir.join("checkpoint/model.bin"), b"weightz").unwrap();
        let notes = std::cell::RefCell::new(Vec::new());
        let found = cache.lookup("stage", key, &|m| notes.borrow_mut().push(m));
        assert!(matches!(found.unwrap(), Lookup::Miss(_)));
        assert!(!dir.exists(), "a damaged entry is removed");
        assert!(notes.borrow()[0].contains("checkpoint/model.bin"));
        fill(&cache, key);
        std::fs::write(dir.join("checkpoint/extra"), b"").unwrap();
        let found = cache.lookup("stage", key, &|_| {}).unwrap();
        assert!(
            matches!(found, Lookup::Miss(_)),
            "an added file damages it too"
        );
    }

    #[test]
    fn an_unfinished_entry_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = StageCache::new(tmp.path(), "aon");
        let Lookup::Miss(p) = cache.lookup("stage", "ab", &|_| {}).unwrap() else {
            panic!("expected a miss");
        };
        std::fs::write(p.path().join("half"), b"x").unwrap();
        drop(p);
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("aon/stage"))
            .unwrap()
            .collect();
        assert!(left.is_empty());
    }

    #[test]
    fn root_precedence() {
        let vars = [(CACHE_ENV, "/a"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        let root = |v: &[(&str, &str)]| {
            let v = v.to_vec();
            default_root(&move |k| v.iter().find(|(n, _)| *n == k).map(|(_, x)| x.to_string()))
        };
        assert_eq!(root(&vars), Path::new("/a"));
        assert_eq!(root(&vars[1..]), Path::new("/x/ava"));
        assert_eq!(root(&vars[2..]), Path::new("/h/.cache/ava"));
    }

    #[test]
    fn keys_depend_on_every_part() {
        let key = |parts: &[&str]| {
            let mut h = KeyHasher::new("s", &["1"]);
            for p in parts {
                h.text(p);
            }
            h.finish()
        };
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(key(&["a"]), key(&["a"]));
        assert_ne!(
            KeyHasher::new("s", &["1"]).finish(),
            KeyHasher::new("s", &["2"]).finish()
        );
    }
}
