//! `completions SHELL` and `man`: shell completion scripts (clap_complete) and roff manual
//! pages (clap_mangen), generated from the same clap definitions as `--help`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::{Args, ValueEnum};

/// A shell to complete for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    /// bash (source it, or put it in /usr/share/bash-completion/completions/).
    Bash,
    /// zsh (a `_alc` file on `$fpath`).
    Zsh,
    /// fish (put it in ~/.config/fish/completions/).
    Fish,
    /// elvish.
    Elvish,
    /// PowerShell.
    Powershell,
}

impl From<Shell> for clap_complete::Shell {
    fn from(s: Shell) -> Self {
        match s {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
            Shell::Elvish => clap_complete::Shell::Elvish,
            Shell::Powershell => clap_complete::Shell::PowerShell,
        }
    }
}

/// `completions SHELL`.
#[derive(Args, Clone, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `man [--out-dir DIR]`.
#[derive(Args, Clone, Debug)]
pub struct ManArgs {
    /// Write one page per command (`alc.1`, `alc-run.1`, ...) into DIR instead of printing the
    /// main page.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<std::path::PathBuf>,
}

/// Prints the completion script of `cmd` for `shell` on stdout.
pub fn completions(mut cmd: clap::Command, args: &CompletionsArgs) -> anyhow::Result<()> {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(args.shell),
        &mut cmd,
        name,
        &mut out,
    );
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}

/// Prints the manual page of `cmd`, or writes the pages of it and every subcommand.
pub fn man(cmd: clap::Command, args: &ManArgs) -> anyhow::Result<()> {
    let Some(dir) = &args.out_dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&out)?;
        stdout.flush()?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_pages(cmd, dir)
}

fn write_pages(mut cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    // Building names each subcommand `alc-run`, as git names its pages.
    cmd.build();
    let subs = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .cloned();
    for page in std::iter::once(cmd.clone()).chain(subs) {
        let name = page
            .get_display_name()
            .unwrap_or_else(|| page.get_name())
            .to_string();
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        crate::output::write_file(&dir.join(format!("{name}.1")), &out)?;
    }
    Ok(())
}
