//! One file's bytes: downloaded into an `.incomplete` file that survives interruptions, resumed
//! with a `Range` request, retried with backoff, and verified before the caller moves it into
//! place.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use url::Url;

use super::error::{io_err, Error, Result};
use super::http::{transport, Client, Ctx};
use super::progress::Progress;
use super::verify::{check_file, Digests, Expected};

/// Failed attempts in a row, with no byte gained, before giving up on a file.
pub const MAX_RETRIES: u32 = 5;
/// Requests for one file in all, however much each gained.
pub const MAX_ATTEMPTS: u32 = 100;
/// First wait before a retry; it doubles with each failure in a row.
const RETRY_BASE: Duration = Duration::from_millis(250);
/// Longest wait between two retries.
const RETRY_MAX: Duration = Duration::from_secs(4);
/// Copy buffer.
const COPY_BUF: usize = 1 << 16;

/// Where one file comes from and goes to.
pub(crate) struct Transfer<'a> {
    pub ctx: Ctx<'a>,
    /// Where the bytes are (after the `HEAD`'s redirect, if any).
    pub url: &'a Url,
    /// The `.incomplete` file; what is in it already is kept and continued.
    pub incomplete: &'a Path,
    pub expected: &'a Expected,
}

/// Downloads `t` into its `.incomplete` file and verifies it. On success the file holds exactly
/// the expected bytes; a verification failure, or a server sending more than the declared
/// size, deletes it. The file never holds more than the declared size, and the whole transfer
/// (every attempt) ends at the client's per-file deadline.
pub(crate) fn fetch(client: &Client, t: &Transfer<'_>, progress: &dyn Progress) -> Result<Digests> {
    if let Some(parent) = t.incomplete.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    if let Some(size) = t.expected.size {
        progress.add_total(size.saturating_sub(file_len(t.incomplete)?));
    }
    let deadline = Instant::now() + client.file_deadline;
    let mut failures = 0;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let before = file_len(t.incomplete)?;
        check_deadline(client, t, deadline)?;
        match attempt(client, t, progress, deadline) {
            Ok(()) => break,
            Err(err @ Error::Oversized { .. }) => {
                let _ = std::fs::remove_file(t.incomplete);
                return Err(err);
            }
            Err(err) if err.is_transient() => {
                let gained = file_len(t.incomplete)? > before;
                failures = if gained { 0 } else { failures + 1 };
                if failures >= MAX_RETRIES || attempts >= MAX_ATTEMPTS {
                    return Err(Error::RetriesExhausted {
                        file: t.expected.file.clone(),
                        attempts,
                        last: Box::new(err),
                    });
                }
                let wait = backoff(failures);
                if Instant::now() + wait > deadline {
                    return Err(deadline_error(client, t));
                }
                std::thread::sleep(wait);
            }
            Err(err) => return Err(err),
        }
    }
    check_file(t.incomplete, t.expected)
}

fn check_deadline(client: &Client, t: &Transfer<'_>, deadline: Instant) -> Result<()> {
    if Instant::now() > deadline {
        return Err(deadline_error(client, t));
    }
    Ok(())
}

fn deadline_error(client: &Client, t: &Transfer<'_>) -> Error {
    Error::Deadline {
        file: t.expected.file.clone(),
        seconds: client.file_deadline.as_secs(),
    }
}

/// Runs `request` until it succeeds, fails for good, or has failed transiently [`MAX_RETRIES`]
/// times, waiting with backoff in between (the revision API and `HEAD`s; bodies use [`fetch`]).
pub(crate) fn with_retries<T>(what: &str, mut request: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match request() {
            Err(err) if err.is_transient() => {
                if attempts >= MAX_RETRIES {
                    return Err(Error::RetriesExhausted {
                        file: what.to_string(),
                        attempts,
                        last: Box::new(err),
                    });
                }
                std::thread::sleep(backoff(attempts - 1));
            }
            other => return other,
        }
    }
}

/// One request: continue the `.incomplete` file from its current length.
fn attempt(
    client: &Client,
    t: &Transfer<'_>,
    progress: &dyn Progress,
    deadline: Instant,
) -> Result<()> {
    let path = t.incomplete;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    let mut have = file.metadata().map_err(io_err(path))?.len();
    if let Some(size) = t.expected.size {
        if have == size {
            return Ok(());
        }
        if have > size {
            restart(&file, path, have, progress)?;
            have = 0;
        }
    }
    let body = match client.get_from(t.ctx, t.url, have) {
        // The partial file is not a prefix of anything the server has: start over.
        Err(Error::Http { status: 416, .. }) if have > 0 => {
            restart(&file, path, have, progress)?;
            have = 0;
            client.get_from(t.ctx, t.url, 0)?
        }
        other => other?,
    };
    if body.status == 200 && have > 0 {
        // The server ignored `Range` and sends the whole file.
        restart(&file, path, have, progress)?;
        have = 0;
    } else if body.status == 206 && body.start != Some(have) {
        return Err(Error::Protocol {
            url: t.url.to_string(),
            message: format!(
                "asked for bytes from {have}, got a range from {:?}",
                body.start
            ),
        });
    }
    let limits = Limits {
        room: t.expected.size.map(|s| s.saturating_sub(have)),
        deadline,
        deadline_secs: client.file_deadline.as_secs(),
    };
    let written = copy(body.reader, &mut file, t, progress, &limits)?;
    file.sync_all().map_err(io_err(path))?;
    match t.expected.size {
        Some(size) if have + written < size => Err(Error::Truncated {
            file: t.expected.file.clone(),
            got: have + written,
            expected: size,
        }),
        _ => Ok(()),
    }
}

/// What one body may add to the file.
struct Limits {
    /// Bytes left before the declared size (`None`: no size was declared, `--no-verify`).
    room: Option<u64>,
    /// When the file's time is up.
    deadline: Instant,
    deadline_secs: u64,
}

/// Appends the body to `file`; every byte received is written before an error is returned, so
/// the next attempt continues from there. A byte beyond the declared size is never written:
/// it ends the transfer ([`Error::Oversized`]).
fn copy(
    mut reader: Box<dyn Read + Send + Sync>,
    file: &mut File,
    t: &Transfer<'_>,
    progress: &dyn Progress,
    limits: &Limits,
) -> Result<u64> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut written = 0u64;
    loop {
        if Instant::now() > limits.deadline {
            file.flush().map_err(io_err(t.incomplete))?;
            return Err(Error::Deadline {
                file: t.expected.file.clone(),
                seconds: limits.deadline_secs,
            });
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.flush().map_err(io_err(t.incomplete))?;
                return Err(transport(t.url, &e));
            }
        };
        if let Some(room) = limits.room {
            if written + n as u64 > room {
                return Err(Error::Oversized {
                    file: t.expected.file.clone(),
                    expected: t.expected.size.unwrap_or_default(),
                });
            }
        }
        file.write_all(&buf[..n]).map_err(io_err(t.incomplete))?;
        written += n as u64;
        progress.advance(n as u64);
    }
}

/// Empties the `.incomplete` file (its bytes are counted again in the progress total).
fn restart(file: &File, path: &Path, had: u64, progress: &dyn Progress) -> Result<()> {
    file.set_len(0).map_err(io_err(path))?;
    progress.add_total(had);
    Ok(())
}

fn file_len(path: &Path) -> Result<u64> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// `RETRY_BASE * 2^failures`, at most `RETRY_MAX`.
fn backoff(failures: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(1u32 << failures.min(16))
        .min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), RETRY_BASE);
        assert_eq!(backoff(1), RETRY_BASE * 2);
        assert_eq!(backoff(30), RETRY_MAX);
    }
}
