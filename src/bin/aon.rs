//! `aon`: the encoder pipeline (ALBERT -> mALBERT intent classifier -> ONNX INT8 -> archive).

use std::process::ExitCode;

use ava::args::{CommonCommand, GlobalArgs};
use ava::ui::Ui;
use ava::{commands, finish, Tool, LONG_VERSION};
use clap::{Parser, Subcommand};

/// Turn ALBERT checkpoints into INT8 intent classifiers packed as versioned archives.
#[derive(Parser, Debug)]
#[command(name = "aon", version = LONG_VERSION, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Common(CommonCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::new(Tool::Aon, &cli.global);
    let result = match &cli.command {
        Command::Common(cmd) => commands::run_common(cmd, &ui),
    };
    finish(&ui, result)
}
