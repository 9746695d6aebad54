//! `inspect PKG`: show an archive's manifest without reading its payload, with the runtime
//! memory estimate `alc compile` recorded in it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use ava_packaging::{read_dir_signed, read_signed_manifest, reader::is_zstd, Manifest};
use ava_targets::memory::MemoryRecord;
use serde::Serialize;

use crate::args::InspectArgs;
use crate::commands::memory;
use crate::ui::{escape, human_bytes, Ui};

#[derive(Serialize)]
struct InspectReport<'a> {
    path: &'a Path,
    compressed: bool,
    archive_size: u64,
    total_size: u64,
    /// The signing key's id (its signature checked out), `null` when unsigned.
    signed_by: Option<String>,
    manifest: &'a Manifest,
}

/// Runs `inspect`.
pub fn run(args: &InspectArgs, ui: &Ui) -> anyhow::Result<()> {
    let path = &args.package;
    let (verified, compressed) = if path.is_dir() {
        (read_dir_signed(path)?, false)
    } else {
        (read_signed_manifest(path)?, is_zstd(path)?)
    };
    let manifest = verified.manifest;
    let signed_by = verified.signer.map(|s| s.key_id());
    let archive_size = std::fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .len();
    let report = InspectReport {
        path,
        compressed,
        archive_size,
        total_size: manifest.total_size(),
        signed_by: signed_by.clone(),
        manifest: &manifest,
    };
    ui.result(&report, || {
        describe(&manifest, compressed, signed_by.as_deref())
    })
}

/// The human-readable summary of a manifest.
fn describe(m: &Manifest, compressed: bool, signed_by: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {} (format v{}{})",
        escape(&m.name),
        escape(&m.version),
        m.format_version,
        if compressed { ", zstd" } else { "" }
    );
    let _ = writeln!(s, "  family        {}", escape(&m.family));
    let _ = writeln!(s, "  quantization  {}", escape(&m.quantization));
    let _ = writeln!(s, "  target        {}", m.target);
    let _ = writeln!(
        s,
        "  signed by     {}",
        signed_by.map_or("unsigned".to_string(), |id| format!("key {id}"))
    );
    let _ = writeln!(
        s,
        "  created by    {} {} (git {})",
        escape(&m.created_by.tool),
        escape(&m.created_by.version),
        escape(&m.created_by.git_commit)
    );
    let rev = escape(m.source.revision.as_deref().unwrap_or("-"));
    let _ = writeln!(
        s,
        "  source        {} @ {} ({} input files)",
        escape(&m.source.repository),
        rev,
        m.source.files.len()
    );
    if !m.stages.is_empty() {
        let names: Vec<String> = m.stages.keys().map(|k| escape(k)).collect();
        let _ = writeln!(s, "  stages        {}", names.join(", "));
    }
    if let Some(memory) = MemoryRecord::from_manifest(m) {
        let _ = writeln!(s, "  memory        {}", memory::describe(&memory));
    }
    let _ = writeln!(
        s,
        "  files         {} ({})",
        m.files.len(),
        human_bytes(m.total_size())
    );
    for f in &m.files {
        let _ = writeln!(
            s,
            "    {:<10} {:>10}  {}  {}",
            f.role.to_string(),
            human_bytes(f.size),
            &f.sha256[..12],
            f.path
        );
    }
    s
}
