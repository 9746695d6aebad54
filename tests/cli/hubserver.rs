//! A Hugging Face hub on loopback for the download tests: the hub's URL layout and headers
//! (revision API, `resolve/` with `X-Repo-Commit`, `ETag`, `X-Linked-Etag`, `X-Linked-Size`,
//! ranges), a second listener on another port standing for the LFS storage ("another host": a
//! different scheme/host/port origin), a log of every request, and injectable faults.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// One file of a served revision.
#[derive(Clone, Debug)]
pub struct RepoFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub lfs: bool,
}

impl RepoFile {
    /// sha256 of the content (the LFS etag).
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }

    /// git blob sha1 (the etag of a plain file).
    pub fn git_sha1(&self) -> String {
        let mut h = Sha1::new();
        h.update(format!("blob {}\0", self.bytes.len()).as_bytes());
        h.update(&self.bytes);
        hex::encode(h.finalize())
    }

    /// The etag the hub announces for it.
    pub fn etag(&self) -> String {
        if self.lfs {
            self.sha256()
        } else {
            self.git_sha1()
        }
    }
}

/// One commit of a served repository, with the branch/tag names pointing at it.
#[derive(Clone, Debug)]
pub struct Revision {
    pub commit: String,
    pub names: Vec<String>,
    pub files: Vec<RepoFile>,
}

/// A served repository.
#[derive(Clone, Debug)]
pub struct Repo {
    pub id: String,
    pub revisions: Vec<Revision>,
}

impl Repo {
    /// A repository whose files are those of `dir`, LFS for `*.safetensors`.
    pub fn from_dir(id: &str, commit: &str, names: &[&str], dir: &Path) -> Repo {
        Repo {
            id: id.into(),
            revisions: vec![revision_from_dir(commit, names, dir)],
        }
    }
}

/// A revision whose files are those of `dir` (recursively), LFS for `*.safetensors`.
pub fn revision_from_dir(commit: &str, names: &[&str], dir: &Path) -> Revision {
    let mut files = Vec::new();
    collect(dir, "", &mut files);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Revision {
        commit: commit.into(),
        names: names.iter().map(|s| s.to_string()).collect(),
        files,
    }
}

fn collect(root: &Path, prefix: &str, out: &mut Vec<RepoFile>) {
    for entry in std::fs::read_dir(root.join(prefix)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if entry.file_type().unwrap().is_dir() {
            collect(root, &rel, out);
        } else {
            out.push(RepoFile {
                lfs: name.ends_with(".safetensors"),
                bytes: std::fs::read(entry.path()).unwrap(),
                path: rel,
            });
        }
    }
}

/// Faults the server injects; each test sets the ones it needs.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Close the connection after this many body bytes of the next whole-file GET of the file.
    pub drop_after: Option<(String, usize)>,
    /// Serve these files with one byte changed.
    pub corrupt: Vec<String>,
    /// Answer `Range` requests with the whole file (200).
    pub ignore_range: bool,
    /// Answer requests whose path contains the string with the status, so many times.
    pub status: Vec<(String, u16, u32)>,
    /// Redirect LFS files to the second listener (another origin).
    pub redirect_lfs: bool,
    /// Serve bodies in chunks of this many bytes with this pause between them.
    pub throttle: Option<(usize, Duration)>,
    /// Only this bearer token may read this repository (others get 401 GatedRepo).
    pub gated: Option<(String, String)>,
    /// GET bodies of the file carry this many bytes more than its declared size.
    pub oversize: Option<(String, usize)>,
    /// GETs of the file send their headers, then nothing for this long.
    pub stall: Option<(String, Duration)>,
    /// These (non-LFS) files get an etag that is no digest: no way to check them.
    pub opaque: Vec<String>,
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `hub` or `storage`.
    pub listener: &'static str,
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
}

impl Seen {
    /// The start of a `Range: bytes=N-` header.
    pub fn range_start(&self) -> Option<u64> {
        let v = self.headers.get("range")?;
        v.strip_prefix("bytes=")?.split('-').next()?.parse().ok()
    }
}

struct State {
    repos: Vec<Repo>,
    faults: Faults,
    seen: Vec<Seen>,
    storage_url: String,
}

/// The running server; it stops when dropped.
pub struct HubServer {
    /// `http://127.0.0.1:PORT`, the `HF_ENDPOINT`.
    pub url: String,
    /// `http://127.0.0.1:PORT2`, the LFS storage.
    pub storage_url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl HubServer {
    /// Starts both listeners on free loopback ports.
    pub fn start(repos: Vec<Repo>) -> HubServer {
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let storage = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", hub.local_addr().unwrap());
        let storage_url = format!("http://{}", storage.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            repos,
            faults: Faults::default(),
            seen: Vec::new(),
            storage_url: storage_url.clone(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        for (listener, name) in [(hub, "hub"), (storage, "storage")] {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(listener, name, state, stop));
        }
        HubServer {
            url,
            storage_url,
            state,
            stop,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the faults.
    pub fn faults(&self, edit: impl FnOnce(&mut Faults)) {
        edit(&mut self.lock().faults);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        self.lock().seen.clear();
    }

    /// Requests for file contents or metadata (`resolve/` and storage), not the revision API.
    pub fn file_requests(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| !s.path.starts_with("/api/"))
            .collect()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake both accept loops.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        let _ = TcpStream::connect(self.storage_url.trim_start_matches("http://"));
    }
}

fn accept_loop(
    listener: TcpListener,
    name: &'static str,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let state = state.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, name, &state);
        });
    }
}

/// What to send back.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close.
    cut: Option<usize>,
    throttle: Option<(usize, Duration)>,
    /// Wait this long after the headers before the body.
    stall: Option<Duration>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut: None,
            throttle: None,
            stall: None,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

fn handle(stream: TcpStream, listener: &'static str, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let seen = Seen {
        listener,
        method: method.clone(),
        path: path.clone(),
        headers,
    };
    let reply = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        state.seen.push(seen.clone());
        route(&mut state, &seen)
    };
    send(stream, &method, reply)
}

fn send(mut stream: TcpStream, method: &str, reply: Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !reply.headers.iter().any(|(k, _)| k == "Content-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.flush()?;
        if let Some(pause) = reply.stall {
            std::thread::sleep(pause);
        }
        let body = &reply.body[..reply.cut.unwrap_or(reply.body.len()).min(reply.body.len())];
        match reply.throttle {
            Some((chunk, pause)) => {
                for piece in body.chunks(chunk.max(1)) {
                    stream.write_all(piece)?;
                    stream.flush()?;
                    std::thread::sleep(pause);
                }
            }
            None => stream.write_all(body)?,
        }
    }
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

fn route(state: &mut State, req: &Seen) -> Reply {
    let path = req.path.split('?').next().unwrap_or("").to_string();
    if let Some(fault) = state
        .faults
        .status
        .iter_mut()
        .find(|(needle, _, times)| *times > 0 && path.contains(needle.as_str()))
    {
        fault.2 -= 1;
        return Reply::new(fault.1).header("X-Error-Message", "injected");
    }
    if req.listener == "storage" {
        let sha = path.trim_start_matches("/lfs/");
        let file = state
            .repos
            .iter()
            .flat_map(|r| &r.revisions)
            .flat_map(|rev| &rev.files)
            .find(|f| f.lfs && f.sha256() == sha)
            .cloned();
        return match file {
            Some(file) => serve_bytes(state, req, &file, Vec::new()),
            None => Reply::new(404),
        };
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        return api(state, req, rest);
    }
    resolve(state, req, &path)
}

/// `GET /api/models/{org}/{name}/revision/{rev}`.
fn api(state: &State, req: &Seen, rest: &str) -> Reply {
    let Some((id, rev)) = rest.split_once("/revision/") else {
        return Reply::new(404);
    };
    let rev = percent_decode(rev);
    let (repo, revision) = match find(state, id, &rev) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    if let Some(reply) = gate(state, req, &repo.id) {
        return reply;
    }
    let siblings: Vec<serde_json::Value> = revision
        .files
        .iter()
        .map(|f| {
            let mut v = serde_json::json!({"rfilename": f.path, "size": f.bytes.len()});
            if f.lfs {
                v["lfs"] = serde_json::json!({"sha256": f.sha256(), "size": f.bytes.len()});
            }
            v
        })
        .collect();
    let body = serde_json::json!({
        "id": repo.id, "modelId": repo.id, "sha": revision.commit,
        "private": false, "gated": false, "disabled": false, "siblings": siblings,
    });
    let mut reply = Reply::new(200).header("Content-Type", "application/json");
    reply.body = body.to_string().into_bytes();
    reply
}

/// `HEAD|GET /{org}/{name}/resolve/{rev}/{path}`.
fn resolve(state: &mut State, req: &Seen, path: &str) -> Reply {
    match locate(state, req, path) {
        Ok((file, headers)) => serve_bytes(state, req, &file, headers),
        Err(reply) => reply,
    }
}

/// The file a `resolve/` path names and its hub headers, or the final reply (an error, or the
/// redirect of an LFS file to the storage listener).
fn locate(
    state: &State,
    req: &Seen,
    path: &str,
) -> Result<(RepoFile, Vec<(String, String)>), Reply> {
    let (id, rest) = path
        .trim_start_matches('/')
        .split_once("/resolve/")
        .ok_or_else(|| Reply::new(404))?;
    let (rev, file) = rest.split_once('/').ok_or_else(|| Reply::new(404))?;
    let (repo, revision) = find(state, id, &percent_decode(rev))?;
    if let Some(reply) = gate(state, req, &repo.id) {
        return Err(reply);
    }
    let file_path = percent_decode(file);
    let Some(file) = revision.files.iter().find(|f| f.path == file_path) else {
        return Err(Reply::new(404).header("X-Error-Code", "EntryNotFound"));
    };
    let mut headers = vec![("X-Repo-Commit".to_string(), revision.commit.clone())];
    if file.lfs {
        let sha = file.sha256();
        headers.push(("X-Linked-Etag".into(), format!("\"{sha}\"")));
        headers.push(("X-Linked-Size".into(), file.bytes.len().to_string()));
        if state.faults.redirect_lfs {
            let mut reply = Reply::new(302)
                .header("Location", format!("{}/lfs/{sha}", state.storage_url))
                .header("ETag", "\"redirect\"");
            reply.headers.extend(headers);
            return Err(reply);
        }
    }
    let etag = if state.faults.opaque.contains(&file.path) {
        "opaque-etag".to_string()
    } else {
        file.etag()
    };
    headers.push(("ETag".into(), format!("\"{etag}\"")));
    Ok((file.clone(), headers))
}

/// The file's bytes, whole or from a `Range` start, with the faults applied.
fn serve_bytes(
    state: &mut State,
    req: &Seen,
    file: &RepoFile,
    headers: Vec<(String, String)>,
) -> Reply {
    let mut bytes = file.bytes.clone();
    if state.faults.corrupt.contains(&file.path) && !bytes.is_empty() {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
    }
    let start = if state.faults.ignore_range {
        None
    } else {
        req.range_start()
    };
    let mut reply = match start {
        Some(s) if s as usize >= bytes.len() => return Reply::new(416),
        Some(s) => {
            let len = bytes.len();
            let mut r =
                Reply::new(206).header("Content-Range", format!("bytes {s}-{}/{len}", len - 1));
            r.body = bytes.split_off(s as usize);
            r
        }
        None => {
            let mut r = Reply::new(200);
            r.body = bytes;
            r
        }
    };
    reply.headers.extend(headers);
    reply.headers.push(("Accept-Ranges".into(), "bytes".into()));
    if req.method == "HEAD" {
        reply
            .headers
            .push(("Content-Length".into(), reply.body.len().to_string()));
    }
    if req.method == "GET" && start.is_none() {
        if let Some((path, n)) = state.faults.drop_after.clone() {
            if path == file.path {
                state.faults.drop_after = None;
                reply.cut = Some(n);
            }
        }
    }
    reply.throttle = state.faults.throttle;
    if req.method == "GET" {
        match &state.faults.oversize {
            Some((path, extra)) if *path == file.path => {
                reply.body.extend(std::iter::repeat_n(b'x', *extra));
            }
            _ => {}
        }
        match &state.faults.stall {
            Some((path, pause)) if *path == file.path => reply.stall = Some(*pause),
            _ => {}
        }
    }
    reply
}

/// The repository and revision (by name or commit), or the hub's 404.
fn find<'a>(state: &'a State, id: &str, rev: &str) -> Result<(&'a Repo, &'a Revision), Reply> {
    let Some(repo) = state.repos.iter().find(|r| r.id == id) else {
        return Err(Reply::new(404)
            .header("X-Error-Code", "RepoNotFound")
            .header("X-Error-Message", "Repository not found"));
    };
    let revision = repo
        .revisions
        .iter()
        .find(|r| r.commit == rev || r.names.iter().any(|n| n == rev));
    match revision {
        Some(revision) => Ok((repo, revision)),
        None => Err(Reply::new(404)
            .header("X-Error-Code", "RevisionNotFound")
            .header("X-Error-Message", "Invalid rev id")),
    }
}

/// The 401 of a gated repository asked without its token.
fn gate(state: &State, req: &Seen, repo: &str) -> Option<Reply> {
    let (gated, token) = state.faults.gated.as_ref()?;
    let expected = format!("Bearer {token}");
    (gated == repo && req.headers.get("authorization") != Some(&expected)).then(|| {
        Reply::new(401)
            .header("X-Error-Code", "GatedRepo")
            .header("X-Error-Message", "Access to this model is restricted")
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
