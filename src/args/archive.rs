//! Arguments of the verbs shared by `alc` and `aon` (`download`, and the archive verbs
//! `package`, `inspect`, `verify`, `unpack`).

use std::path::PathBuf;

use ava_packaging::package::PackageOptions;
use ava_packaging::PackageTarget;
use clap::{Args, Subcommand};

use super::{DownloadArgs, HubArgs, KeygenArgs, SignArgs, SignKeyArgs};
use crate::ui::Ui;

/// Verbs both binaries share (one implementation), flattened into their command lists.
#[derive(Subcommand, Clone, Debug)]
pub enum CommonCommand {
    /// Download a model repository from the Hugging Face hub into the shared cache.
    Download(DownloadArgs),
    /// Pack a model directory into a versioned, checksummed archive.
    Package(PackageArgs),
    /// Show an archive's manifest: model, provenance and files.
    Inspect(InspectArgs),
    /// Check every entry of an archive against its manifest (exit 0 when intact).
    Verify(VerifyArgs),
    /// Verify an archive and extract it into a new directory.
    Unpack(UnpackArgs),
    /// Create an ed25519 key pair for signing archives.
    Keygen(KeygenArgs),
    /// Sign an archive (replacing it), so that tools trusting the key load its kernels.
    Sign(SignArgs),
}

/// `package DIR -o OUT`.
#[derive(Args, Clone, Debug)]
#[command(
    after_help = "OUT may be a file name or an existing directory, in which case the archive \
gets its conventional name: family and parameter count unless --name, e.g. \
gemma3-268m-q4bf16-android-arm64-v1.tar for Gemma 3 270M (268M parameters)."
)]
pub struct PackageArgs {
    /// A checkpoint directory (config.json, *.safetensors, tokenizer files), a stage output, or a
    /// hub repository id (`org/name[@REV]`, downloaded first).
    #[arg(value_name = "DIR|REPO_ID")]
    pub dir: PathBuf,
    /// Output archive file, or an existing directory to put it in.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Leave out files matching this glob (relative path, e.g. `goldens.json`, `*.md`); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Compress with zstd (`.tar.zst`, for transport; unpack before mapping on a device).
    #[arg(long)]
    pub zstd: bool,
    /// Package name (default: `{family}-{size}`, e.g. `gemma3-270m`).
    #[arg(long)]
    pub name: Option<String>,
    /// Package version.
    #[arg(long = "package-version", value_name = "VERSION", default_value = "1")]
    pub package_version: String,
    /// Target the archive is for (`any` when it carries no native library).
    #[arg(long, value_name = "TARGET")]
    pub target: Option<PackageTarget>,
    /// Model family (default: from config.json).
    #[arg(long)]
    pub family: Option<String>,
    /// Quantization label (default: from the weights' dtype).
    #[arg(long)]
    pub quantization: Option<String>,
    /// Source repository recorded in the manifest (default: from a hub cache path, else `local`).
    #[arg(long, value_name = "REPO")]
    pub source_repo: Option<String>,
    /// Source revision recorded in the manifest.
    #[arg(long, value_name = "REV")]
    pub source_revision: Option<String>,
    #[command(flatten)]
    pub sign: SignKeyArgs,
    /// Replace an existing output that these tools did not write (another kind of file, a
    /// symlink, a FIFO or a device).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub hub: HubArgs,
}

impl PackageArgs {
    /// The package stage's options, signed with `--sign-key` or the user's key.
    pub fn options(&self, ui: &Ui) -> anyhow::Result<PackageOptions> {
        let key = crate::trust::signing_key(self.sign.sign_key.as_deref(), &|m| ui.info(m))?;
        ui.detail(format!("signing with key {}", key.public().key_id()));
        Ok(PackageOptions {
            exclude: self.exclude.clone(),
            zstd: self.zstd || self.output.extension().is_some_and(|e| e == "zst"),
            name: self.name.clone(),
            version: self.package_version.clone(),
            family: self.family.clone(),
            quantization: self.quantization.clone(),
            target: self.target,
            source_repo: self.source_repo.clone(),
            source_revision: self.source_revision.clone(),
            extra_stages: Default::default(),
            created_by: crate::created_by(ui.tool),
            sign_with: Some(key),
        })
    }
}

/// `inspect PKG`.
#[derive(Args, Clone, Debug)]
pub struct InspectArgs {
    /// An archive (`.tar`, `.tar.zst`) or an unpacked archive directory.
    pub package: PathBuf,
}

/// `verify PKG`.
#[derive(Args, Clone, Debug)]
pub struct VerifyArgs {
    /// An archive (`.tar`, `.tar.zst`) or an unpacked archive directory.
    pub package: PathBuf,
    /// Also trust this public key when saying whether the signer is trusted (repeatable).
    #[arg(long = "trusted-key", value_name = "PUB")]
    pub trusted_keys: Vec<std::path::PathBuf>,
}

/// `unpack PKG -o DIR`.
#[derive(Args, Clone, Debug)]
pub struct UnpackArgs {
    /// The archive to extract.
    pub package: PathBuf,
    /// Directory to create (must not exist).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
}
