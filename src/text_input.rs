//! Text given on the command line, from a file, or from stdin (`-`): prompts and utterances.

use std::io::Read;
use std::path::Path;

use anyhow::Context;

/// Most bytes a prompt or utterance read from stdin or a file may hold.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// The text a `--prompt`-like flag names: `-` reads stdin to its end, anything else is the
/// text itself.
pub fn inline_or_stdin(value: &str, flag: &str) -> anyhow::Result<String> {
    if value != "-" {
        return Ok(value.to_string());
    }
    read_limited(std::io::stdin().lock(), &format!("{flag} - (stdin)"))
}

/// The text of `path` (`-`: stdin), UTF-8, at most [`MAX_TEXT_BYTES`].
pub fn from_file(path: &Path, flag: &str) -> anyhow::Result<String> {
    if path == Path::new("-") {
        return read_limited(std::io::stdin().lock(), &format!("{flag} - (stdin)"));
    }
    let file = std::fs::File::open(path).with_context(|| format!("{flag} {}", path.display()))?;
    read_limited(file, &format!("{flag} {}", path.display()))
}

fn read_limited(reader: impl Read, what: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what}"))?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_TEXT_BYTES,
        "{what}: more than {} MiB of text",
        MAX_TEXT_BYTES >> 20
    );
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{what}: not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_text_is_kept() {
        assert_eq!(inline_or_stdin("hello", "--prompt").unwrap(), "hello");
    }

    #[test]
    fn oversized_and_non_utf8_input_is_refused() {
        let big = std::io::repeat(b'a').take(MAX_TEXT_BYTES + 10);
        let err = read_limited(big, "x").unwrap_err().to_string();
        assert!(err.contains("more than 64 MiB"), "{err}");
        let err = read_limited(&[0xff, 0xfe][..], "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not UTF-8"), "{err}");
        assert_eq!(read_limited(&b"ok\n"[..], "x").unwrap(), "ok\n");
    }
}
