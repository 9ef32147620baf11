//! The data dir and the keys kept in it: the server secret (generated on first start unless
//! configured) and the bootstrap admin key file. Sub-keys for each purpose are derived from the
//! one secret, so a token key can never be used to open a sealed record and vice versa.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::values::Secret;

/// Creates the data dir (owner-only) if it is missing.
pub fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))
}

/// Writes `contents` to `path` with mode 0600, atomically (temp file + rename), so a crash
/// never leaves a half-written key and no other user can read it even for a moment.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

pub fn admin_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-key")
}

/// The server secret and the keys derived from it.
#[derive(Clone)]
pub struct Secrets {
    root: [u8; 32],
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Uses `secret_key` (from the configuration) if given, else `<data_dir>/secret-key`,
    /// creating it with 32 random bytes on first use.
    pub fn load(secret_key: Option<&Secret>, data_dir: &Path) -> anyhow::Result<Self> {
        if let Some(key) = secret_key {
            return Ok(Self::from_text(key.expose()));
        }
        let path = data_dir.join("secret-key");
        match fs::read_to_string(&path) {
            Ok(text) if text.trim().len() >= 32 => Ok(Self::from_text(text.trim())),
            Ok(_) => anyhow::bail!("{} is too short: delete it or fix it", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ensure_data_dir(data_dir)?;
                let mut raw = [0u8; 32];
                rand::rng().fill_bytes(&mut raw);
                let text = URL_SAFE_NO_PAD.encode(raw);
                write_private(&path, &text)?;
                Ok(Self::from_text(&text))
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn from_text(text: &str) -> Self {
        Secrets {
            root: derive(text.as_bytes(), b"carafe:root:v1"),
        }
    }

    /// The HS256 key for end-user tokens.
    pub fn token_key(&self) -> [u8; 32] {
        derive(&self.root, b"carafe:jwt:v1")
    }

    /// The HMAC key for signed file links.
    pub fn link_key(&self) -> [u8; 32] {
        derive(&self.root, b"carafe:links:v1")
    }

    /// The HMAC key for one-click unsubscribe links.
    pub fn unsubscribe_key(&self) -> [u8; 32] {
        derive(&self.root, b"carafe:unsubscribe:v1")
    }

    /// An AEAD for data Carafe stores and reads back itself (idempotent answers).
    pub fn sealer(&self) -> Sealer {
        let key = derive(&self.root, b"carafe:seal:v1");
        Sealer(Aes256Gcm::new_from_slice(&key).expect("32-byte key"))
    }
}

fn derive(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// AES-256-GCM with a random nonce per message; output is `nonce ‖ ciphertext ‖ tag`.
#[derive(Clone)]
pub struct Sealer(Aes256Gcm);

impl Sealer {
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .0
            .encrypt(&Nonce::from(nonce), plain)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        [&nonce[..], &sealed].concat()
    }

    /// `None` when the data was not sealed with this server's secret or was altered.
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, body) = sealed.split_at_checked(12)?;
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        self.0.decrypt(&Nonce::from(nonce), body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_the_same_secret_and_unaltered() {
        let a = Secrets::from_text(&"a".repeat(32)).sealer();
        let b = Secrets::from_text(&"b".repeat(32)).sealer();
        let sealed = a.seal(b"answer");
        assert_eq!(a.open(&sealed).as_deref(), Some(&b"answer"[..]));
        assert_eq!(b.open(&sealed), None);
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(a.open(&tampered), None);
        assert_eq!(a.open(b"short"), None);
        assert_ne!(a.seal(b"answer"), sealed, "every seal uses a fresh nonce");
    }

    #[test]
    fn a_generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = Secrets::load(None, &data_dir).unwrap();
        let path = data_dir.join("secret-key");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let again = Secrets::load(None, &data_dir).unwrap();
        assert_eq!(first.token_key(), again.token_key());
        assert_ne!(
            first.token_key(),
            Secrets::from_text(&"x".repeat(32)).token_key()
        );
    }
}
