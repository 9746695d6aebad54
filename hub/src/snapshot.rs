//! A whole download: resolve the revision to a commit and its file list, then fetch the files
//! (several at a time) into the cache or a local dir, or, offline, find them there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::cache::RepoCache;
use super::error::{io_err, Error, Result};
use super::http::{Client, Ctx, Sibling};
use super::local_dir::{self, LocalPaths};
use super::options::HubOptions;
use super::progress::Progress;
use super::repo::{
    check_file_path, check_revision, is_commit, is_sha256, FileFilter, RepoId, DEFAULT_REVISION,
};
use super::transfer::{fetch, with_retries, Transfer};
use super::verify::{digest_file, Expected};

/// What to download.
#[derive(Clone, Debug)]
pub struct DownloadRequest {
    pub repo: RepoId,
    /// Branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// Only these files (exact paths; each must exist), plus those `include` matches.
    pub files: Vec<String>,
    /// These files too when the revision has them (exact paths; absent ones are no error).
    pub optional: Vec<String>,
    /// Only files matching one of these globs (all when empty, unless `files` are named).
    pub include: Vec<String>,
    /// Minus files matching one of these.
    pub exclude: Vec<String>,
    /// Write plain files here instead of returning a cache snapshot.
    pub local_dir: Option<PathBuf>,
}

impl DownloadRequest {
    /// Whether the globs select files: always, unless files are named and no `include` is
    /// given (then the named files alone).
    fn by_glob(&self) -> bool {
        (self.files.is_empty() && self.optional.is_empty()) || !self.include.is_empty()
    }

    /// Whether `path` is named, required or optional.
    fn named(&self, path: &str) -> bool {
        self.files.iter().chain(&self.optional).any(|f| f == path)
    }
}

/// The result: where the files are and what they are.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub repo_id: String,
    pub revision: String,
    pub commit: String,
    /// The snapshot directory (`.../snapshots/{commit}`) or the local dir.
    pub path: PathBuf,
    pub files: Vec<FileReport>,
}

/// One file of the result.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// The hub's etag (the blob name in the cache), when known.
    pub etag: Option<String>,
    /// Whether its bytes came over the network in this run.
    pub downloaded: bool,
}

/// What a download would fetch ([`plan`]).
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub repo_id: String,
    pub revision: String,
    pub commit: String,
    pub files: Vec<PlannedFile>,
}

/// One file of a [`Plan`].
#[derive(Clone, Debug, Serialize)]
pub struct PlannedFile {
    pub path: String,
    /// Bytes, as the hub lists it (when it does).
    pub size: Option<u64>,
    /// Whether the cache (or local dir) already holds it at this commit: nothing to fetch.
    pub present: bool,
}

impl Plan {
    /// Bytes of the files not present yet (those of unknown size counted as 0).
    pub fn bytes_to_fetch(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| !f.present)
            .filter_map(|f| f.size)
            .sum()
    }
}

impl Snapshot {
    /// Bytes fetched in this run.
    pub fn downloaded_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.downloaded)
            .map(|f| f.size)
            .sum()
    }
}

/// What [`download`] would fetch for `req`, asking the hub only for the file list: the commit
/// the revision is at, and each selected file's size and whether it is already here.
pub fn plan(req: &DownloadRequest, opts: &HubOptions) -> Result<Plan> {
    let revision = req.revision.as_deref().unwrap_or(DEFAULT_REVISION);
    check_revision(revision)?;
    let filter = FileFilter::new(&req.include, &req.exclude)?;
    if opts.offline {
        return Err(Error::Offline(
            "a dry run asks the hub for the file list; it cannot run offline".into(),
        ));
    }
    let client = Client::new(opts)?;
    let ctx = Ctx {
        repo: &req.repo,
        revision,
        file: None,
    };
    let info = with_retries(&format!("{}@{revision}", req.repo), || {
        client.repo_info(ctx)
    })?;
    let commit = commit_of(&client, info.sha)?;
    let cache = RepoCache::new(&opts.cache_dir, &req.repo);
    let files = select(req, revision, &filter, info.siblings)?
        .into_iter()
        .map(|s| {
            let present = match &req.local_dir {
                Some(dir) => local_dir::read_metadata(&LocalPaths::new(dir, &s.rfilename))
                    .is_some_and(|m| m.commit == commit),
                None => cache.pointer(&commit, &s.rfilename).exists(),
            };
            PlannedFile {
                path: s.rfilename,
                size: s.size,
                present,
            }
        })
        .collect();
    Ok(Plan {
        repo_id: req.repo.to_string(),
        revision: revision.to_string(),
        commit,
        files,
    })
}

/// The commit a revision answer names, lower-cased.
fn commit_of(client: &Client, sha: Option<String>) -> Result<String> {
    match sha {
        Some(sha) if is_commit(&sha) => Ok(sha.to_ascii_lowercase()),
        other => Err(Error::Protocol {
            url: client.endpoint().to_string(),
            message: format!("revision info has no usable commit sha: {other:?}"),
        }),
    }
}

/// Downloads (or, offline, finds) `req`, reporting the bytes received to `progress`.
pub fn download(
    req: &DownloadRequest,
    opts: &HubOptions,
    progress: &dyn Progress,
) -> Result<Snapshot> {
    let revision = req.revision.as_deref().unwrap_or(DEFAULT_REVISION);
    check_revision(revision)?;
    let filter = FileFilter::new(&req.include, &req.exclude)?;
    if opts.offline {
        return match &req.local_dir {
            Some(dir) => offline_local(req, revision, &filter, dir),
            None => offline_cache(req, revision, &filter, opts),
        };
    }
    let client = Client::new(opts)?;
    let ctx = Ctx {
        repo: &req.repo,
        revision,
        file: None,
    };
    let what = format!("{}@{revision}", req.repo);
    let info = with_retries(&what, || client.repo_info(ctx))?;
    let commit = commit_of(&client, info.sha)?;
    let cache = RepoCache::new(&opts.cache_dir, &req.repo);
    if req.local_dir.is_none() {
        cache.write_ref(revision, &commit)?;
    }
    let files = select(req, revision, &filter, info.siblings)?;
    let job = Job {
        client: &client,
        repo: &req.repo,
        commit: &commit,
        cache: &cache,
        local_dir: req.local_dir.as_deref(),
        progress,
    };
    let reports = run_parallel(&files, opts.parallel, |sibling| job.file(sibling))?;
    Ok(Snapshot {
        repo_id: req.repo.to_string(),
        revision: revision.to_string(),
        path: req
            .local_dir
            .clone()
            .unwrap_or_else(|| cache.snapshot(&commit)),
        commit,
        files: reports,
    })
}

/// The listed files the filter takes, each path checked, sorted.
fn select(
    req: &DownloadRequest,
    revision: &str,
    filter: &FileFilter,
    siblings: Vec<Sibling>,
) -> Result<Vec<Sibling>> {
    let total = siblings.len();
    for file in &req.files {
        if !siblings.iter().any(|s| &s.rfilename == file) {
            return Err(Error::MissingFile {
                repo: req.repo.to_string(),
                revision: revision.to_string(),
                file: file.clone(),
            });
        }
    }
    let by_glob = req.by_glob();
    let mut files = Vec::new();
    for sibling in siblings {
        check_file_path(&req.repo, &sibling.rfilename)?;
        if req.named(&sibling.rfilename) || (by_glob && filter.matches(&sibling.rfilename)) {
            files.push(sibling);
        }
    }
    if files.is_empty() {
        return Err(Error::NoMatchingFiles {
            repo: req.repo.to_string(),
            revision: revision.to_string(),
            total,
        });
    }
    files.sort_by(|a, b| a.rfilename.cmp(&b.rfilename));
    Ok(files)
}

/// What every per-file task needs.
struct Job<'a> {
    client: &'a Client,
    repo: &'a RepoId,
    commit: &'a str,
    cache: &'a RepoCache,
    local_dir: Option<&'a Path>,
    progress: &'a dyn Progress,
}

impl Job<'_> {
    fn ctx<'b>(&'b self, file: &'b str) -> Ctx<'b> {
        Ctx {
            repo: self.repo,
            revision: self.commit,
            file: Some(file),
        }
    }

    fn file(&self, sibling: &Sibling) -> Result<FileReport> {
        match self.local_dir {
            Some(dir) => self.local_file(dir, sibling),
            None => self.cache_file(sibling),
        }
    }

    /// A file into the cache: nothing is requested when the snapshot already has it, and
    /// nothing is downloaded when its blob is already there (shared with another commit).
    fn cache_file(&self, sibling: &Sibling) -> Result<FileReport> {
        let path = &sibling.rfilename;
        let pointer = self.cache.pointer(self.commit, path);
        if pointer.exists() {
            return report(path, &pointer, RepoCache::pointer_etag(&pointer), false);
        }
        let (expected, meta) = self.head(sibling)?;
        let blob = self.cache.blob(&meta.etag);
        let downloaded = !blob.exists();
        if downloaded {
            let incomplete = self.cache.incomplete(&meta.etag);
            self.transfer(path, &meta.location, &incomplete, &expected)?;
            std::fs::rename(&incomplete, &blob).map_err(io_err(&blob))?;
        }
        self.cache.link(self.commit, path, &meta.etag)?;
        report(path, &blob, Some(meta.etag), downloaded)
    }

    /// A file into a local dir: skipped without a request when its metadata says it is this
    /// commit's and the file was not touched since, skipped after a `HEAD` when the etag is
    /// unchanged.
    fn local_file(&self, dir: &Path, sibling: &Sibling) -> Result<FileReport> {
        let path = &sibling.rfilename;
        let paths = LocalPaths::new(dir, path);
        let known = local_dir::read_metadata(&paths);
        if let Some(meta) = known.as_ref().filter(|m| m.commit == self.commit) {
            return report(path, &paths.file, Some(meta.etag.clone()), false);
        }
        let (expected, meta) = self.head(sibling)?;
        let unchanged = known.is_some_and(|k| k.etag == meta.etag);
        if !unchanged {
            let incomplete = paths.incomplete(&meta.etag);
            self.transfer(path, &meta.location, &incomplete, &expected)?;
            if let Some(parent) = paths.file.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            std::fs::rename(&incomplete, &paths.file).map_err(io_err(&paths.file))?;
        }
        local_dir::write_metadata(dir, &paths, self.commit, &meta.etag)?;
        report(path, &paths.file, Some(meta.etag), !unchanged)
    }

    /// `HEAD` on the file at the pinned commit: what it must hash to, and where it is.
    fn head(&self, sibling: &Sibling) -> Result<(Expected, super::http::FileMeta)> {
        let path = &sibling.rfilename;
        let meta = with_retries(path, || self.client.file_meta(self.ctx(path), path))?;
        if let Some(commit) = meta.commit.as_deref().filter(|c| *c != self.commit) {
            return Err(Error::Protocol {
                url: meta.location.to_string(),
                message: format!(
                    "{path}: X-Repo-Commit {commit} but {} was asked for",
                    self.commit
                ),
            });
        }
        let lfs_sha = sibling.lfs.as_ref().and_then(|l| l.sha256.as_deref());
        let expected = Expected::from_etag(path, &meta.etag, meta.size.or(sibling.size), lfs_sha);
        if !expected.checkable() && !self.client.no_verify {
            return Err(Error::Unverifiable { file: path.clone() });
        }
        Ok((expected, meta))
    }

    fn transfer(
        &self,
        path: &str,
        url: &url::Url,
        incomplete: &Path,
        expected: &Expected,
    ) -> Result<()> {
        let transfer = Transfer {
            ctx: self.ctx(path),
            url,
            incomplete,
            expected,
        };
        fetch(self.client, &transfer, self.progress).map(|_| ())
    }
}

/// The report of a file on disk: its sha256 is the etag for LFS files, else read.
fn report(
    path: &str,
    on_disk: &Path,
    etag: Option<String>,
    downloaded: bool,
) -> Result<FileReport> {
    let (size, sha256) = match etag.as_deref().filter(|e| is_sha256(e)) {
        Some(sha) => {
            let size = std::fs::metadata(on_disk).map_err(io_err(on_disk))?.len();
            (size, sha.to_ascii_lowercase())
        }
        None => {
            let d = digest_file(on_disk)?;
            (d.size, d.sha256)
        }
    };
    Ok(FileReport {
        path: path.to_string(),
        size,
        sha256,
        etag,
        downloaded,
    })
}

/// Offline, from the cache: the commit from `refs/` (or the revision itself), the files from the
/// snapshot folder.
fn offline_cache(
    req: &DownloadRequest,
    revision: &str,
    filter: &FileFilter,
    opts: &HubOptions,
) -> Result<Snapshot> {
    let cache = RepoCache::new(&opts.cache_dir, &req.repo);
    let commit = if is_commit(revision) && cache.snapshot(revision).is_dir() {
        revision.to_ascii_lowercase()
    } else {
        cache.read_ref(revision)?.ok_or_else(|| {
            Error::Offline(format!(
                "{}@{revision} is not in the cache {}; run once without --offline",
                req.repo,
                opts.cache_dir.display()
            ))
        })?
    };
    let dir = cache.snapshot(&commit);
    if !dir.is_dir() {
        return Err(Error::Offline(format!(
            "{} is missing; run once without --offline",
            dir.display()
        )));
    }
    let files = cache.snapshot_files(&commit)?;
    let names = offline_select(req, filter, files)?;
    let files = names
        .iter()
        .map(|name| {
            let pointer = cache.pointer(&commit, name);
            report(name, &pointer, RepoCache::pointer_etag(&pointer), false)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Snapshot {
        repo_id: req.repo.to_string(),
        revision: revision.to_string(),
        commit,
        path: dir,
        files,
    })
}

/// Offline, from a local dir's metadata.
fn offline_local(
    req: &DownloadRequest,
    revision: &str,
    filter: &FileFilter,
    dir: &Path,
) -> Result<Snapshot> {
    let mut entries = local_dir::list(dir)?;
    if is_commit(revision) {
        entries.retain(|(_, meta)| meta.commit.eq_ignore_ascii_case(revision));
    }
    let commit = entries
        .first()
        .map(|(_, m)| m.commit.clone())
        .ok_or_else(|| {
            Error::Offline(format!(
                "{} holds no download of {}@{revision}; run once without --offline",
                dir.display(),
                req.repo
            ))
        })?;
    let etags: std::collections::HashMap<String, String> = entries
        .iter()
        .map(|(name, meta)| (name.clone(), meta.etag.clone()))
        .collect();
    let names = offline_select(req, filter, entries.into_iter().map(|(n, _)| n).collect())?;
    let files = names
        .iter()
        .map(|name| report(name, &dir.join(name), etags.get(name).cloned(), false))
        .collect::<Result<Vec<_>>>()?;
    Ok(Snapshot {
        repo_id: req.repo.to_string(),
        revision: revision.to_string(),
        commit,
        path: dir.to_path_buf(),
        files,
    })
}

/// The cached files the filter takes; a literal `--include` (no glob characters) that matches
/// nothing, or nothing matching at all, is an error naming what is missing.
fn offline_select(
    req: &DownloadRequest,
    filter: &FileFilter,
    files: Vec<String>,
) -> Result<Vec<String>> {
    for pattern in &req.include {
        let literal = !pattern.contains(['*', '?', '[', '{']);
        let prefix = pattern.ends_with('/');
        let found = files.iter().any(|f| {
            if prefix {
                f.starts_with(pattern.as_str())
            } else {
                f == pattern
            }
        });
        if literal && !found {
            return Err(Error::Offline(format!(
                "{pattern} of {} is not cached",
                req.repo
            )));
        }
    }
    for file in &req.files {
        if !files.contains(file) {
            return Err(Error::Offline(format!(
                "{file} of {} is not cached",
                req.repo
            )));
        }
    }
    let by_glob = req.by_glob();
    let names: Vec<String> = files
        .into_iter()
        .filter(|f| req.named(f) || (by_glob && filter.matches(f)))
        .collect();
    if names.is_empty() {
        return Err(Error::Offline(format!(
            "no cached file of {} matches --include/--exclude",
            req.repo
        )));
    }
    Ok(names)
}

/// Runs `task` over `items` on up to `workers` threads, results in item order. After the first
/// failure no new item is started; the error of the earliest failed item is returned.
fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    task: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = task(item);
                    if result.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut slots) = results.lock() {
                        slots[i] = Some(result);
                    }
                }
            });
        }
    });
    let slots = results.into_inner().unwrap_or_else(|e| e.into_inner());
    // Items are taken in order, so any item never started comes after a failed one.
    let mut out = Vec::with_capacity(items.len());
    for slot in slots.into_iter().flatten() {
        out.push(slot?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_keeps_order_and_stops_on_error() {
        let items: Vec<u32> = (0..20).collect();
        let out = run_parallel(&items, 4, |i| Ok(i * 2)).unwrap();
        assert_eq!(out, (0..20).map(|i| i * 2).collect::<Vec<_>>());
        let err = run_parallel(&items, 3, |i| {
            if *i == 5 {
                Err(Error::Offline("five".into()))
            } else {
                Ok(*i)
            }
        });
        assert!(err.unwrap_err().to_string().contains("five"));
    }

    fn sibling(name: &str) -> Sibling {
        Sibling {
            rfilename: name.into(),
            size: None,
            lfs: None,
        }
    }

    #[test]
    fn optional_files_are_taken_when_listed_and_never_required() {
        let mut req = crate::gguf_request("org/m-GGUF", "m-Q4_K_M.gguf").unwrap();
        let filter = FileFilter::new(&req.include, &req.exclude).unwrap();
        let listed = [
            "m-Q4_K_M.gguf",
            "m-Q8_0.gguf",
            "tokenizer.json",
            "README.md",
        ];
        let pick = |req: &DownloadRequest, names: &[&str]| -> Result<Vec<String>> {
            let siblings = names.iter().map(|n| sibling(n)).collect();
            Ok(select(req, "main", &filter, siblings)?
                .into_iter()
                .map(|s| s.rfilename)
                .collect())
        };
        assert_eq!(
            pick(&req, &listed).unwrap(),
            ["m-Q4_K_M.gguf", "tokenizer.json"]
        );
        assert_eq!(
            pick(&req, &listed[..2]).unwrap(),
            ["m-Q4_K_M.gguf"],
            "no tokenizer.json: no error"
        );
        assert!(matches!(
            pick(&req, &listed[1..]),
            Err(Error::MissingFile { .. })
        ));
        let cached: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            offline_select(&req, &filter, cached).unwrap(),
            ["m-Q4_K_M.gguf", "tokenizer.json"]
        );
        req.files.clear();
        let all = FileFilter::new(&[], &[]).unwrap();
        let only_optional = select(
            &req,
            "main",
            &all,
            listed.iter().map(|n| sibling(n)).collect(),
        );
        assert_eq!(
            only_optional.unwrap().len(),
            1,
            "optional files alone select no glob"
        );
    }
}
