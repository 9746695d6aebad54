//! `keygen` and `sign PKG`: ed25519 keys and signed archives (docs/security.md).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::args::{KeygenArgs, SignArgs};
use crate::trust;
use crate::ui::Ui;

#[derive(Serialize)]
struct KeygenReport<'a> {
    secret_key: &'a Path,
    public_key: &'a Path,
    key_id: String,
}

#[derive(Serialize)]
struct SignReport<'a> {
    path: &'a Path,
    key_id: String,
    format_version: u32,
}

/// Runs `keygen`: a new key pair at `-o KEY` (+ `KEY.pub`), or the user's own key.
pub fn keygen(args: &KeygenArgs, ui: &Ui) -> anyhow::Result<()> {
    let (secret, public) = match &args.output {
        Some(path) => (path.clone(), pub_path(path)),
        None => {
            let dir = trust::config_dir()?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            (
                dir.join(trust::USER_KEY_FILE),
                dir.join(trust::USER_PUB_FILE),
            )
        }
    };
    let key = trust::generate_key()?;
    trust::write_key_pair(&key, &secret, &public, args.force)?;
    let report = KeygenReport {
        secret_key: &secret,
        public_key: &public,
        key_id: key.public().key_id(),
    };
    ui.result(&report, || {
        format!(
            "key {}\n  secret  {} (keep it private)\n  public  {} (give it to whoever should trust your archives)\n",
            report.key_id,
            secret.display(),
            public.display()
        )
    })
}

/// `KEY.pub` beside `KEY`.
fn pub_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Runs `sign PKG`: verifies the archive and replaces it with a signed copy.
pub fn sign(args: &SignArgs, ui: &Ui) -> anyhow::Result<()> {
    let path = &args.package;
    if !path.is_file() {
        anyhow::bail!(
            "{}: not an archive file (sign the archive before unpacking it)",
            path.display()
        );
    }
    let key = trust::signing_key(args.key.as_deref(), &|m| ui.info(m))?;
    let manifest = ava_packaging::sign_archive(path, &key)
        .with_context(|| format!("signing {}", path.display()))?;
    let report = SignReport {
        path,
        key_id: key.public().key_id(),
        format_version: manifest.format_version,
    };
    ui.result(&report, || {
        format!("signed {} with key {}\n", path.display(), report.key_id)
    })
}
