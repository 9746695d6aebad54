//! `aon`: the encoder pipeline (ALBERT -> mALBERT intent classifier -> ONNX INT8 -> archive).

use std::process::ExitCode;

use ava::args::aon_int8::{ClassifyArgs, CompileArgs, EvalArgs, QuantizeOnnxArgs};
use ava::args::{AonConvertArgs, CommonCommand, ExportArgs, GlobalArgs, OptimizeArgs, ThreadsArgs};
use ava::ui::Ui;
use ava::{commands, finish, Tool, LONG_VERSION};
use clap::{CommandFactory, Parser, Subcommand};

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
    /// ALBERT checkpoint -> mALBERT intent classifier (pruned vocabulary, capped length, head).
    Convert(AonConvertArgs),
    /// Checkpoint -> ONNX opset 17 (shared layer stored once).
    Export(ExportArgs),
    /// Run graph passes over an ONNX file and report node counts.
    Optimize(OptimizeArgs),
    /// Static INT8 (QDQ) of an ONNX model, calibrated on utterances, with an accuracy gate.
    Quantize(QuantizeOnnxArgs),
    /// Convert, export, optimize, quantize, validate against float and package, in one go.
    Compile(CompileArgs),
    /// Classify one utterance: intent (or `oos`), score, top K, latency.
    Classify(ClassifyArgs),
    /// Accuracy, macro-F1, out-of-scope recall and latency on a labelled split.
    Eval(EvalArgs),
    /// Per-utterance latency (p50, p95) over a set of utterances.
    Bench(ava::args::bench::AonBenchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(ava::commands::completions::CompletionsArgs),
    /// Print the manual page, or write one page per command into a directory.
    Man(ava::commands::completions::ManArgs),
    /// Classify utterances on a device (host, qemu, adb) and compare with the host.
    Validate(ava::args::validate::AonValidateArgs),
}

impl Command {
    /// `--threads` of the commands that compute.
    fn threads(&self) -> ThreadsArgs {
        match self {
            Command::Convert(a) => a.threads,
            Command::Quantize(a) => a.threads,
            Command::Compile(a) => a.threads,
            Command::Classify(a) => a.threads,
            Command::Eval(a) => a.threads,
            Command::Bench(a) => a.threads,
            _ => ThreadsArgs::default(),
        }
    }
}

fn main() -> ExitCode {
    ava::output::install_signal_handlers();
    let cli = Cli::parse();
    let ui = Ui::new(Tool::Aon, &cli.global);
    if let Err(e) = cli.command.threads().apply() {
        return finish(&ui, Err(e));
    }
    let result = match &cli.command {
        Command::Common(cmd) => commands::run_common(cmd, &ui),
        Command::Completions(args) => commands::completions::completions(Cli::command(), args),
        Command::Man(args) => commands::completions::man(Cli::command(), args),
        Command::Convert(args) => commands::aon_convert::run(args, &ui),
        Command::Export(args) => commands::export::run(args, &ui),
        Command::Optimize(args) => commands::optimize::run(args, &ui),
        Command::Quantize(args) => commands::aon_quantize::run(args, &ui),
        Command::Compile(args) => commands::aon_compile::run(args, &ui),
        Command::Classify(args) => commands::aon_classify::run_classify(args, &ui),
        Command::Eval(args) => commands::aon_classify::run_eval(args, &ui),
        Command::Bench(args) => commands::aon_bench::run(args, &ui),
        Command::Validate(args) => {
            let code = commands::validate::run_aon(args, &ui);
            ava::output::hold_if_terminating();
            return code;
        }
    };
    finish(&ui, result)
}
