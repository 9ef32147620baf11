//! The `[limits]` section: bounds on what one request may ask of the server, and how long a
//! request holds its `Idempotency-Key`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HumanDuration;

/// How long a running request's `Idempotency-Key` reservation lasts without renewal (the
/// request renews it while it runs): after a crash, the key frees this long after the process
/// died.
pub const DEFAULT_IDEMPOTENCY_LOCK: Duration = Duration::from_secs(60);
/// The shortest and longest `limits.idempotency_lock`.
const IDEMPOTENCY_LOCK_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest JSON request body, in bytes.
    pub json_body_bytes: usize,
    /// How long a request holds its `Idempotency-Key` between renewals. The request renews it
    /// every third of this while it runs; a crashed one stops renewing, so its key frees at
    /// most this long after the crash.
    pub idempotency_lock: HumanDuration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            json_body_bytes: 1024 * 1024,
            idempotency_lock: HumanDuration(DEFAULT_IDEMPOTENCY_LOCK),
        }
    }
}

impl Limits {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(1024..=64 * 1024 * 1024).contains(&self.json_body_bytes) {
            return Err("limits.json_body_bytes must be between 1 KiB and 64 MiB".into());
        }
        if !IDEMPOTENCY_LOCK_RANGE.contains(&self.idempotency_lock.0) {
            return Err("limits.idempotency_lock must be between 1s and 1h".into());
        }
        Ok(())
    }
}
