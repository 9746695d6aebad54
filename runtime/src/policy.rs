//! The native-code policy: when the kernel library of an archive may be loaded.
//!
//! Loading a library runs its initialisers with the rights of the process, so a library is
//! loaded only from an archive whose signature is valid for a trusted key, or, when the caller
//! explicitly allows unsigned kernels, from an archive whose signature (if any) checks out.
//! Checkpoint directories carry no signature: their libraries are never loaded. See
//! `docs/security.md`.

use ava_packaging::{PublicKey, Signer};

/// Who may provide native code.
#[derive(Clone, Debug, Default)]
pub struct KernelPolicy {
    /// Keys whose signature makes an archive's kernels loadable.
    pub trusted: Vec<PublicKey>,
    /// Load kernels of archives that are unsigned or signed by an untrusted key.
    pub allow_unsigned: bool,
}

/// Whether an opened model's kernel library may be loaded: `Ok(why)` or `Err(why not)`.
pub type Permission = std::result::Result<String, String>;

impl KernelPolicy {
    /// A policy trusting `trusted` only.
    pub fn trusting(trusted: Vec<PublicKey>) -> Self {
        KernelPolicy {
            trusted,
            allow_unsigned: false,
        }
    }

    /// The verdict for an archive signed by `signer` (`None`: unsigned). The signature itself
    /// was checked when the archive was opened.
    pub fn judge(&self, signer: Option<&Signer>) -> Permission {
        match signer {
            Some(s) if self.trusted.contains(&s.key) => {
                Ok(format!("signed by trusted key {}", s.key_id()))
            }
            Some(s) if self.allow_unsigned => Ok(format!(
                "signed by untrusted key {}, loaded because unsigned kernels are allowed",
                s.key_id()
            )),
            Some(s) => Err(format!(
                "the archive is signed by key {}, which is not trusted (trust it with \
                 --trusted-key, or allow untrusted kernels with --allow-unsigned-kernels)",
                s.key_id()
            )),
            None if self.allow_unsigned => {
                Ok("unsigned, loaded because unsigned kernels are allowed".into())
            }
            None => Err(
                "the archive is not signed, so its kernel library is not loaded \
                 (sign it with `alc sign`, or pass --allow-unsigned-kernels)"
                    .into(),
            ),
        }
    }
}

/// The verdict for a checkpoint directory: never.
pub fn checkpoint_permission() -> Permission {
    Err(
        "a checkpoint directory carries no signature: kernel libraries are loaded only from \
         signed archives"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ava_packaging::SecretKey;

    #[test]
    fn verdicts() {
        let ours = SecretKey::from_seed(&[1; 32]).public();
        let theirs = SecretKey::from_seed(&[2; 32]).public();
        let policy = KernelPolicy::trusting(vec![ours]);
        assert!(policy.judge(Some(&Signer { key: ours })).is_ok());
        assert!(policy.judge(Some(&Signer { key: theirs })).is_err());
        assert!(policy.judge(None).is_err());
        let open = KernelPolicy {
            allow_unsigned: true,
            ..policy
        };
        assert!(open.judge(None).is_ok());
        assert!(open.judge(Some(&Signer { key: theirs })).is_ok());
        assert!(checkpoint_permission().is_err());
    }
}
