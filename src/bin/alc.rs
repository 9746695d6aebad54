//! `alc`: the LLM pipeline (Gemma 3 -> Q4BF16 -> TVM kernels -> archive).

use std::process::ExitCode;

use ava::args::{CommonCommand, ConvertArgs, GlobalArgs, PerplexityArgs, QuantizeArgs, RunArgs};
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
    Common(CommonCommand),
    /// Convert a GGUF file into a Hugging Face-layout checkpoint (safetensors + config.json).
    Convert(ConvertArgs),
    /// Generate text with a Gemma 3 archive or checkpoint, streaming to stdout.
    Run(RunArgs),
    /// Quantize a Gemma 3 checkpoint (Q4BF16 / Q8BF16 / float), optionally calibrated (AWQ).
    Quantize(QuantizeArgs),
    /// Perplexity of a text under a model (the quality gate of quantization).
    Perplexity(PerplexityArgs),
    /// Generate, compile and link the model's TVM kernels for each target (lib/<target>/).
    Build(ava::args::build::BuildArgs),
    /// The whole pipeline: download -> convert -> quantize -> build -> package, cached by stage.
    Compile(ava::args::compile::CompileArgs),
    /// Run an archive on a device (host, qemu, adb), compare with the host, report for CI.
    Validate(ava::args::validate::ValidateArgs),
}

fn main() -> ExitCode {
    ava::output::install_signal_handlers();
    let cli = Cli::parse();
    let ui = Ui::new(Tool::Alc, &cli.global);
    let result = match &cli.command {
        Command::Common(cmd) => commands::run_common(cmd, &ui),
        Command::Convert(args) => commands::convert::run(args, &ui),
        Command::Run(args) => commands::run::run(args, &ui),
        Command::Quantize(args) => commands::quantize::run(args, &ui),
        Command::Perplexity(args) => commands::perplexity::run(args, &ui),
        Command::Build(args) => commands::build::run(args, &ui),
        Command::Compile(args) => commands::compile::run(args, &ui),
        Command::Validate(args) => {
            let code = commands::validate::run(args, &ui);
            ava::output::hold_if_terminating();
            return code;
        }
    };
    finish(&ui, result)
}
