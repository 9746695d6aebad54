//! `alc`: the LLM pipeline (Gemma 3 -> Q4BF16 -> TVM kernels -> archive).

use std::process::ExitCode;

use ava::args::{CommonCommand, GlobalArgs};
use ava::ui::Ui;
use ava::{commands, finish, Tool, LONG_VERSION};
use clap::{Parser, Subcommand};

/// Compile Gemma 3 checkpoints into versioned archives for on-device inference.
#[derive(Parser, Debug)]
#[command(name = "alc", version = LONG_VERSION, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Archive(CommonCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(Tool::Alc, &cli.global);
    let result = match &cli.command {
        Command::Archive(cmd) => commands::run_common(cmd, &ui),
    };
    finish(&ui, result)
}
