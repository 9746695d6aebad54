//! `verify PKG`: read every entry and check it against the manifest.

use std::path::Path;

use ava_packaging::{verify, verify_dir};
use serde::Serialize;

use crate::args::VerifyArgs;
use crate::ui::{human_bytes, Ui};

#[derive(Serialize)]
struct VerifyReport<'a> {
    ok: bool,
    path: &'a Path,
    name: &'a str,
    version: &'a str,
    entries: usize,
    total_size: u64,
}

/// Runs `verify`; any failure names the bad entry and exits non-zero.
pub fn run(args: &VerifyArgs, ui: &Ui) -> anyhow::Result<()> {
    let path = &args.package;
    let manifest = if path.is_dir() {
        verify_dir(path)?
    } else {
        verify(path)?
    };
    let report = VerifyReport {
        ok: true,
        path,
        name: &manifest.name,
        version: &manifest.version,
        entries: manifest.files.len(),
        total_size: manifest.total_size(),
    };
    ui.result(&report, || {
        format!(
            "OK {}: {} {}, {} entries ({}) match the manifest\n",
            path.display(),
            manifest.name,
            manifest.version,
            manifest.files.len(),
            human_bytes(manifest.total_size())
        )
    })
}
