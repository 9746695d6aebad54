//! One module per verb, each with a single `run`.

pub mod aon_bench;
pub mod aon_convert;
pub mod archive_identity;
pub mod bench;
pub mod build;
pub mod chat;
pub mod compile;
pub mod completions;
pub mod convert;
pub mod download;
pub mod export;
pub mod inspect;
pub mod memory;
pub mod optimize;
pub mod package;
pub mod perplexity;
pub mod quantize;
pub mod run;
pub mod sign;
pub mod unpack;
pub mod verify;

use crate::args::CommonCommand;
use crate::ui::Ui;

/// Runs one of the archive verbs shared by both binaries.
pub fn run_common(command: &CommonCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        CommonCommand::Download(args) => download::run(args, ui),
        CommonCommand::Package(args) => package::run(args, ui),
        CommonCommand::Inspect(args) => inspect::run(args, ui),
        CommonCommand::Verify(args) => verify::run(args, ui),
        CommonCommand::Unpack(args) => unpack::run(args, ui),
        CommonCommand::Keygen(args) => sign::keygen(args, ui),
        CommonCommand::Sign(args) => sign::sign(args, ui),
    }
}
pub mod aon_classify;
pub mod aon_compile;
pub mod aon_quantize;
pub mod validate;
