//! Buckets: named policies that every upload is checked and processed against. A bucket says
//! how big a file may be, which types it may have, whether it must be virus-scanned, what
//! processing it gets and how it is served.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A bucket name: 1–63 of `a-z 0-9 . _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BucketName(String);

impl BucketName {
    pub const MAX_LEN: usize = 63;
    pub const DEFAULT: &'static str = "default";

    pub fn parse(name: &str) -> Result<Self, &'static str> {
        if !crate::is_simple_name(name, Self::MAX_LEN) {
            return Err(
                "bucket names are 1-63 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            );
        }
        Ok(BucketName(name.to_owned()))
    }

    pub fn default_bucket() -> Self {
        BucketName(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for BucketName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BucketName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a bucket's files are virus-scanned, and what happens when they cannot be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanPolicy {
    /// Scanned when a scanner is configured, with `Required`'s fail-closed rules; served
    /// marked `unscanned` when none is configured. The default, so a server without clamd
    /// still serves its uploads.
    Auto,
    /// A file is served only once a scanner said it is clean. Without a configured scanner,
    /// uploads are refused (`503 scanner_unavailable`) and files already received are never
    /// served; with an unreachable one, they wait and are quarantined when the retries run
    /// out (fail closed).
    Required,
    /// Scanned when a scanner is configured and answers; otherwise served marked `unscanned`.
    Optional,
    /// Never scanned.
    Off,
}

impl ScanPolicy {
    /// Whether the bucket cannot take uploads while no scanner is configured.
    pub fn needs_scanner(self) -> bool {
        self == ScanPolicy::Required
    }

    /// Whether a file the configured scanner could not scan is served anyway (marked
    /// `unscanned`) rather than quarantined.
    pub fn serves_unscannable(self) -> bool {
        self == ScanPolicy::Optional
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Readable with a files key, the owner's token, or a signed link.
    Private,
    /// Readable by anyone who knows the file's id.
    Public,
}

/// A thumbnail to make of every image uploaded to the bucket: it fits in `width × height`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
}

/// A bucket's rules. Every field has a default, so a policy can be given in part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BucketPolicy {
    /// Largest file, in bytes.
    pub max_size: u64,
    /// Type names (as decided from the bytes) the bucket accepts, e.g. `png`, `pdf`.
    pub allowed_types: Vec<String>,
    /// Whether files are virus-scanned, and what happens when they cannot be.
    pub scan: ScanPolicy,
    /// Remove EXIF (GPS), XMP, IPTC and comments from JPEG, PNG and WebP images.
    pub strip_metadata: bool,
    pub thumbnails: Vec<ThumbnailSpec>,
    pub visibility: Visibility,
    /// Files older than this many days are deleted (unless under legal hold).
    pub retention_days: Option<u32>,
    /// Encrypt the bytes at rest with a per-file key.
    pub encrypt: bool,
    /// `Cache-Control` for downloads; by default `private, max-age=0, must-revalidate` for
    /// private buckets and `public, max-age=3600` for public ones.
    pub cache_control: Option<String>,
    /// On S3 storage, answer downloads that are saved rather than shown (`Content-Disposition:
    /// attachment`) with a redirect to a short-lived presigned URL, so the bytes flow from S3
    /// to the client directly (S3 then handles ranges and validators, and sends the signed
    /// `Content-Type`, `Content-Disposition` and `Cache-Control`). S3 cannot send `nosniff` or
    /// the sandboxing CSP, so anything shown inline (images, PDF, text…) and every encrypted
    /// file still streams through Carafe.
    pub presigned_downloads: bool,
}

impl Default for BucketPolicy {
    fn default() -> Self {
        BucketPolicy {
            max_size: 50 * 1024 * 1024,
            allowed_types: ["png", "jpeg", "gif", "webp", "pdf", "csv", "txt"]
                .map(String::from)
                .to_vec(),
            scan: ScanPolicy::Auto,
            strip_metadata: true,
            thumbnails: vec![ThumbnailSpec {
                name: "small".into(),
                width: 256,
                height: 256,
            }],
            visibility: Visibility::Private,
            retention_days: None,
            encrypt: false,
            cache_control: None,
            presigned_downloads: false,
        }
    }
}

impl BucketPolicy {
    pub fn allows(&self, kind: &str) -> bool {
        self.allowed_types.iter().any(|t| t == kind)
    }

    pub fn cache_control(&self) -> &str {
        match (&self.cache_control, self.visibility) {
            (Some(c), _) => c,
            (None, Visibility::Private) => "private, max-age=0, must-revalidate",
            (None, Visibility::Public) => "public, max-age=3600",
        }
    }

    pub fn thumbnail(&self, name: &str) -> Option<&ThumbnailSpec> {
        self.thumbnails.iter().find(|t| t.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub name: BucketName,
    pub policy: BucketPolicy,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}
