//! Names that come from the user or the server, checked before they become URLs or file paths:
//! repository ids, revisions, file paths inside a repository, etags, and the include/exclude
//! filter.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::error::{Error, Result};

/// Longest repository id the hub accepts.
const MAX_REPO_ID_LEN: usize = 96;
/// Longest revision name accepted (git refs are far shorter in practice).
const MAX_REVISION_LEN: usize = 256;
/// Longest etag accepted as a blob file name.
const MAX_ETAG_LEN: usize = 128;
/// Length of a full git commit sha in hex.
pub const COMMIT_HEX_LEN: usize = 40;
/// Length of a sha256 digest in hex.
pub const SHA256_HEX_LEN: usize = 64;
/// The revision used when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// A checked `org/name` or `name` model repository id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoId(String);

impl RepoId {
    /// Checks `id` the way the hub does: one or two parts of `[A-Za-z0-9_.-]`, no `--` or
    /// `..`, no part starting or ending with `-` or `.`.
    pub fn parse(id: &str) -> Result<Self> {
        let bad = || Error::InvalidRepoId(id.to_string());
        if id.is_empty() || id.len() > MAX_REPO_ID_LEN || id.contains("--") || id.contains("..") {
            return Err(bad());
        }
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() > 2 {
            return Err(bad());
        }
        for part in parts {
            let chars_ok = part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            let edges_ok =
                !part.is_empty() && !part.starts_with(['-', '.']) && !part.ends_with(['-', '.']);
            if !chars_ok || !edges_ok {
                return Err(bad());
            }
        }
        Ok(RepoId(id.to_string()))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The cache folder name: `models--org--name`.
    pub fn folder_name(&self) -> String {
        format!("models--{}", self.0.replace('/', "--"))
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Extensions that make an argument a file name, never a repository id (`dist/model.tar`).
const FILE_EXTENSIONS: [&str; 22] = [
    "tar",
    "zst",
    "gz",
    "zip",
    "gguf",
    "onnx",
    "safetensors",
    "json",
    "jsonl",
    "txt",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "pkl",
    "h5",
    "msgpack",
    "npz",
    "npy",
    "so",
    "model",
    "ot",
];

/// Whether a command-line argument that names no local path is to be fetched from the hub: a
/// well-formed `org/name[@revision]` whose name does not end in a file extension. Anything else
/// (`model.tar`, `dist/model.tar`, `./org/name`, `a/b/c`, `name`) is a missing local path.
pub fn is_hub_argument(arg: &str) -> bool {
    let (id, rev) = split_revision(arg);
    let Some((_, name)) = id.split_once('/') else {
        return false;
    };
    let looks_like_file = name
        .rsplit_once('.')
        .is_some_and(|(_, ext)| FILE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()));
    RepoId::parse(id).is_ok() && !looks_like_file && rev.is_none_or(|r| check_revision(r).is_ok())
}

/// Splits `org/name@rev` into the id and the optional revision.
pub fn split_revision(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (arg, None),
    }
}

/// Checks a branch, tag or commit name; it becomes a path under `refs/`, so its `/`-separated
/// parts must be plain names.
pub fn check_revision(rev: &str) -> Result<()> {
    let parts_ok = rev
        .split('/')
        .all(|p| !p.is_empty() && p != "." && p != "..");
    let chars_ok = rev
        .chars()
        .all(|c| !c.is_control() && !matches!(c, '\\' | ':' | '\0'));
    if rev.is_empty() || rev.len() > MAX_REVISION_LEN || !parts_ok || !chars_ok {
        return Err(Error::InvalidRevision(rev.to_string()));
    }
    Ok(())
}

/// A full 40-hex-digit commit sha.
pub fn is_commit(rev: &str) -> bool {
    rev.len() == COMMIT_HEX_LEN && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A 64-hex-digit sha256, the etag of an LFS file.
pub fn is_sha256(etag: &str) -> bool {
    etag.len() == SHA256_HEX_LEN && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A file path from the server's file list, checked before it is joined to a directory: relative,
/// `/`-separated, no empty, `.` or `..` parts, no backslashes or control characters.
pub fn check_file_path(repo: &RepoId, path: &str) -> Result<()> {
    let parts_ok = path
        .split('/')
        .all(|p| !p.is_empty() && p != "." && p != "..");
    let chars_ok = path.chars().all(|c| !c.is_control() && c != '\\');
    if path.is_empty() || !parts_ok || !chars_ok || path.contains(':') {
        return Err(Error::Protocol {
            url: repo.to_string(),
            message: format!("unsafe file path {path:?} in the file list"),
        });
    }
    Ok(())
}

/// An etag as the server sent it (`"abc"`, `W/"abc"`), unquoted and checked: it names a blob file.
pub fn normalize_etag(raw: &str, url: &str) -> Result<String> {
    let etag = raw.trim().trim_start_matches("W/").trim_matches('"');
    let ok = !etag.is_empty()
        && etag.len() <= MAX_ETAG_LEN
        && !etag.starts_with('.')
        && etag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(Error::Protocol {
            url: url.to_string(),
            message: format!("unusable etag {raw:?}"),
        });
    }
    Ok(etag.to_string())
}

/// Percent-encodes `s` for a URL path: unreserved characters stay, `/` stays when `keep_slash`
/// (file paths), everything else becomes `%XX` (revisions such as `refs/pr/1` are one segment).
pub fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Which repository files to take: all, or those matching an include pattern, minus those
/// matching an exclude pattern. As in `huggingface_hub`, `*` also matches `/` and a pattern
/// ending in `/` means everything under that folder.
#[derive(Debug)]
pub struct FileFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl FileFilter {
    /// Compiles the patterns.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        let include = if include.is_empty() {
            None
        } else {
            Some(glob_set(include)?)
        };
        Ok(FileFilter {
            include,
            exclude: glob_set(exclude)?,
        })
    }

    /// Whether `path` is taken.
    pub fn matches(&self, path: &str) -> bool {
        let included = self.include.as_ref().is_none_or(|set| set.is_match(path));
        included && !self.exclude.is_match(path)
    }
}

fn glob_set(patterns: &[String]) -> Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let expanded = if pattern.ends_with('/') {
            format!("{pattern}*")
        } else {
            pattern.clone()
        };
        let glob = GlobBuilder::new(&expanded)
            .literal_separator(false)
            .build()
            .map_err(|source| Error::Glob {
                pattern: pattern.clone(),
                source,
            })?;
        set.add(glob);
    }
    set.build().map_err(|source| Error::Glob {
        pattern: patterns.join(" "),
        source,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn hub_arguments() {
        for yes in [
            "google/gemma-3-270m",
            "org/name@main",
            "org/model.v2",
            "a/b@refs/pr/1",
        ] {
            assert!(is_hub_argument(yes), "{yes}");
        }
        for no in [
            "model.tar",
            "dist/model.tar",
            "dist/model.TAR.ZST",
            "./org/name",
            "/org/name",
            "org/name/extra",
            "gemma",
            "org/name@",
            "org/..",
            "~/models",
        ] {
            assert!(!is_hub_argument(no), "{no}");
        }
    }

    use super::*;

    #[test]
    fn repo_ids() {
        for ok in ["gpt2", "google/gemma-3-270m", "a.b/c_d", "Org1/x.y"] {
            assert!(RepoId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a/b/c", "a--b", "../x", "a/..", "-a", "a/b-", "a b", "/a", "a/", "a/.b",
        ] {
            assert!(RepoId::parse(bad).is_err(), "{bad}");
        }
        let id = RepoId::parse("google/gemma-3-270m").unwrap();
        assert_eq!(id.folder_name(), "models--google--gemma-3-270m");
    }

    #[test]
    fn revisions_and_paths() {
        assert!(check_revision("main").is_ok());
        assert!(check_revision("refs/pr/1").is_ok());
        for bad in ["", "..", "a/../b", "/a", "a//b", "a\\b"] {
            assert!(check_revision(bad).is_err(), "{bad}");
        }
        let repo = RepoId::parse("a/b").unwrap();
        assert!(check_file_path(&repo, "sub/dir/x.json").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\\b",
            "a//b",
            "./a",
            "c:x",
        ] {
            assert!(check_file_path(&repo, bad).is_err(), "{bad}");
        }
        assert_eq!(split_revision("a/b@v1"), ("a/b", Some("v1")));
        assert_eq!(split_revision("a/b"), ("a/b", None));
    }

    #[test]
    fn etags_and_encoding() {
        assert_eq!(normalize_etag("W/\"abc-1\"", "u").unwrap(), "abc-1");
        assert_eq!(normalize_etag("\"ff\"", "u").unwrap(), "ff");
        assert!(normalize_etag("\"../x\"", "u").is_err());
        assert!(normalize_etag("\"a/b\"", "u").is_err());
        assert!(normalize_etag("\"\"", "u").is_err());
        assert_eq!(percent_encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(percent_encode("a b/c.json", true), "a%20b/c.json");
    }

    #[test]
    fn filters() {
        let f = FileFilter::new(&["*.json".into(), "onnx/".into()], &["tok*".into()]).unwrap();
        assert!(f.matches("config.json"));
        assert!(f.matches("sub/x.json"));
        assert!(f.matches("onnx/model.onnx"));
        assert!(!f.matches("tokenizer.json"));
        assert!(!f.matches("model.safetensors"));
        let all = FileFilter::new(&[], &[]).unwrap();
        assert!(all.matches("anything/at/all"));
    }
}
