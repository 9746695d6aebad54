//! `verify PKG`: read every entry and check it against the manifest, and the signature of a
//! signed archive.

use std::path::Path;

use ava_packaging::{verify_dir_signed, verify_signed};
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
    /// `signed` or `unsigned` (a bad signature fails the command).
    signature: &'static str,
    /// The signing key's id.
    signed_by: Option<String>,
    /// Whether the signing key is one the user trusts.
    trusted: bool,
}

/// Runs `verify`; any failure (a bad entry, a bad signature) names it and exits non-zero.
pub fn run(args: &VerifyArgs, ui: &Ui) -> anyhow::Result<()> {
    let path = &args.package;
    let verified = if path.is_dir() {
        verify_dir_signed(path)?
    } else {
        verify_signed(path)?
    };
    let manifest = &verified.manifest;
    let trusted_keys = crate::trust::trusted_keys(&args.trusted_keys)?;
    let trusted = verified
        .signer
        .is_some_and(|s| trusted_keys.contains(&s.key));
    let report = VerifyReport {
        ok: true,
        path,
        name: &manifest.name,
        version: &manifest.version,
        entries: manifest.files.len(),
        total_size: manifest.total_size(),
        signature: if verified.signer.is_some() {
            "signed"
        } else {
            "unsigned"
        },
        signed_by: verified.signer.map(|s| s.key_id()),
        trusted,
    };
    ui.result(&report, || {
        let signature = match &report.signed_by {
            Some(id) if trusted => format!("signed by {id} (trusted)"),
            Some(id) => format!("signed by {id} (not a trusted key)"),
            None => "unsigned".to_string(),
        };
        format!(
            "OK {}: {} {}, {} entries ({}) match the manifest; {signature}\n",
            path.display(),
            crate::ui::escape(&manifest.name),
            crate::ui::escape(&manifest.version),
            manifest.files.len(),
            human_bytes(manifest.total_size())
        )
    })
}
