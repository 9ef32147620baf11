//! DKIM signing of outgoing mail (`mail.dkim_*`), with lettre's signer configured as receivers
//! expect: relaxed/relaxed canonicalization (lettre's default, simple headers, fails
//! verification after ordinary relaying) over From, To, Cc, Reply-To, Subject, Date,
//! Message-ID and the RFC 8058 List-Unsubscribe headers. A header the message lacks is still
//! named in `h=`, so it cannot be added later without breaking the signature.

use std::path::Path;

use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;

/// The headers every signature covers.
const SIGNED: [&str; 9] = [
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// A signer for `domain` under `selector`, with the RSA key in `key_file` (PKCS#1 PEM, as
/// `openssl genrsa -traditional` writes it).
pub fn config(key_file: &Path, selector: &str, domain: &str) -> Result<DkimConfig, String> {
    let pem = std::fs::read_to_string(key_file)
        .map_err(|e| format!("mail.dkim_key_file {}: {e}", key_file.display()))?;
    let key = DkimSigningKey::new(&pem, DkimSigningAlgorithm::Rsa).map_err(|e| {
        format!(
            "mail.dkim_key_file {}: not an RSA key in PKCS#1 PEM \
             (openssl genrsa -traditional): {e}",
            key_file.display()
        )
    })?;
    Ok(DkimConfig::new(
        selector.to_owned(),
        domain.to_owned(),
        key,
        SIGNED
            .iter()
            .map(|h| HeaderName::new_from_ascii_str(h))
            .collect(),
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    ))
}
