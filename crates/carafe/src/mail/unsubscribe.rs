//! One-click unsubscribe (RFC 8058). A mail sent with `unsubscribe` carries, in each
//! recipient's copy, `List-Unsubscribe: <https://…/u/{token}>` and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (both covered by the DKIM signature).
//! The token names the recipient's message, not the address: 16 bytes of message id and 16 of
//! an HMAC over them, base64url — opaque, unguessable, and checked without a database lookup.
//! `POST /u/{token}` suppresses the address at once (no cookie, no auth, no redirect);
//! `GET` only shows a page with a button, because mail scanners fetch links.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carafe_core::mail::{MessageId, Suppression};
use carafe_core::time::now;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Error, Mailer};

const TAG_BYTES: usize = 16;

/// Makes and checks unsubscribe links.
#[derive(Clone)]
pub struct Links {
    key: [u8; 32],
    /// The public base URL, without a trailing slash.
    base: String,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("base", &self.base).finish()
    }
}

impl Links {
    pub fn new(key: [u8; 32], base: &str) -> Self {
        Links {
            key,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The MAC over a message id's bytes.
    fn mac(&self, id: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("any key");
        mac.update(b"carafe:unsubscribe:");
        mac.update(id);
        mac
    }

    pub fn token(&self, message: MessageId) -> String {
        let id = message.0.into_bytes();
        let mut raw = id.to_vec();
        raw.extend_from_slice(&self.mac(&id).finalize().into_bytes()[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The message a token names, when it is one of ours.
    pub fn verify(&self, token: &str) -> Option<MessageId> {
        let raw = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
        if raw.len() != 16 + TAG_BYTES {
            return None;
        }
        let (id, tag) = raw.split_at(16);
        // Constant-time comparison of the truncated tag.
        self.mac(id).verify_truncated_left(tag).ok()?;
        Some(MessageId(uuid::Uuid::from_slice(id).ok()?))
    }

    pub fn url(&self, message: MessageId) -> String {
        format!("{}/u/{}", self.base, self.token(message))
    }

    /// The two headers of a recipient's copy.
    pub fn headers(&self, message: MessageId) -> [(String, String); 2] {
        [
            (
                "List-Unsubscribe".into(),
                format!("<{}>", self.url(message)),
            ),
            (
                "List-Unsubscribe-Post".into(),
                "List-Unsubscribe=One-Click".into(),
            ),
        ]
    }
}

impl Mailer {
    /// Unsubscribes the recipient of the message `token` names: its address is suppressed
    /// (reason `unsubscribe`); doing it again changes nothing. `NotFound` for a token that is
    /// not ours.
    pub async fn unsubscribe(&self, token: &str) -> Result<Suppression, Error> {
        let links = self.links().ok_or(Error::NotFound)?;
        let id = links.verify(token).ok_or(Error::NotFound)?;
        let message = self.store().get_message(id).await?.ok_or(Error::NotFound)?;
        let entry = Suppression {
            address: message.recipient.to_lowercase(),
            reason: "unsubscribe".into(),
            source: format!("message:{id}"),
            created_at: now(),
        };
        let (kept, _) = self.store().put_suppression(entry).await?;
        Ok(kept)
    }

    /// Whether `token` is a valid unsubscribe link (for the confirmation page).
    pub fn unsubscribe_link_is_valid(&self, token: &str) -> bool {
        self.links().is_some_and(|l| l.verify(token).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_message_and_cannot_be_forged() {
        let links = Links::new([7; 32], "https://mail.example.com/");
        let id = MessageId::new();
        let token = links.token(id);
        assert_eq!(links.verify(&token), Some(id));
        assert!(!token.contains('@'));
        assert_eq!(links.url(id), format!("https://mail.example.com/u/{token}"));
        // Another key, a changed byte, a truncated token: not ours.
        assert_eq!(Links::new([8; 32], "x").verify(&token), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[3] ^= 1;
        assert_eq!(links.verify(&URL_SAFE_NO_PAD.encode(&raw)), None);
        assert_eq!(links.verify(&token[..20]), None);
        assert_eq!(links.verify("not base64 !"), None);
    }
}
