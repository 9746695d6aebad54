//! Signing keys and the trust store of the command-line tools (docs/security.md).
//!
//! The configuration directory is `$AVA_CONFIG_DIR`, else `$XDG_CONFIG_HOME/ava`, else
//! `~/.config/ava`. It holds the user's own key pair (`signing.key`, `signing.pub`, created on
//! first use by `package`/`compile`) and public keys the user trusts (`trusted/*.pub`). The
//! user's own public key is always trusted, so an archive compiled on this machine runs on its
//! TVM kernels here without further steps.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ava_packaging::{PublicKey, SecretKey};
use ava_runtime::KernelPolicy;

/// Environment variable naming the configuration directory.
pub const CONFIG_DIR_ENV: &str = "AVA_CONFIG_DIR";
/// The user's secret key in the configuration directory.
pub const USER_KEY_FILE: &str = "signing.key";
/// The user's public key in the configuration directory.
pub const USER_PUB_FILE: &str = "signing.pub";
/// Folder of trusted public keys (`*.pub`) in the configuration directory.
pub const TRUSTED_DIR: &str = "trusted";
/// Most trusted key files read from the trusted folder.
const MAX_TRUSTED_FILES: usize = 1000;
#[cfg(unix)]
const PRIVATE_DIR_MODE: u32 = 0o700;
#[cfg(unix)]
const PRIVATE_FILE_MODE: u32 = 0o600;

/// The configuration directory (not created).
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(CONFIG_DIR_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("ava"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("ava")),
        None => bail!("no configuration directory: set {CONFIG_DIR_ENV} (or HOME)"),
    }
}

/// A fresh random key.
pub fn generate_key() -> anyhow::Result<SecretKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    Ok(SecretKey::from_seed(&seed))
}

/// Writes `key` to `secret` (mode 0600) and its public half to `public`. Neither may exist,
/// unless `force`. Both are written under a temporary name and renamed into place.
pub fn write_key_pair(
    key: &SecretKey,
    secret: &Path,
    public: &Path,
    force: bool,
) -> anyhow::Result<()> {
    for path in [secret, public] {
        if !force && path.symlink_metadata().is_ok() {
            bail!(
                "{}: already exists (pass --force to replace it)",
                path.display()
            );
        }
    }
    write_private(secret, key.to_file_text().as_bytes(), force)?;
    write_private(public, key.public().to_file_text().as_bytes(), force)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(public, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("{}", public.display()))?;
    }
    Ok(())
}

/// Writes `bytes` to a new private (0600) file at `path`, atomically; with `replace` an existing
/// file is replaced, otherwise a file created meanwhile wins.
fn write_private(path: &Path, bytes: &[u8], replace: bool) -> anyhow::Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".ava-key-")
        .tempfile_in(&dir)
        .with_context(|| format!("{}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("{}", tmp.path().display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            tmp.path(),
            std::fs::Permissions::from_mode(PRIVATE_FILE_MODE),
        )?;
    }
    if replace {
        tmp.persist(path).map(drop).map_err(|e| e.error)
    } else {
        tmp.persist_noclobber(path).map(drop).map_err(|e| e.error)
    }
    .with_context(|| format!("{}", path.display()))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates the configuration directory, private to the user.
fn create_config_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR_MODE);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The user's own key, created (with a note on stderr) when there is none yet.
pub fn user_key(note: &dyn Fn(String)) -> anyhow::Result<SecretKey> {
    let dir = config_dir()?;
    let secret = dir.join(USER_KEY_FILE);
    if secret.exists() {
        return SecretKey::read(&secret).map_err(Into::into);
    }
    create_config_dir(&dir)?;
    let key = generate_key()?;
    match write_private(&secret, key.to_file_text().as_bytes(), false) {
        Ok(()) => {}
        // Another run created it first: use that one.
        Err(_) if secret.exists() => return SecretKey::read(&secret).map_err(Into::into),
        Err(e) => return Err(e),
    }
    let public = dir.join(USER_PUB_FILE);
    std::fs::write(&public, key.public().to_file_text())
        .with_context(|| format!("{}", public.display()))?;
    note(format!(
        "created your signing key {} at {} (archives you build are signed with it and trusted \
         by your own tools)",
        key.public().key_id(),
        secret.display()
    ));
    Ok(key)
}

/// The key archives are signed with: `--sign-key KEY`, else the user's own key.
pub fn signing_key(arg: Option<&Path>, note: &dyn Fn(String)) -> anyhow::Result<SecretKey> {
    match arg {
        Some(path) => SecretKey::read(path).map_err(Into::into),
        None => user_key(note),
    }
}

/// Every key the user trusts: `extra` (`--trusted-key`), the configuration directory's
/// `trusted/*.pub` and the user's own public key.
pub fn trusted_keys(extra: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for path in extra {
        keys.push(PublicKey::read(path)?);
    }
    let Ok(dir) = config_dir() else {
        return Ok(keys);
    };
    let own = dir.join(USER_PUB_FILE);
    if own.is_file() {
        keys.push(PublicKey::read(&own)?);
    } else if dir.join(USER_KEY_FILE).is_file() {
        keys.push(PublicKey::read(&dir.join(USER_KEY_FILE))?);
    }
    let trusted = dir.join(TRUSTED_DIR);
    if let Ok(entries) = std::fs::read_dir(&trusted) {
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            .take(MAX_TRUSTED_FILES)
            .collect();
        paths.sort();
        for path in paths {
            keys.push(PublicKey::read(&path)?);
        }
    }
    Ok(keys)
}

/// The kernel policy of a run: trusted keys, and whether unsigned kernels are allowed.
pub fn kernel_policy(trusted: &[PathBuf], allow_unsigned: bool) -> anyhow::Result<KernelPolicy> {
    Ok(KernelPolicy {
        trusted: trusted_keys(trusted)?,
        allow_unsigned,
    })
}
