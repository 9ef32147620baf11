//! Records behind the `Idempotency-Key` header: the first request with a key reserves it, its
//! answer is stored (sealed by the server), and later requests with the same key replay it.
//! A reservation is owned: it carries a random token, and only the request holding that token
//! may renew, complete or release it — so a request whose lock lapsed and was taken over can
//! never overwrite or free the new holder's reservation.

use time::OffsetDateTime;

/// A request fingerprint (SHA-256 of method, path and body).
pub type Fingerprint = [u8; 32];

#[derive(Debug, Clone, PartialEq)]
pub struct Reserve<'a> {
    /// Who is asking (a key or a user): two callers never share records.
    pub scope: &'a str,
    pub key: &'a str,
    pub fingerprint: Fingerprint,
    pub now: OffsetDateTime,
    /// Until when the reservation blocks others unless renewed; after that a crashed request
    /// can be retried.
    pub locked_until: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// The caller owns the key now: it renews the lock while it runs, then `complete`s or
    /// `release`s the key, each time presenting `token` (random, made by the store).
    Reserved { token: String },
    /// Another request holds or held this key.
    Existing {
        fingerprint: Fingerprint,
        /// The stored answer, or `None` while the first request is still running.
        response: Option<Vec<u8>>,
    },
}
