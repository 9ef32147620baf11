//! Files and buckets as the API shows them.

use carafe_core::files::{Bucket, BucketPolicy, FileRecord, ScanResult};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::context::BaseUrl;

#[derive(Debug, Serialize, ToSchema)]
pub struct ThumbnailView {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub size: u64,
    /// `png` or `jpeg`.
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileView {
    pub id: String,
    pub bucket: String,
    /// The sanitised name.
    pub name: String,
    pub size: u64,
    /// The type decided from the bytes, such as `png` or `pdf`.
    #[serde(rename = "type")]
    pub kind: String,
    pub mime: String,
    /// Hex SHA-256 of the stored bytes (the content's strong ETag).
    pub sha256: String,
    /// processing, ready, quarantined, rejected or failed.
    pub status: String,
    /// Why the file is quarantined, rejected or failed.
    pub error: Option<FileError>,
    pub owner: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The processing job (watch it at `/api/v1/jobs/{id}/events`).
    pub job_id: Option<i64>,
    /// `{result: clean | infected | unscanned, signature?, reason?}`.
    #[schema(value_type = Option<Object>)]
    pub scan: Option<ScanResult>,
    pub thumbnails: Vec<ThumbnailView>,
    pub legal_hold: bool,
    /// Whether the bytes (and thumbnails) are encrypted at rest.
    pub encrypted: bool,
    /// Where the bytes are served (once ready).
    pub content_url: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl FileView {
    pub fn new(f: &FileRecord, base: &BaseUrl) -> Self {
        let id = f.id;
        FileView {
            id: id.to_string(),
            bucket: f.bucket.to_string(),
            name: f.name.clone(),
            size: f.size,
            kind: f.kind.clone(),
            mime: f.mime.clone(),
            sha256: f.sha256.clone(),
            status: f.status.as_str().into(),
            error: f.error_code.as_ref().map(|code| FileError {
                code: code.clone(),
                message: f.error.clone().unwrap_or_default(),
            }),
            owner: f.owner.clone(),
            metadata: f.metadata.clone(),
            job_id: f.job.map(|j| j.0),
            scan: f.scan.clone(),
            thumbnails: f
                .thumbnails
                .iter()
                .map(|t| ThumbnailView {
                    name: t.name.clone(),
                    width: t.width,
                    height: t.height,
                    size: t.size,
                    kind: t.kind.clone(),
                    url: base.join(&format!("/api/v1/files/{id}/thumbnails/{}", t.name)),
                })
                .collect(),
            legal_hold: f.legal_hold,
            encrypted: f.encryption.is_some(),
            content_url: base.join(&format!("/api/v1/files/{id}/content")),
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BucketView {
    pub name: String,
    #[schema(value_type = Object)]
    pub policy: BucketPolicy,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<&Bucket> for BucketView {
    fn from(b: &Bucket) -> Self {
        BucketView {
            name: b.name.to_string(),
            policy: b.policy.clone(),
            created_at: b.created_at,
            updated_at: b.updated_at,
        }
    }
}
