//! Option groups of signing and of the native-code policy (docs/security.md).

use std::path::PathBuf;

use clap::Args;

/// `--sign-key KEY` of `package` and `compile`.
#[derive(Args, Clone, Debug, Default)]
pub struct SignKeyArgs {
    /// Sign the archive with this secret key file (`keygen`); default: your own key in the
    /// configuration directory, created on first use.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
}

/// The native-code policy of verbs that load archives.
#[derive(Args, Clone, Debug, Default)]
pub struct TrustArgs {
    /// Trust archives signed by this public key (repeatable); your own key and the keys in
    /// the configuration directory's `trusted/` folder are trusted too.
    #[arg(long = "trusted-key", value_name = "PUB")]
    pub trusted_keys: Vec<PathBuf>,
    /// Load kernel libraries of local archives that are unsigned or signed by an untrusted key
    /// (they run native code with your rights). Never applies to hub downloads.
    #[arg(long)]
    pub allow_unsigned_kernels: bool,
}

impl TrustArgs {
    /// The policy for a model given as `arg`; `local` says whether it is a local path (hub
    /// downloads never get unsigned kernels).
    pub fn policy(&self, local: bool) -> anyhow::Result<ava_runtime::KernelPolicy> {
        crate::trust::kernel_policy(&self.trusted_keys, self.allow_unsigned_kernels && local)
    }
}

/// `keygen [-o KEY]`.
#[derive(Args, Clone, Debug)]
#[command(
    after_help = "Writes KEY (secret, mode 0600) and KEY.pub (public). Give KEY.pub to whoever \
should trust your archives (`--trusted-key`, or their configuration directory's trusted/ \
folder). Without -o, creates your own key in the configuration directory (AVA_CONFIG_DIR, else \
$XDG_CONFIG_HOME/ava, else ~/.config/ava)."
)]
pub struct KeygenArgs {
    /// Secret key file to write (the public key goes to KEY.pub).
    #[arg(short, long, value_name = "KEY")]
    pub output: Option<PathBuf>,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

/// `sign PKG [--key KEY]`.
#[derive(Args, Clone, Debug)]
pub struct SignArgs {
    /// The archive to sign (`.tar` or `.tar.zst`); it is verified and replaced by the signed one.
    pub package: PathBuf,
    /// Secret key file (`keygen`); default: your own key, created on first use.
    #[arg(long, value_name = "KEY")]
    pub key: Option<PathBuf>,
}
