//! `alc`: the LLM pipeline (Gemma 3 -> Q4BF16 -> TVM kernels -> archive).

use std::process::ExitCode;

use ava::args::{
    CommonCommand, ConvertArgs, GlobalArgs, PerplexityArgs, QuantizeArgs, RunArgs, ThreadsArgs,
};
use ava::ui::Ui;
use ava::{commands, finish, Tool, LONG_VERSION};
use clap::{CommandFactory, Parser, Subcommand};

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
    /// Chat with a model: one user turn a line on stdin, replies streamed (Ctrl-C stops one).
    Chat(ava::args::run::ChatArgs),
    /// Time prefill and decoding (tokens/s, mean ± sd over repetitions), like llama-bench.
    Bench(ava::args::bench::BenchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(ava::commands::completions::CompletionsArgs),
    /// Print the manual page, or write one page per command into a directory.
    Man(ava::commands::completions::ManArgs),
    /// Run an archive on a device (host, qemu, adb), compare with the host, report for CI.
    Validate(ava::args::validate::ValidateArgs),
}

impl Command {
    /// `--threads` of the commands that compute.
    fn threads(&self) -> ThreadsArgs {
        match self {
            Command::Run(a) => a.threads,
            Command::Quantize(a) => a.threads,
            Command::Perplexity(a) => a.threads,
            Command::Compile(a) => a.threads,
            Command::Bench(a) => a.threads,
            Command::Chat(a) => a.threads,
            _ => ThreadsArgs::default(),
        }
    }
}

fn main() -> ExitCode {
    ava::output::install_signal_handlers();
    let cli = Cli::parse();
    let ui = Ui::new(Tool::Alc, &cli.global);
    if let Err(e) = cli.command.threads().apply() {
        return finish(&ui, Err(e));
    }
    let result = match &cli.command {
        Command::Common(cmd) => commands::run_common(cmd, &ui),
        Command::Completions(args) => commands::completions::completions(Cli::command(), args),
        Command::Man(args) => commands::completions::man(Cli::command(), args),
        Command::Convert(args) => commands::convert::run(args, &ui),
        Command::Run(args) => commands::run::run(args, &ui),
        Command::Quantize(args) => commands::quantize::run(args, &ui),
        Command::Perplexity(args) => commands::perplexity::run(args, &ui),
        Command::Build(args) => commands::build::run(args, &ui),
        Command::Compile(args) => commands::compile::run(args, &ui),
        Command::Bench(args) => commands::bench::run(args, &ui),
        Command::Chat(args) => commands::chat::run(args, &ui),
        Command::Validate(args) => {
            let code = commands::validate::run(args, &ui);
            ava::output::hold_if_terminating();
            return code;
        }
    };
    finish(&ui, result)
}
