//! Signed download links: a URL that lets whoever holds it read one file until it expires,
//! without an API key or token. The signature (HMAC-SHA256 under a key derived from the server
//! secret) covers the file id, the expiry, the disposition and the optional download name, so
//! none of them can be changed and a signature cannot be moved to another file. Nothing about
//! the caller is in the URL: only those four values and the signature.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carafe_core::files::FileId;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::disposition::DispositionKind;

/// The query of a signed link.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LinkQuery {
    /// Unix seconds after which the link no longer works.
    pub expires: Option<i64>,
    /// `inline` or `attachment`.
    pub disposition: Option<String>,
    /// The name the download is saved under, when not the file's own.
    pub filename: Option<String>,
    pub signature: Option<String>,
}

impl LinkQuery {
    pub fn is_present(&self) -> bool {
        self.signature.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Missing parts, a changed value, another file's or another server's signature.
    Invalid,
    /// A genuine link whose time is up.
    Expired,
}

/// What a valid link grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub disposition: DispositionKind,
    pub filename: Option<String>,
}

#[derive(Clone)]
pub struct LinkSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(..)")
    }
}

fn disposition_name(d: DispositionKind) -> &'static str {
    match d {
        DispositionKind::Inline => "inline",
        DispositionKind::Attachment => "attachment",
    }
}

impl LinkSigner {
    pub fn new(key: [u8; 32]) -> Self {
        LinkSigner { key }
    }

    /// The key, for other signed URLs that use their own domain string (direct uploads).
    pub(crate) fn key(&self) -> &[u8; 32] {
        &self.key
    }

    fn mac(&self, file: FileId, expires: i64, disposition: &str, filename: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("any key");
        // Length-prefixed fields: no two different links can produce the same message.
        for part in [
            "carafe-link-v1",
            &file.to_string(),
            &expires.to_string(),
            disposition,
            filename,
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// The query string of a link (without `?`).
    pub fn sign(
        &self,
        file: FileId,
        expires: i64,
        disposition: DispositionKind,
        filename: Option<&str>,
    ) -> String {
        let d = disposition_name(disposition);
        let sig = self
            .mac(file, expires, d, filename.unwrap_or(""))
            .finalize();
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("expires", &expires.to_string());
        query.append_pair("disposition", d);
        if let Some(name) = filename {
            query.append_pair("filename", name);
        }
        query.append_pair("signature", &URL_SAFE_NO_PAD.encode(sig.into_bytes()));
        query.finish()
    }

    /// Checks a link for `file` at `now` (unix seconds).
    pub fn verify(&self, file: FileId, q: &LinkQuery, now: i64) -> Result<Grant, LinkError> {
        let (Some(expires), Some(sig)) = (q.expires, &q.signature) else {
            return Err(LinkError::Invalid);
        };
        let disposition = match q.disposition.as_deref() {
            Some("inline") => DispositionKind::Inline,
            Some("attachment") => DispositionKind::Attachment,
            _ => return Err(LinkError::Invalid),
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| LinkError::Invalid)?;
        let filename = q.filename.as_deref().unwrap_or("");
        self.mac(file, expires, disposition_name(disposition), filename)
            .verify_slice(&sig)
            .map_err(|_| LinkError::Invalid)?;
        // Expiry is judged only for genuine links: a forged one is `Invalid` whatever its date.
        if now >= expires {
            return Err(LinkError::Expired);
        }
        Ok(Grant {
            disposition,
            filename: q.filename.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(signed: &str) -> LinkQuery {
        let pairs: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(signed.as_bytes())
                .into_owned()
                .collect();
        LinkQuery {
            expires: pairs.get("expires").and_then(|e| e.parse().ok()),
            disposition: pairs.get("disposition").cloned(),
            filename: pairs.get("filename").cloned(),
            signature: pairs.get("signature").cloned(),
        }
    }

    #[test]
    fn links_verify_until_they_expire_and_resist_changes() {
        let signer = LinkSigner::new([7; 32]);
        let file = FileId::new();
        let q = query(&signer.sign(file, 1000, DispositionKind::Attachment, Some("보고서.pdf")));
        let grant = signer.verify(file, &q, 999).unwrap();
        assert_eq!(grant.disposition, DispositionKind::Attachment);
        assert_eq!(grant.filename.as_deref(), Some("보고서.pdf"));
        assert_eq!(signer.verify(file, &q, 1000), Err(LinkError::Expired));
        // Another file, a later expiry, another disposition or name, another secret.
        assert_eq!(signer.verify(FileId::new(), &q, 1), Err(LinkError::Invalid));
        let later = LinkQuery {
            expires: Some(5000),
            ..q.clone()
        };
        assert_eq!(signer.verify(file, &later, 1), Err(LinkError::Invalid));
        let inline = LinkQuery {
            disposition: Some("inline".into()),
            ..q.clone()
        };
        assert_eq!(signer.verify(file, &inline, 1), Err(LinkError::Invalid));
        let renamed = LinkQuery {
            filename: None,
            ..q.clone()
        };
        assert_eq!(signer.verify(file, &renamed, 1), Err(LinkError::Invalid));
        let other = LinkSigner::new([8; 32]);
        assert_eq!(other.verify(file, &q, 1), Err(LinkError::Invalid));
        assert_eq!(
            signer.verify(file, &LinkQuery::default(), 1),
            Err(LinkError::Invalid)
        );
    }
}
