//! Resumable uploads (tus) as stored: a row per upload that tracks how many bytes are durable
//! (`offset`), the chunks that hold them, and a lock so that only one request at a time —
//! on any instance sharing the database — appends to an upload. The chunks' bytes live in
//! object storage; the row says which objects count.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::{BucketName, FileEncryption, FileId};

/// An upload's id: a UUIDv7, unguessable, and the last segment of its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UploadId(pub uuid::Uuid);

impl UploadId {
    pub fn new() -> Self {
        UploadId(uuid::Uuid::now_v7())
    }
}

impl Default for UploadId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for UploadId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(UploadId)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadStatus {
    /// Receiving chunks.
    Active,
    /// Every byte arrived and the file was accepted; `file` names it.
    Completed,
    /// Every byte arrived but the file was refused; `error_code` says why.
    Failed,
    /// Terminated by the client; its chunks are being deleted.
    Terminated,
}

impl UploadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadStatus::Active => "active",
            UploadStatus::Completed => "completed",
            UploadStatus::Failed => "failed",
            UploadStatus::Terminated => "terminated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => UploadStatus::Active,
            "completed" => UploadStatus::Completed,
            "failed" => UploadStatus::Failed,
            "terminated" => UploadStatus::Terminated,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub id: UploadId,
    pub bucket: BucketName,
    /// The end user the file will belong to (a token's `sub`), if any.
    pub owner: Option<String>,
    /// The declared total size (`Upload-Length`).
    pub length: u64,
    /// Bytes stored durably so far.
    pub offset: u64,
    /// Every `Upload-Metadata` pair as a JSON object of strings.
    pub metadata: Value,
    /// Who created it (`key:<id>` or `user:<id>`), for the audit log.
    pub actor: String,
    /// Chunks stored so far.
    pub chunks: u32,
    pub status: UploadStatus,
    pub file: Option<FileId>,
    pub error_code: Option<String>,
    /// The holder of the lock, and until when it holds it.
    pub lock_holder: Option<String>,
    pub locked_until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// After this the upload is gone for clients and the sweep deletes it.
    pub expires_at: OffsetDateTime,
    /// The data key its chunks are sealed with, wrapped like a file's (uploads to encrypting
    /// buckets); `None` when the chunks are stored in the clear.
    pub encryption: Option<FileEncryption>,
}

/// An upload to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUpload {
    pub id: UploadId,
    pub bucket: BucketName,
    pub owner: Option<String>,
    pub length: u64,
    pub metadata: Value,
    pub actor: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub encryption: Option<FileEncryption>,
}

impl NewUpload {
    pub fn into_upload(self) -> Upload {
        Upload {
            id: self.id,
            bucket: self.bucket,
            owner: self.owner,
            length: self.length,
            offset: 0,
            metadata: self.metadata,
            actor: self.actor,
            chunks: 0,
            status: UploadStatus::Active,
            file: None,
            error_code: None,
            lock_holder: None,
            locked_until: None,
            created_at: self.created_at,
            updated_at: self.created_at,
            expires_at: self.expires_at,
            encryption: self.encryption,
        }
    }
}

/// One stored chunk: the bytes `offset..offset + size` of the upload, in object `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadChunk {
    pub offset: u64,
    pub size: u64,
    pub key: String,
    /// Hex SHA-256 of the chunk.
    pub sha256: String,
}

/// Appending a stored chunk: applied only while `holder` holds the lock and the upload's
/// offset is still the chunk's offset.
#[derive(Debug, Clone)]
pub struct Advance<'a> {
    pub id: UploadId,
    pub holder: &'a str,
    pub chunk: &'a UploadChunk,
    pub now: OffsetDateTime,
    /// The new expiry (unfinished uploads live `ttl` past their last chunk).
    pub expires_at: OffsetDateTime,
}

/// How an upload whose bytes all arrived ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadEnd {
    Completed(FileId),
    Failed(String),
}
