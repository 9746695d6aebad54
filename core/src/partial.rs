//! Names of partial outputs: files and directories written under a temporary name in their
//! destination directory and renamed into place only when complete.
//!
//! Every such name starts with [`PREFIX`] followed by the writing process's id
//! (`.ava-partial-<pid>-...`), so a process interrupted by a signal can remove its own, and the
//! next run writing to the same directory can remove those of a run that was killed outright
//! (its process no longer exists).

/// The start of every partial output's name.
pub const PREFIX: &str = ".ava-partial-";

/// The prefix of this process's partial outputs: `.ava-partial-<pid>-`.
pub fn temp_prefix() -> String {
    format!("{PREFIX}{}-", std::process::id())
}

/// The id of the process that wrote a partial output named `name`; `None` for other names.
pub fn writer_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_writer() {
        let name = format!("{}model.tar", temp_prefix());
        assert_eq!(writer_pid(&name), Some(std::process::id()));
        assert_eq!(writer_pid(".ava-partial-12-x"), Some(12));
        assert_eq!(writer_pid(".ava-partial-x-12"), None);
        assert_eq!(writer_pid("model.tar"), None);
    }
}
