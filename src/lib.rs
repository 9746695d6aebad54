//! The `alc` and `aon` command-line tools: argument groups in [`args`], one module per verb in
//! [`commands`], and the shared terminal/JSON output in [`ui`].

pub mod args;
pub mod commands;
pub mod hub;
pub mod output;
pub mod partial_dir;
pub mod text_input;
pub mod trust;
pub mod ui;

/// The tool's version as `--version` prints it: `0.1.0 (git abc123def456)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("AVA_GIT_COMMIT"),
    ")"
);
/// The git commit the tool was built from.
pub const GIT_COMMIT: &str = env!("AVA_GIT_COMMIT");

/// What a stage cache key says about the tool (a new build never reuses an older one's stages).
pub const TOOL_ID: [&str; 2] = [env!("CARGO_PKG_VERSION"), GIT_COMMIT];

/// The `created_by` record of archives `tool` writes.
pub fn created_by(tool: Tool) -> ava_packaging::CreatedBy {
    ava_packaging::CreatedBy {
        tool: tool.name().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: GIT_COMMIT.to_string(),
    }
}

/// Which of the two binaries is running (recorded in `created_by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// The LLM pipeline.
    Alc,
    /// The encoder pipeline.
    Aon,
}

impl Tool {
    /// The binary's name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Alc => "alc",
            Tool::Aon => "aon",
        }
    }
}

/// Exit code for a failed command (usage errors exit 2, through clap).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for a usage error.
pub const EXIT_USAGE: i32 = 2;

/// A usage error found after the arguments were parsed (a value out of the model's range):
/// exits 2 like clap's.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error and its causes on one line, each said once: a cause that its parent's message
/// already ends with (error types that print their source) is left out, and a cause starting
/// with the path its parent ends with (`reading F` then `F: not found`) loses the repeated path.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let mut text = cause.to_string();
        if let Some(prev) = parts.last() {
            if prev.ends_with(&text) || text.is_empty() {
                continue;
            }
            if let Some(word) = prev.rsplit(' ').next().filter(|w| !w.is_empty()) {
                if let Some(rest) = text.strip_prefix(word).and_then(|r| r.strip_prefix(": ")) {
                    text = rest.to_string();
                }
            }
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// Turns a command's result into the process exit code, printing the error chain on stderr
/// (and, with `--json`, an error object on stdout). A closed stdout pipe is not an error.
pub fn finish(ui: &ui::Ui, result: anyhow::Result<()>) -> std::process::ExitCode {
    output::hold_if_terminating();
    let Err(err) = result else {
        return std::process::ExitCode::SUCCESS;
    };
    // serde_json's error hides the io::Error it wraps from the chain: ask it for the kind.
    let broken_pipe = err.chain().any(|e| {
        let kind = e
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| e.downcast_ref::<serde_json::Error>()?.io_error_kind());
        kind == Some(std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return std::process::ExitCode::SUCCESS;
    }
    let message = error_line(&err);
    // Messages may quote archive entries, configs or server replies: no terminal escapes.
    let text = ui::escape_keeping(&message, &['\n', '\t']);
    eprintln!("{}: error: {text}", ui.tool.name());
    if ui.json {
        let entry = err
            .chain()
            .find_map(|e| e.downcast_ref::<ava_packaging::Error>())
            .and_then(|e| e.entry());
        let value = serde_json::json!({ "ok": false, "error": message, "entry": entry });
        // Not println!: it panics when stdout is a closed pipe (`| head`).
        let _ = std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{value}\n"));
    }
    let usage = err.chain().any(|e| e.is::<UsageError>());
    std::process::ExitCode::from(if usage { EXIT_USAGE } else { EXIT_FAILURE } as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_say_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let io_text = io.to_string();
        // An error type that prints its source, under a context naming the same path.
        #[derive(Debug)]
        struct WithSource(std::io::Error);
        impl std::fmt::Display for WithSource {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "/m/config.json: {}", self.0)
            }
        }
        impl std::error::Error for WithSource {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(WithSource(io)).context("reading /m/config.json");
        assert_eq!(
            error_line(&err),
            format!("reading /m/config.json: {io_text}")
        );
        let plain = anyhow::anyhow!("no space").context("writing out.tar");
        assert_eq!(error_line(&plain), "writing out.tar: no space");
    }
}
