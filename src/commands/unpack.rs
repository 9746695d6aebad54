//! `unpack PKG -o DIR`: verify and extract into a new directory, atomically.

use std::path::Path;

use ava_packaging::unpack;
use serde::Serialize;

use crate::args::UnpackArgs;
use crate::ui::Ui;

#[derive(Serialize)]
struct UnpackReport<'a> {
    path: &'a Path,
    output: &'a Path,
    entries: usize,
}

/// Runs `unpack`.
pub fn run(args: &UnpackArgs, ui: &Ui) -> anyhow::Result<()> {
    crate::output::prepare(&args.output);
    let manifest = unpack(&args.package, &args.output)?;
    let report = UnpackReport {
        path: &args.package,
        output: &args.output,
        entries: manifest.files.len(),
    };
    ui.result(&report, || {
        format!(
            "{} ({} entries)\n",
            args.output.display(),
            manifest.files.len()
        )
    })
}
