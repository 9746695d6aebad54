//! Archive signatures: ed25519 over the exact bytes of `manifest.json`.
//!
//! The manifest lists every other entry with its sha256, so signing it covers the whole archive.
//! A signed archive has `format_version` [`SIGNED_FORMAT_VERSION`] and carries the signature as
//! its second entry, [`SIGNATURE_NAME`] (not listed in the manifest). Key files and the
//! signature entry are specified in `docs/formats/package-v1.md` ("Signatures").

use std::fmt;
use std::path::Path;

use ed25519_dalek::Signer as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Name of the signature entry: the second entry of a signed archive, and a file beside
/// `manifest.json` in an unpacked one.
pub const SIGNATURE_NAME: &str = "manifest.sig";
/// `format_version` of signed archives.
pub const SIGNED_FORMAT_VERSION: u32 = 2;
/// Largest signature entry accepted.
pub const MAX_SIGNATURE_BYTES: u64 = 4096;
/// The only signature algorithm.
pub const ALGORITHM: &str = "ed25519";
/// What is signed: this prefix, then the manifest's bytes (domain separation).
pub const SIGNED_PREFIX: &[u8] = b"ava-archive-manifest-v2\n";
/// First word of a secret key file.
pub const SECRET_KEY_TAG: &str = "ava-ed25519-secret-key";
/// First word of a public key file.
pub const PUBLIC_KEY_TAG: &str = "ava-ed25519-public-key";
/// Hex digits of a key id (the start of the sha256 of the public key).
pub const KEY_ID_HEX: usize = 16;
/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 4096;
const KEY_BYTES: usize = 32;
const SIGNATURE_BYTES: usize = 64;

/// A public key that may sign archives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

/// A secret signing key. Its `Debug` shows only the key id.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

/// The contents of the signature entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// Id of the signing key ([`PublicKey::key_id`]).
    pub key_id: String,
    /// The signing public key, 64 hex digits.
    pub public_key: String,
    /// The signature, 128 hex digits.
    pub signature: String,
}

/// Who signed an archive whose signature checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signer {
    /// The signing key.
    pub key: PublicKey,
}

impl Signer {
    /// The signing key's id.
    pub fn key_id(&self) -> String {
        self.key.key_id()
    }
}

impl PublicKey {
    /// From the 32 raw bytes; `None` for an invalid point.
    pub fn from_bytes(bytes: &[u8; KEY_BYTES]) -> Option<Self> {
        VerifyingKey::from_bytes(bytes).ok().map(PublicKey)
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; KEY_BYTES] {
        self.0.to_bytes()
    }

    /// The first [`KEY_ID_HEX`] hex digits of the sha256 of the key's bytes.
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(digest)[..KEY_ID_HEX].to_string()
    }

    /// Parses a public key file's text: `ava-ed25519-public-key <64 hex>`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let bytes = parse_key_text(text, PUBLIC_KEY_TAG)?;
        PublicKey::from_bytes(&bytes).ok_or_else(|| "not a valid ed25519 public key".into())
    }

    /// Reads a public key file (a secret key file is accepted too: its public half is used).
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_key_file(path)?;
        if text.trim_start().starts_with(SECRET_KEY_TAG) {
            return SecretKey::parse(&text)
                .map(|k| k.public())
                .map_err(|reason| Error::Key {
                    path: path.into(),
                    reason,
                });
        }
        PublicKey::parse(&text).map_err(|reason| Error::Key {
            path: path.into(),
            reason,
        })
    }

    /// The key file's text (one line).
    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_KEY_TAG} {}\n", hex::encode(self.to_bytes()))
    }

    /// Checks `entry` as the signature of `manifest` by this key.
    fn verify(&self, manifest: &[u8], signature: &[u8; SIGNATURE_BYTES]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0
            .verify_strict(&signed_message(manifest), &sig)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl SecretKey {
    /// A key from 32 random bytes (the ed25519 seed).
    pub fn from_seed(seed: &[u8; KEY_BYTES]) -> Self {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Parses a secret key file's text: `ava-ed25519-secret-key <64 hex>`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        parse_key_text(text, SECRET_KEY_TAG).map(|seed| SecretKey::from_seed(&seed))
    }

    /// Reads a secret key file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_key_file(path)?;
        SecretKey::parse(&text).map_err(|reason| Error::Key {
            path: path.into(),
            reason,
        })
    }

    /// The key file's text (one line). Keep it private (mode 0600).
    pub fn to_file_text(&self) -> String {
        format!("{SECRET_KEY_TAG} {}\n", hex::encode(self.0.to_bytes()))
    }

    /// The signature entry's bytes for `manifest` (the exact bytes stored in the archive).
    pub fn sign_manifest(&self, manifest: &[u8]) -> Vec<u8> {
        let signature = self.0.sign(&signed_message(manifest));
        let public = self.public();
        let entry = SignatureEntry {
            algorithm: ALGORITHM.into(),
            key_id: public.key_id(),
            public_key: hex::encode(public.to_bytes()),
            signature: hex::encode(signature.to_bytes()),
        };
        let mut json = serde_json::to_vec_pretty(&entry).unwrap_or_default();
        json.push(b'\n');
        json
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public().key_id())
    }
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNED_PREFIX.len() + manifest.len());
    message.extend_from_slice(SIGNED_PREFIX);
    message.extend_from_slice(manifest);
    message
}

/// Checks a signature entry against the manifest bytes it must sign. Returns the signer, or
/// why the signature is bad.
pub fn check_signature(manifest: &[u8], entry: &[u8]) -> std::result::Result<Signer, String> {
    let parsed: SignatureEntry = serde_json::from_slice(entry)
        .map_err(|e| format!("{SIGNATURE_NAME} is not a valid signature entry: {e}"))?;
    if parsed.algorithm != ALGORITHM {
        return Err(format!(
            "unsupported signature algorithm {:?}",
            parsed.algorithm
        ));
    }
    let key_bytes: [u8; KEY_BYTES] = decode_hex(&parsed.public_key)
        .ok_or_else(|| "public_key is not 64 hex digits".to_string())?;
    let key = PublicKey::from_bytes(&key_bytes)
        .ok_or_else(|| "public_key is not a valid ed25519 key".to_string())?;
    if parsed.key_id != key.key_id() {
        return Err(format!(
            "key_id {:?} does not match the public key",
            parsed.key_id
        ));
    }
    let signature: [u8; SIGNATURE_BYTES] = decode_hex(&parsed.signature)
        .ok_or_else(|| "signature is not 128 hex digits".to_string())?;
    if !key.verify(manifest, &signature) {
        return Err(format!(
            "the signature by key {} does not match the manifest (tampered archive)",
            key.key_id()
        ));
    }
    Ok(Signer { key })
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex::decode(text).ok()?.try_into().ok()
}

fn parse_key_text(text: &str, tag: &str) -> std::result::Result<[u8; KEY_BYTES], String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next().ok_or_else(|| "empty key file".to_string())?;
    if lines.next().is_some() {
        return Err("more than one key in the file".into());
    }
    let (word, hex_key) = line
        .split_once(' ')
        .ok_or_else(|| format!("expected `{tag} <64 hex digits>`"))?;
    if word != tag {
        return Err(format!("expected a `{tag}` line, found `{word}`"));
    }
    decode_hex(hex_key.trim()).ok_or_else(|| "the key is not 64 hex digits".to_string())
}

fn read_key_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_check() {
        let key = SecretKey::from_seed(&[7; 32]);
        let manifest = b"{\"format_version\": 2}\n";
        let entry = key.sign_manifest(manifest);
        let signer = check_signature(manifest, &entry).unwrap();
        assert_eq!(signer.key, key.public());
        assert_eq!(signer.key_id().len(), KEY_ID_HEX);
        let mut tampered = manifest.to_vec();
        tampered[2] ^= 1;
        assert!(check_signature(&tampered, &entry)
            .unwrap_err()
            .contains("tampered"));
        assert!(check_signature(manifest, b"{}").is_err());
    }

    #[test]
    fn key_files_round_trip() {
        let key = SecretKey::from_seed(&[9; 32]);
        let again = SecretKey::parse(&key.to_file_text()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = PublicKey::parse(&key.public().to_file_text()).unwrap();
        assert_eq!(public, key.public());
        assert!(PublicKey::parse(&key.to_file_text()).is_err());
        assert!(SecretKey::parse("ava-ed25519-secret-key 12").is_err());
        assert!(format!("{key:?}").starts_with("SecretKey("));
        assert!(!format!("{key:?}").contains(&hex::encode([9u8; 32])));
    }
}
