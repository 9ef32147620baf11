//! Signed Carafe URLs for direct uploads on local disk, where there is no S3 to presign for
//! us: `PUT /api/v1/files/direct/{id}?expires=…&signature=…`. The HMAC (under the link key,
//! with its own domain string so a download link can never pass for an upload URL) binds the
//! session id, the expiry and the method.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carafe_core::files::FileId;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PutQuery {
    pub expires: Option<i64>,
    pub signature: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Invalid,
    Expired,
}

fn mac(key: &[u8; 32], id: FileId, expires: i64) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key");
    for part in [
        "carafe-direct-put-v1",
        "PUT",
        &id.to_string(),
        &expires.to_string(),
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac
}

/// The query string (without `?`) of the upload URL of session `id`.
pub fn sign(key: &[u8; 32], id: FileId, expires: i64) -> String {
    let sig = URL_SAFE_NO_PAD.encode(mac(key, id, expires).finalize().into_bytes());
    format!("expires={expires}&signature={sig}")
}

/// Checks an upload URL's query for session `id` at `now` (unix seconds).
pub fn verify(key: &[u8; 32], id: FileId, q: &PutQuery, now: i64) -> Result<(), SignatureError> {
    let (Some(expires), Some(sig)) = (q.expires, &q.signature) else {
        return Err(SignatureError::Invalid);
    };
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| SignatureError::Invalid)?;
    mac(key, id, expires)
        .verify_slice(&sig)
        .map_err(|_| SignatureError::Invalid)?;
    if now >= expires {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(s: &str) -> PutQuery {
        let pairs: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(s.as_bytes())
                .into_owned()
                .collect();
        PutQuery {
            expires: pairs.get("expires").and_then(|e| e.parse().ok()),
            signature: pairs.get("signature").cloned(),
        }
    }

    #[test]
    fn signatures_bind_the_session_and_expiry() {
        let key = [3; 32];
        let id = FileId::new();
        let q = query(&sign(&key, id, 100));
        assert_eq!(verify(&key, id, &q, 99), Ok(()));
        assert_eq!(verify(&key, id, &q, 100), Err(SignatureError::Expired));
        assert_eq!(
            verify(&key, FileId::new(), &q, 1),
            Err(SignatureError::Invalid)
        );
        let later = PutQuery {
            expires: Some(500),
            ..q.clone()
        };
        assert_eq!(verify(&key, id, &later, 1), Err(SignatureError::Invalid));
        assert_eq!(verify(&[4; 32], id, &q, 1), Err(SignatureError::Invalid));
    }
}
