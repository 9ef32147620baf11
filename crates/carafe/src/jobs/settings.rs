//! The job engine's settings (the `[jobs]` and `[push]` sections of the configuration): how the job engine sizes, leases and keeps jobs, and
//! how push deliveries are signed and where they may go.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::targets::AllowHost;
use crate::values::{HumanDuration, Secret, list};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Largest `args` of one job, in bytes of JSON.
    pub max_args_bytes: usize,
    /// A job's `timeout_ms` when the enqueue names none: the longest an in-process handler
    /// or a push delivery may run.
    pub default_timeout: HumanDuration,
    /// The lease a claim gets, and a heartbeat renews, when neither it nor the queue's
    /// `lease_ms` names one: pull workers, in-process handlers and push deliveries alike.
    pub lease: HumanDuration,
    /// How long completed and cancelled jobs are kept (and completed or cancelled workflows,
    /// whose steps are kept as long as they are).
    pub retention_completed: HumanDuration,
    /// How long discarded jobs are kept (and failed workflows, with their steps).
    pub retention_discarded: HumanDuration,
    /// How often waiting workers and event streams re-check the database when no wake-up came.
    pub poll_interval: HumanDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_args_bytes: 64 * 1024,
            default_timeout: HumanDuration(Duration::from_secs(300)),
            lease: HumanDuration(Duration::from_secs(60)),
            retention_completed: HumanDuration(Duration::from_secs(24 * 3600)),
            retention_discarded: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
            poll_interval: HumanDuration(Duration::from_secs(1)),
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        if !(1024..=16 * 1024 * 1024).contains(&self.max_args_bytes) {
            return Err("jobs.max_args_bytes must be between 1 KiB and 16 MiB".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&self.lease.0) {
            return Err("jobs.lease must be between 1s and 24h".into());
        }
        if self.default_timeout.0 < Duration::from_secs(1) || self.poll_interval.0.is_zero() {
            return Err(
                "jobs.default_timeout must be at least 1s and jobs.poll_interval positive".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSettings {
    /// Signs every push delivery (HMAC-SHA256), at least 32 characters; the receiving app
    /// verifies with the same value. Unset: push delivery is off.
    pub secret: Option<Secret>,
    /// Deliveries in flight at once, per process.
    pub concurrency: usize,
    /// What push targets may reach besides public addresses: host names (exact, any case;
    /// allowed whatever they resolve to), IP addresses and CIDR ranges (resolved addresses
    /// inside them are allowed).
    #[serde(deserialize_with = "list::deserialize")]
    pub allow_hosts: Vec<AllowHost>,
    /// Lets push targets reach any address, private ones included (the check is off).
    pub allow_private_networks: bool,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            secret: None,
            concurrency: 64,
            allow_hosts: Vec::new(),
            allow_private_networks: false,
        }
    }
}

impl PushSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.secret.as_ref().is_some_and(|k| k.expose().len() < 32) {
            return Err("push.secret must be at least 32 characters".into());
        }
        if !(1..=10_000).contains(&self.concurrency) {
            return Err("push.concurrency must be between 1 and 10000".into());
        }
        Ok(())
    }
}
