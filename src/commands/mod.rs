//! One module per verb, each with a single `run`.

pub mod inspect;
pub mod package;
pub mod unpack;
pub mod verify;

use crate::args::ArchiveCommand;
use crate::ui::Ui;

/// Runs one of the archive verbs shared by both binaries.
pub fn run_archive(command: &ArchiveCommand, ui: &Ui) -> anyhow::Result<()> {
    match command {
        ArchiveCommand::Package(args) => package::run(args, ui),
        ArchiveCommand::Inspect(args) => inspect::run(args, ui),
        ArchiveCommand::Verify(args) => verify::run(args, ui),
        ArchiveCommand::Unpack(args) => unpack::run(args, ui),
    }
}
