//! Where the hub is and where its cache lives, from flags and the `huggingface_hub` environment
//! variables (`HF_ENDPOINT`, `HF_TOKEN`, `HF_TOKEN_PATH`, `HF_HOME`, `HF_HUB_CACHE`,
//! `HF_HUB_OFFLINE`).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The public hub, used when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Files downloaded at the same time.
pub const DEFAULT_PARALLEL: usize = 4;
/// Default longest wait for the next bytes of a download (`AVA_HUB_STALL_TIMEOUT`, seconds).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest time for one file, every attempt together (`AVA_HUB_FILE_DEADLINE`,
/// seconds): a 10 GB file at 1 MB/s fits.
pub const DEFAULT_FILE_DEADLINE: Duration = Duration::from_secs(4 * 3600);
/// Variable overriding [`DEFAULT_STALL_TIMEOUT`].
pub const STALL_TIMEOUT_ENV: &str = "AVA_HUB_STALL_TIMEOUT";
/// Variable overriding [`DEFAULT_FILE_DEADLINE`].
pub const FILE_DEADLINE_ENV: &str = "AVA_HUB_FILE_DEADLINE";

/// Settings of the hub client.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// Base URL of the hub, without a trailing `/`.
    pub endpoint: String,
    /// Bearer token, sent to the endpoint's own origin only.
    pub token: Option<String>,
    /// The hub cache (`.../huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Resolve from the cache alone, with no network access.
    pub offline: bool,
    /// Files downloaded at the same time.
    pub parallel: usize,
    /// Longest wait for the next bytes of a response before the attempt counts as stalled.
    pub stall_timeout: Duration,
    /// Longest time one file may take, every attempt and retry together.
    pub file_deadline: Duration,
    /// Accept files the hub gives no way to check (no sha256, nor a size and git blob sha1).
    pub no_verify: bool,
}

impl HubOptions {
    /// Options from the process environment; `cache_dir` (the `--hub-cache` flag) wins over
    /// `HF_HUB_CACHE`, then `HF_HOME/hub`, then `~/.cache/huggingface/hub`; `offline` (the
    /// `--offline` flag) or a true `HF_HUB_OFFLINE` turns network access off.
    pub fn from_env(cache_dir: Option<&Path>, offline: bool) -> Self {
        Self::from_vars(cache_dir, offline, &|name| {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        })
    }

    /// Options from flags and a variable lookup (the environment, or a map in tests).
    pub fn from_vars(
        cache_dir: Option<&Path>,
        offline: bool,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let hf_home = hf_home(var);
        let cache_dir = match (cache_dir, var("HF_HUB_CACHE")) {
            (Some(dir), _) => dir.to_path_buf(),
            (None, Some(dir)) => PathBuf::from(dir),
            (None, None) => hf_home.join("hub"),
        };
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        HubOptions {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: token(var, &hf_home),
            cache_dir,
            offline: offline || var("HF_HUB_OFFLINE").is_some_and(|v| is_true(&v)),
            parallel: DEFAULT_PARALLEL,
            stall_timeout: seconds(var(STALL_TIMEOUT_ENV)).unwrap_or(DEFAULT_STALL_TIMEOUT),
            file_deadline: seconds(var(FILE_DEADLINE_ENV)).unwrap_or(DEFAULT_FILE_DEADLINE),
            no_verify: false,
        }
    }
}

/// A positive number of seconds (fractions allowed); anything else is ignored.
fn seconds(value: Option<String>) -> Option<Duration> {
    let s: f64 = value?.trim().parse().ok()?;
    (s.is_finite() && s > 0.0 && s < 1e9).then(|| Duration::from_secs_f64(s))
}

/// `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
fn hf_home(var: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(home) = var("HF_HOME") {
        return PathBuf::from(home);
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return Path::new(&xdg).join("huggingface");
    }
    let home = var("HOME").unwrap_or_else(|| ".".to_string());
    Path::new(&home).join(".cache").join("huggingface")
}

/// `HF_TOKEN`, else the first line of `HF_TOKEN_PATH` or `HF_HOME/token` (what
/// `huggingface-cli login` writes).
fn token(var: &dyn Fn(&str) -> Option<String>, hf_home: &Path) -> Option<String> {
    if let Some(token) = var("HF_TOKEN") {
        return Some(token.trim().to_string());
    }
    let path = var("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_home.join("token"));
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.lines().next()?.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// `huggingface_hub`'s truthy values: `1`, `ON`, `YES`, `TRUE` in any case.
fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn opts(vars: &[(&str, &str)], flag: Option<&Path>) -> HubOptions {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubOptions::from_vars(flag, false, &|k| map.get(k).cloned())
    }

    #[test]
    fn cache_dir_precedence() {
        let all = [("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h"), ("HOME", "/u")];
        assert_eq!(opts(&all, Some(Path::new("/f"))).cache_dir, Path::new("/f"));
        assert_eq!(opts(&all, None).cache_dir, Path::new("/c"));
        assert_eq!(opts(&all[1..], None).cache_dir, Path::new("/h/hub"));
        assert_eq!(
            opts(&all[2..], None).cache_dir,
            Path::new("/u/.cache/huggingface/hub")
        );
    }

    #[test]
    fn endpoint_token_offline() {
        let o = opts(
            &[
                ("HF_ENDPOINT", "http://127.0.0.1:9/"),
                ("HF_TOKEN", " t \n"),
                ("HF_HUB_OFFLINE", "yes"),
            ],
            None,
        );
        assert_eq!(o.endpoint, "http://127.0.0.1:9");
        assert_eq!(o.token.as_deref(), Some("t"));
        assert!(o.offline);
        let o = opts(
            &[("HF_HUB_OFFLINE", "0"), ("HF_HOME", "/nonexistent")],
            None,
        );
        assert!(!o.offline);
        assert_eq!(o.stall_timeout, DEFAULT_STALL_TIMEOUT);
        assert_eq!(o.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(o.token, None);
    }

    #[test]
    fn timeouts_from_the_environment() {
        let o = opts(
            &[(STALL_TIMEOUT_ENV, "1.5"), (FILE_DEADLINE_ENV, "30")],
            None,
        );
        assert_eq!(o.stall_timeout, Duration::from_millis(1500));
        assert_eq!(o.file_deadline, Duration::from_secs(30));
        for bad in ["0", "-1", "nan", "x"] {
            let o = opts(&[(STALL_TIMEOUT_ENV, bad)], None);
            assert_eq!(o.stall_timeout, DEFAULT_STALL_TIMEOUT, "{bad}");
        }
    }
}
