//! The HTTP side of the hub protocol: the revision API, `HEAD` on `resolve/` for a file's etag,
//! size and commit, and ranged `GET`s. Redirects are followed by hand so that the token goes to
//! the endpoint's own origin (scheme, host and port) and never to another one.

use std::io::Read;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::error::{Error, Result};
use super::options::HubOptions;
use super::repo::{normalize_etag, percent_encode, RepoId};

/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 10;
/// Largest revision API answer read (a repository with very many files stays far below).
const MAX_API_BYTES: u64 = 64 << 20;
/// Time allowed to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which request failed, for error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    pub repo: &'a RepoId,
    pub revision: &'a str,
    pub file: Option<&'a str>,
}

/// A file as the revision API lists it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Sibling {
    pub rfilename: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

/// The LFS part of a sibling (`?blobs=true`).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct LfsInfo {
    #[serde(default)]
    pub sha256: Option<String>,
}

/// What `GET /api/models/{repo}/revision/{rev}` answers.
#[derive(Debug, Deserialize)]
pub(crate) struct RepoInfo {
    pub sha: Option<String>,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

/// What `HEAD {repo}/resolve/{rev}/{path}` says about a file.
#[derive(Clone, Debug)]
pub(crate) struct FileMeta {
    /// `X-Linked-Etag` (LFS: the sha256) or `ETag` (git: the blob sha1), unquoted.
    pub etag: String,
    /// `X-Linked-Size` or `Content-Length`.
    pub size: Option<u64>,
    /// `X-Repo-Commit`.
    pub commit: Option<String>,
    /// Where the bytes are: the resolve URL, or the other origin it redirects to.
    pub location: Url,
}

/// An open response body, possibly partial.
pub(crate) struct Body {
    /// 200 (whole file) or 206 (from `start`).
    pub status: u16,
    /// Where a 206 body starts, from `Content-Range`.
    pub start: Option<u64>,
    pub reader: Box<dyn Read + Send + Sync>,
}

/// A blocking client for one hub endpoint.
pub(crate) struct Client {
    /// Longest time one file may take ([`HubOptions::file_deadline`]).
    pub file_deadline: Duration,
    /// Whether files with no possible check are accepted ([`HubOptions::no_verify`]).
    pub no_verify: bool,
    agent: ureq::Agent,
    endpoint: String,
    origin: url::Origin,
    token: Option<String>,
}

impl Client {
    /// A client for `opts.endpoint`, carrying `opts.token`.
    pub fn new(opts: &HubOptions) -> Result<Self> {
        let base = parse_url(&format!("{}/", opts.endpoint))?;
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(opts.stall_timeout)
            .user_agent(concat!("ava/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            file_deadline: opts.file_deadline,
            no_verify: opts.no_verify,
            agent,
            endpoint: opts.endpoint.clone(),
            origin: base.origin(),
            token: opts.token.clone(),
        })
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true`: the commit and file list.
    pub fn repo_info(&self, ctx: Ctx<'_>) -> Result<RepoInfo> {
        let url = parse_url(&format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint,
            ctx.repo,
            percent_encode(ctx.revision, false)
        ))?;
        let (resp, url) = self.follow("GET", url, &[], true)?;
        if resp.status() != 200 {
            return Err(self.status_error(ctx, &url, resp));
        }
        let mut text = Vec::new();
        resp.into_reader()
            .take(MAX_API_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| transport(&url, &e))?;
        if text.len() as u64 > MAX_API_BYTES {
            return Err(protocol(&url, "revision info larger than 64 MiB"));
        }
        serde_json::from_slice(&text).map_err(|e| protocol(&url, &e.to_string()))
    }

    /// The `resolve/` URL of a file at a revision.
    pub fn resolve_url(&self, ctx: Ctx<'_>, path: &str) -> Result<Url> {
        parse_url(&format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            ctx.repo,
            percent_encode(ctx.revision, false),
            percent_encode(path, true)
        ))
    }

    /// `HEAD` on a file's `resolve/` URL, following redirects within the endpoint's origin only
    /// (renamed repositories); a redirect elsewhere (the LFS storage) ends it, and its headers
    /// and `Location` are the answer, as in `huggingface_hub`.
    pub fn file_meta(&self, ctx: Ctx<'_>, path: &str) -> Result<FileMeta> {
        let url = self.resolve_url(ctx, path)?;
        let (resp, url) = self.follow("HEAD", url, &[], false)?;
        let status = resp.status();
        let location = if (300..400).contains(&status) {
            let target = resp
                .header("location")
                .ok_or_else(|| protocol(&url, "redirect without Location"))?;
            url.join(target)
                .map_err(|e| protocol(&url, &format!("bad Location: {e}")))?
        } else if status == 200 {
            url.clone()
        } else {
            return Err(self.status_error(ctx, &url, resp));
        };
        let raw_etag = resp
            .header("x-linked-etag")
            .or_else(|| resp.header("etag"))
            .ok_or_else(|| protocol(&url, "no ETag header: is HF_ENDPOINT a hub?"))?;
        let size = resp
            .header("x-linked-size")
            .or_else(|| resp.header("content-length"))
            .and_then(|s| s.trim().parse().ok());
        Ok(FileMeta {
            etag: normalize_etag(raw_etag, url.as_str())?,
            size,
            commit: resp.header("x-repo-commit").map(|c| c.trim().to_string()),
            location,
        })
    }

    /// `GET url`, from byte `offset` on (a `Range` request when `offset > 0`), following
    /// redirects. Anything but 200 and 206 is an error; 416 is returned as an error with that
    /// status so the caller can restart.
    pub fn get_from(&self, ctx: Ctx<'_>, url: &Url, offset: u64) -> Result<Body> {
        let range = format!("bytes={offset}-");
        let headers: Vec<(&str, &str)> = if offset > 0 {
            vec![("Range", range.as_str())]
        } else {
            Vec::new()
        };
        let (resp, url) = self.follow("GET", url.clone(), &headers, true)?;
        let status = resp.status();
        if status != 200 && status != 206 {
            return Err(self.status_error(ctx, &url, resp));
        }
        let start = resp.header("content-range").and_then(content_range_start);
        if status == 206 && start.is_none() {
            return Err(protocol(&url, "206 without a usable Content-Range"));
        }
        Ok(Body {
            status,
            start,
            reader: resp.into_reader(),
        })
    }

    /// Sends one request, adding the token only when `url` is on the endpoint's origin.
    fn send(&self, method: &str, url: &Url, headers: &[(&str, &str)]) -> Result<ureq::Response> {
        // Sizes and digests are those of the stored bytes: no transfer encoding.
        let mut req = self
            .agent
            .request_url(method, url)
            .set("Accept-Encoding", "identity");
        for (name, value) in headers {
            req = req.set(name, value);
        }
        if let Some(token) = &self.token {
            if url.origin() == self.origin {
                req = req.set("Authorization", &format!("Bearer {token}"));
            }
        }
        match req.call() {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => Ok(resp),
            Err(ureq::Error::Transport(t)) => Err(Error::Transport {
                url: url.to_string(),
                message: t.to_string(),
            }),
        }
    }

    /// Sends a request and follows redirects (all of them, or only those within the endpoint's
    /// origin when `anywhere` is false). Returns the last response and its URL.
    fn follow(
        &self,
        method: &str,
        mut url: Url,
        headers: &[(&str, &str)],
        anywhere: bool,
    ) -> Result<(ureq::Response, Url)> {
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.send(method, &url, headers)?;
            if !matches!(resp.status(), 301 | 302 | 303 | 307 | 308) {
                return Ok((resp, url));
            }
            let Some(location) = resp.header("location") else {
                return Err(protocol(&url, "redirect without Location"));
            };
            let next = url
                .join(location)
                .map_err(|e| protocol(&url, &format!("bad Location: {e}")))?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(Error::Url {
                    url: next.to_string(),
                    message: "redirect to a non-HTTP URL".into(),
                });
            }
            if !anywhere && next.origin() != self.origin {
                return Ok((resp, url));
            }
            url = next;
        }
        Err(protocol(&url, "too many redirects"))
    }

    /// Turns an error status into the message the user needs.
    fn status_error(&self, ctx: Ctx<'_>, url: &Url, resp: ureq::Response) -> Error {
        let status = resp.status();
        let code = resp.header("x-error-code").unwrap_or("").to_string();
        let detail = resp
            .header("x-error-message")
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        let endpoint = self.endpoint.clone();
        let token_sent = self.token.is_some();
        match (status, code.as_str()) {
            (_, "RepoNotFound") => Error::NotFound {
                what: format!("repository {}", ctx.repo),
                endpoint,
                status,
                hint: if token_sent {
                    "check the id; if the repository is private, your token has no access to it"
                } else {
                    "check the id; a private repository needs HF_TOKEN (or a token in $HF_HOME/token)"
                },
            },
            (_, "RevisionNotFound") => Error::NotFound {
                what: format!("revision {:?} of {}", ctx.revision, ctx.repo),
                endpoint,
                status,
                hint: "check --revision (a branch, a tag or a full commit sha)",
            },
            (401 | 403, _) | (_, "GatedRepo") => Error::Unauthorized {
                repo: ctx.repo.to_string(),
                status,
                detail,
                hint: if token_sent {
                    "The token was refused: check that it is valid and that your account was \
                     granted access on the repository's page"
                } else {
                    "Accept its terms on the repository's page, then set HF_TOKEN to a read \
                     token (or run `huggingface-cli login`)"
                },
            },
            (404, _) => match ctx.file {
                Some(file) => Error::NotFound {
                    what: format!("{file} in {}@{}", ctx.repo, ctx.revision),
                    endpoint,
                    status,
                    hint: "the file is listed but not served; try again later",
                },
                None => Error::NotFound {
                    what: format!("repository {} at revision {:?}", ctx.repo, ctx.revision),
                    endpoint,
                    status,
                    hint: "check the repository id and --revision",
                },
            },
            _ => Error::Http {
                url: url.to_string(),
                status,
                detail,
            },
        }
    }
}

/// `bytes START-END/TOTAL` -> `START`.
fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (start, _) = rest.split_once('-')?;
    start.trim().parse().ok()
}

fn parse_url(text: &str) -> Result<Url> {
    let url = Url::parse(text).map_err(|e| Error::Url {
        url: text.to_string(),
        message: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Url {
            url: text.to_string(),
            message: "HF_ENDPOINT must be an http:// or https:// URL".into(),
        });
    }
    Ok(url)
}

pub(crate) fn transport(url: &Url, err: &std::io::Error) -> Error {
    Error::Transport {
        url: url.to_string(),
        message: err.to_string(),
    }
}

fn protocol(url: &Url, message: &str) -> Error {
    Error::Protocol {
        url: url.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("items 1-2/3"), None);
    }

    #[test]
    fn origins_include_the_port() {
        let a = Url::parse("http://127.0.0.1:8000/x").unwrap();
        let b = Url::parse("http://127.0.0.1:8001/x").unwrap();
        let c = Url::parse("http://localhost:8000/x").unwrap();
        assert_ne!(a.origin(), b.origin());
        assert_ne!(a.origin(), c.origin());
        assert_eq!(a.origin(), a.join("/y?z").unwrap().origin());
    }
}
