//! Master keys and the envelope around each encrypted file's data key. The data key (DEK)
//! encrypts the bytes; a master key only wraps DEKs, so rotating the master key means
//! rewrapping small row values, never re-encrypting objects. Each wrapped DEK names its master
//! key by id (`kid`: the first 8 bytes of its SHA-256, hex), so several keys can be accepted
//! during a rotation and an unknown one is reported instead of producing garbage.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use carafe_core::files::FileEncryption;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::crypto::{DataKey, SEGMENT};
use crate::values::Secret;

#[derive(Clone)]
pub struct MasterKey {
    kid: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.kid)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("no master key is configured")]
    NoMasterKey,
    /// The file's key was wrapped under a master key this server does not have.
    #[error("master key {0} is not configured")]
    UnknownKey(String),
    #[error("the wrapped data key is damaged or was not made with master key {0}")]
    Damaged(String),
}

impl MasterKey {
    /// A key given as base64 of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|_| "must be base64 (e.g. from `openssl rand -base64 32`)".to_string())?;
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| "must decode to exactly 32 bytes".to_string())?;
        Ok(MasterKey {
            kid: hex::encode(&Sha256::digest(raw)[..8]),
            cipher: Aes256Gcm::new_from_slice(&raw).expect("32-byte key"),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn wrap(&self, dek: &DataKey) -> FileEncryption {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), &dek.bytes()[..])
            .expect("AES-GCM of 32 bytes cannot fail");
        FileEncryption {
            kid: self.kid.clone(),
            wrapped: STANDARD.encode([&nonce[..], &sealed].concat()),
            segment: SEGMENT as u32,
        }
    }

    fn unwrap(&self, enc: &FileEncryption) -> Result<DataKey, KeyError> {
        let damaged = || KeyError::Damaged(enc.kid.clone());
        let raw = STANDARD.decode(&enc.wrapped).map_err(|_| damaged())?;
        let (nonce, body) = raw.split_at_checked(12).ok_or_else(damaged)?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| damaged())?;
        let plain = self
            .cipher
            .decrypt(&Nonce::from(nonce), body)
            .map_err(|_| damaged())?;
        let raw: [u8; 32] = plain.try_into().map_err(|_| damaged())?;
        Ok(DataKey::from_bytes(raw))
    }
}

/// The current master key (new files) and the previous ones (still read).
#[derive(Debug, Clone, Default)]
pub struct MasterKeys {
    current: Option<MasterKey>,
    previous: Vec<MasterKey>,
}

impl MasterKeys {
    /// The keys as configured: `master_key` and `master_keys_previous`.
    pub fn new(current: Option<&Secret>, previous: &[Secret]) -> anyhow::Result<Self> {
        let parse = |name: &str, text: &str| {
            MasterKey::parse(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))
        };
        Ok(MasterKeys {
            current: current
                .map(|k| parse("master_key", k.expose()))
                .transpose()?,
            previous: previous
                .iter()
                .map(|k| parse("master_keys_previous", k.expose()))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn can_encrypt(&self) -> bool {
        self.current.is_some()
    }

    pub fn current(&self) -> Result<&MasterKey, KeyError> {
        self.current.as_ref().ok_or(KeyError::NoMasterKey)
    }

    /// A new data key for a file, and how to record it.
    pub fn new_data_key(&self) -> Result<(DataKey, FileEncryption), KeyError> {
        let dek = DataKey::generate();
        let enc = self.current()?.wrap(&dek);
        Ok((dek, enc))
    }

    /// The data key of a file, unwrapped with the master key its record names.
    pub fn unwrap(&self, enc: &FileEncryption) -> Result<DataKey, KeyError> {
        self.current
            .iter()
            .chain(&self.previous)
            .find(|k| k.kid == enc.kid)
            .ok_or_else(|| KeyError::UnknownKey(enc.kid.clone()))?
            .unwrap(enc)
    }

    /// The same data key wrapped under the current master key.
    pub fn rewrap(&self, enc: &FileEncryption) -> Result<FileEncryption, KeyError> {
        let dek = self.unwrap(enc)?;
        Ok(self.current()?.wrap(&dek))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> String {
        STANDARD.encode([n; 32])
    }

    #[test]
    fn keys_are_validated_and_named_by_their_hash() {
        assert!(MasterKey::parse("not base64!").is_err());
        assert!(MasterKey::parse(&STANDARD.encode([1u8; 31])).is_err());
        let k = MasterKey::parse(&key(1)).unwrap();
        assert_eq!(k.kid(), &hex::encode(Sha256::digest([1u8; 32]))[..16]);
    }

    #[test]
    fn data_keys_unwrap_with_current_or_previous_keys_only() {
        let keys = |current: u8, previous: Vec<u8>| {
            let previous: Vec<Secret> = previous.into_iter().map(|n| Secret::new(key(n))).collect();
            MasterKeys::new(Some(&Secret::new(key(current))), &previous).unwrap()
        };
        let a = keys(1, vec![]);
        let (dek, enc) = a.new_data_key().unwrap();
        assert_eq!(a.unwrap(&enc).unwrap().bytes(), dek.bytes());
        let b = keys(2, vec![1]);
        let rewrapped = b.rewrap(&enc).unwrap();
        assert_ne!(rewrapped.kid, enc.kid);
        let only_b = keys(2, vec![]);
        assert_eq!(only_b.unwrap(&rewrapped).unwrap().bytes(), dek.bytes());
        assert!(matches!(only_b.unwrap(&enc), Err(KeyError::UnknownKey(_))));
        let mut bad = enc.clone();
        bad.wrapped = STANDARD.encode([0u8; 60]);
        assert!(matches!(a.unwrap(&bad), Err(KeyError::Damaged(_))));
        assert_eq!(
            MasterKeys::default().new_data_key().err(),
            Some(KeyError::NoMasterKey)
        );
    }
}
