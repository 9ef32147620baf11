//! Suppressions: addresses mail is not sent to (hard bounces, complaints, unsubscribes, an
//! operator's decision). Checked when each message is sent, so an address suppressed after a
//! mail was accepted is still spared; addresses are compared lowercased.

use carafe_core::mail::{Mail, Suppression};
use carafe_core::page::{Page, PageRequest};
use carafe_core::time::now;

use super::address::parse_mailbox;
use super::{Error, Mailer};
use crate::context::{Actor, FieldError};

/// Why an address may be suppressed.
pub const REASONS: [&str; 4] = ["bounce", "complaint", "unsubscribe", "manual"];

/// The form an address is kept and compared in.
pub fn normalise(address: &str) -> Result<String, Error> {
    let mailbox = parse_mailbox(address)
        .map_err(|e| Error::Invalid(vec![FieldError::new("/address", e.to_string())]))?;
    Ok(mailbox.email.to_string().to_lowercase())
}

impl Mailer {
    /// Suppresses `address` (`reason` defaults to `manual`); an address already suppressed
    /// keeps its first entry. True when added now.
    pub async fn suppress(
        &self,
        address: &str,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<(Suppression, bool), Error> {
        let reason = reason.unwrap_or("manual");
        if !REASONS.contains(&reason) {
            return Err(Error::Invalid(vec![FieldError::new(
                "/reason",
                "bounce, complaint, unsubscribe or manual",
            )]));
        }
        let entry = Suppression {
            address: normalise(address)?,
            reason: reason.to_owned(),
            source: actor.id.clone(),
            created_at: now(),
        };
        Ok(self.store().put_suppression(entry).await?)
    }

    pub async fn suppression(&self, address: &str) -> Result<Suppression, Error> {
        let address = normalise(address).map_err(|_| Error::NotFound)?;
        self.store()
            .get_suppression(&address)
            .await?
            .ok_or(Error::NotFound)
    }

    pub async fn suppressions(&self, page: &PageRequest) -> Result<Page<Suppression>, Error> {
        Ok(self.store().list_suppressions(page).await?)
    }

    /// Lets mail reach `address` again.
    pub async fn unsuppress(&self, address: &str) -> Result<(), Error> {
        let address = normalise(address).map_err(|_| Error::NotFound)?;
        if self.store().delete_suppression(&address).await? {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    /// The suppression that spares `recipient` from transactional mail, if any (none when
    /// `mail.suppress_transactional` is off).
    /// The suppression that keeps `recipient` from being sent `mail`: always looked up for
    /// campaign mail, for transactional mail when `mail.suppress_transactional` says so.
    pub(super) async fn spares(
        &self,
        mail: &Mail,
        recipient: &str,
    ) -> Result<Option<Suppression>, Error> {
        if mail.campaign.is_none() && !self.settings().suppress_transactional {
            return Ok(None);
        }
        Ok(self
            .store()
            .get_suppression(&recipient.to_lowercase())
            .await?)
    }
}
