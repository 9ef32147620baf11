//! The files capability's settings (the `[files]` section of the configuration): where uploads are kept and scanned, how downloads and links behave,
//! and the buckets defined in the configuration file.

use std::collections::BTreeMap;
use std::time::Duration;

use carafe_core::files::BucketPolicy;
use serde::{Deserialize, Serialize};

use crate::values::HumanDuration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Largest upload in any bucket, in bytes; a bucket's `max_size` cannot exceed it.
    pub max_upload_bytes: u64,
    /// How long the virus scanner may take to answer one file.
    pub scan_timeout: HumanDuration,
    /// Attempts of a file's processing job: when the scanner stays unreachable through all of
    /// them, the file is quarantined (or, in buckets where scanning is optional, served
    /// unscanned).
    pub scan_attempts: u32,
    /// The first retry delay of processing; it doubles with each attempt (up to 10 minutes).
    pub scan_retry_base: HumanDuration,
    /// Signed links last this long when the request names no expiry…
    pub link_default_ttl: HumanDuration,
    /// …and never longer than this.
    pub link_max_ttl: HumanDuration,
    /// Memory for small, often-read files kept in RAM, in bytes (0 turns the cache off).
    pub cache_bytes: u64,
    /// Largest file the memory cache holds, in bytes.
    pub cache_max_object: u64,
    /// Unfinished resumable (tus) uploads are deleted this long after their last chunk;
    /// finished ones are remembered (for `HEAD`) this long after they end.
    pub upload_ttl: HumanDuration,
    /// Direct uploads (`POST /api/v1/files/direct`) must be completed within this long;
    /// unfinished ones are then aborted and their bytes deleted.
    pub direct_ttl: HumanDuration,
    /// On S3, direct uploads up to this many bytes are one presigned PUT; larger ones are
    /// sent in presigned parts (a multipart upload).
    pub direct_single_max: u64,
    /// The part size of direct multipart uploads (at least 5 MiB; raised so that no upload
    /// needs more than 10,000 parts).
    pub direct_part_size: u64,
    /// When set (e.g. `/protected/`), downloads from local storage answer with an
    /// `X-Accel-Redirect` to this internal nginx location plus the object's path, and nginx
    /// sends the bytes.
    pub accel_redirect: Option<String>,
    /// Buckets defined here are created (or updated) at start; the `default` bucket exists
    /// even when not listed.
    pub buckets: BTreeMap<String, BucketPolicy>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_upload_bytes: 5 * 1024 * 1024 * 1024,
            scan_timeout: HumanDuration(Duration::from_secs(120)),
            scan_attempts: 10,
            scan_retry_base: HumanDuration(Duration::from_secs(2)),
            link_default_ttl: HumanDuration(Duration::from_secs(3600)),
            link_max_ttl: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
            cache_bytes: 64 * 1024 * 1024,
            cache_max_object: 256 * 1024,
            upload_ttl: HumanDuration(Duration::from_secs(24 * 3600)),
            direct_ttl: HumanDuration(Duration::from_secs(3600)),
            direct_single_max: 64 * 1024 * 1024,
            direct_part_size: 16 * 1024 * 1024,
            accel_redirect: None,
            buckets: BTreeMap::new(),
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_upload_bytes == 0 {
            return Err("files.max_upload_bytes must be positive".into());
        }
        if self.link_default_ttl.0.is_zero() || self.link_default_ttl.0 > self.link_max_ttl.0 {
            return Err("files: link ttls must be positive and default ≤ max".into());
        }
        if self.link_max_ttl.0 > Duration::from_secs(366 * 24 * 3600) {
            return Err("files.link_max_ttl must be at most a year".into());
        }
        if !(1..=100).contains(&self.scan_attempts) || self.scan_retry_base.0.is_zero() {
            return Err(
                "files.scan_attempts must be 1-100 and files.scan_retry_base positive".into(),
            );
        }
        if self.scan_timeout.0 < Duration::from_secs(1) {
            return Err("files.scan_timeout must be at least 1s".into());
        }
        if self.upload_ttl.0.is_zero() || self.upload_ttl.0 > Duration::from_secs(366 * 24 * 3600) {
            return Err("files.upload_ttl must be positive and at most a year".into());
        }
        if self.direct_ttl.0 < Duration::from_secs(1)
            || self.direct_ttl.0 > Duration::from_secs(7 * 24 * 3600)
        {
            return Err("files.direct_ttl must be 1s to 7 days (presigned URLs' limit)".into());
        }
        if self.direct_part_size < 5 * 1024 * 1024 || self.direct_part_size > 5 * 1024 * 1024 * 1024
        {
            return Err("files.direct_part_size must be 5 MiB to 5 GiB".into());
        }
        if let Some(prefix) = &self.accel_redirect
            && !(prefix.starts_with('/') && prefix.ends_with('/'))
        {
            return Err("files.accel_redirect must start and end with `/`".into());
        }
        for (name, policy) in &self.buckets {
            carafe_core::files::BucketName::parse(name)
                .map_err(|e| format!("files.buckets.{name}: {e}"))?;
            if policy.max_size > self.max_upload_bytes {
                return Err(format!(
                    "files.buckets.{name}.max_size exceeds files.max_upload_bytes"
                ));
            }
        }
        Ok(())
    }
}
