//! What a command prints: human messages on stderr, the machine-readable result on stdout with
//! `--json`, and progress bars on a terminal only.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::args::GlobalArgs;
use crate::Tool;

/// Settings of one invocation: output, and the global options every verb may need.
#[derive(Clone, Debug)]
pub struct Ui {
    /// Which binary is running.
    pub tool: Tool,
    /// Emit JSON on stdout.
    pub json: bool,
    /// The global `--cache-dir` (the stage cache's root).
    pub cache_dir: Option<std::path::PathBuf>,
    /// The global `--hub-cache`.
    pub hub_cache: Option<std::path::PathBuf>,
    quiet: bool,
    verbose: u8,
}

impl Ui {
    /// Output settings from the global flags.
    pub fn new(tool: Tool, global: &GlobalArgs) -> Self {
        Ui {
            tool,
            json: global.json,
            cache_dir: global.cache_dir.clone(),
            hub_cache: global.hub_cache.clone(),
            quiet: global.quiet,
            verbose: global.verbose,
        }
    }

    /// The stage cache of `pipeline` (`alc`, `aon`): under `--cache-dir`, else
    /// [`ava_packaging::cache::root_from_env`]; a private directory is made in a stage folder
    /// only after the leftovers of killed runs there are removed.
    pub fn stage_cache(&self, pipeline: &str) -> ava_packaging::cache::StageCache {
        let root = (self.cache_dir.clone()).unwrap_or_else(ava_packaging::cache::root_from_env);
        ava_packaging::cache::StageCache::new(&root, pipeline).with_prepare(|dir| {
            crate::output::clean_stale(dir);
            crate::output::watch(dir);
        })
    }

    /// A status line on stderr (suppressed by `--quiet`).
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// A detail line on stderr, shown with `-v`.
    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbose > 0 && !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// The command's result: `value` as JSON with `--json`, else the human text on stdout.
    pub fn result<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut out, value)?;
            writeln!(out)?;
        } else {
            write!(out, "{}", human())?;
        }
        out.flush()?;
        Ok(())
    }

    /// Whether progress displays are shown: stderr is a terminal and output is neither quiet
    /// nor JSON.
    pub fn shows_progress(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }

    /// A byte-count progress bar on stderr, hidden unless stderr is a terminal and output is
    /// neither quiet nor JSON.
    pub fn bytes_progress(&self, total: u64, what: &str) -> ProgressBar {
        if self.quiet || self.json || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar
    }
}

impl Ui {
    /// An item-count progress bar on stderr (length set by whoever advances it), hidden as
    /// [`Ui::bytes_progress`].
    pub fn count_progress(&self, what: &str) -> ProgressBar {
        if !self.shows_progress() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(0);
        let style =
            ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar
    }
}

/// A counting bar ([`Ui::count_progress`]) as the encoder conversion's progress sink.
pub struct CountBar<'a>(pub &'a ProgressBar);

impl ava_malbert::Progress for CountBar<'_> {
    fn set_total(&self, count: u64) {
        self.0.set_length(count);
    }

    fn advance(&self, count: u64) {
        self.0.inc(count);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// `1234567` -> `1.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `text` with control characters (terminal escape sequences among them) shown as escapes:
/// for names and strings that come from archives, configs or the network.
pub fn escape(text: &str) -> String {
    escape_keeping(text, &[])
}

/// [`escape`], leaving the characters of `keep` (e.g. newlines of a multi-line message) as
/// they are.
pub fn escape_keeping(text: &str, keep: &[char]) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && !keep.contains(&c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod escape_tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\x1b[31mred"), "a\\u{1b}[31mred");
        assert_eq!(escape("x\ny"), "x\\ny");
        assert_eq!(escape_keeping("x\ny\u{7}", &['\n']), "x\ny\\u{7}");
    }
}
