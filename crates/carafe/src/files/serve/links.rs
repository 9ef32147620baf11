//! Signed download links: a URL that lets whoever holds it read one file until it expires,
//! without an API key or token. The signature (HMAC-SHA256 under a key derived from the server
//! secret) covers the file id, the expiry, the disposition and the optional download name, so
//! none of them can be changed and a signature cannot be moved to another file. Nothing about
//! the caller is in the URL: only those four values and the signature. Whoever may see a
//! ready file may make links to it, for at most `files.link_max_ttl`; each one is audited.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carafe_core::files::{FileId, FileStatus};
use carafe_core::time::now;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use time::OffsetDateTime;

use super::disposition::DispositionKind;
use crate::context::{BaseUrl, FieldError, Origin, Principal};
use crate::files::Files;
use crate::files::receive::filename;
use crate::files::records::RecordError;

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

/// What a caller asks of a new link.
#[derive(Debug, Default)]
pub struct LinkRequest {
    /// Seconds until the link stops working (default `files.link_default_ttl`).
    pub expires_in: Option<u64>,
    /// `inline` (the default, for types browsers may show) or `attachment`.
    pub disposition: Option<String>,
    /// A name to download under instead of the file's own.
    pub filename: Option<String>,
}

/// A link made: where it points and when it stops working.
#[derive(Debug)]
pub struct SignedLink {
    pub url: String,
    pub expires_at: OffsetDateTime,
}

impl Files {
    /// Makes a link to a ready file the caller may see; `base` is the public URL it starts with.
    pub async fn create_link(
        &self,
        principal: &Principal,
        id: FileId,
        request: LinkRequest,
        origin: Origin,
        base: &BaseUrl,
    ) -> Result<SignedLink, RecordError> {
        let file = self.visible(principal, id).await?;
        if file.status != FileStatus::Ready {
            return Err(RecordError::NotReady);
        }
        let invalid =
            |field: &str, message: String| RecordError::Invalid(FieldError::new(field, message));
        let max = self.settings.link_max_ttl.0;
        let ttl = match request.expires_in {
            None => self.settings.link_default_ttl.0,
            Some(0) => return Err(invalid("/expires_in", "must be positive".into())),
            Some(s) if Duration::from_secs(s) > max => {
                let limit = format!("at most {} seconds", max.as_secs());
                return Err(invalid("/expires_in", limit));
            }
            Some(s) => Duration::from_secs(s),
        };
        let disposition = match request.disposition.as_deref() {
            None | Some("inline") => DispositionKind::Inline,
            Some("attachment") => DispositionKind::Attachment,
            Some(_) => return Err(invalid("/disposition", "inline or attachment".into())),
        };
        let name = request.filename.as_deref().map(filename::sanitize);
        let expires_at = (now() + ttl).truncate_to_second();
        let expires = expires_at.unix_timestamp();
        let query = self.links.sign(id, expires, disposition, name.as_deref());
        let url = base.join(&format!("/api/v1/files/{id}/content?{query}"));
        let audit = origin.event(
            "file.link",
            id,
            json!({"expires_at": expires, "disposition": request.disposition}),
        );
        self.store.append_audit(audit).await?;
        Ok(SignedLink { url, expires_at })
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
