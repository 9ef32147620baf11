//! Files as stored: buckets (named upload policies) and the file rows that track each upload
//! from arrival through processing to deletion. The bytes live in object storage under keys
//! made from the file's id, never from anything a client sent.

mod bucket;
mod direct;
mod multipart;
mod upload;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::jobs::JobId;

pub use bucket::{Bucket, BucketName, BucketPolicy, ScanPolicy, ThumbnailSpec, Visibility};
pub use direct::{DirectState, DirectUpload};
pub use multipart::MultipartRecord;
pub use upload::{Advance, NewUpload, Upload, UploadChunk, UploadEnd, UploadId, UploadStatus};

/// A file's id: a UUIDv7, so ids sort by creation and cannot be guessed from one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileId(pub uuid::Uuid);

impl FileId {
    pub fn new() -> Self {
        FileId(uuid::Uuid::now_v7())
    }
}

impl Default for FileId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for FileId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(FileId)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Stored and waiting for (or in) its processing job; not served yet.
    Processing,
    /// Processed; served to whoever may read it.
    Ready,
    /// The scanner found malware, or could not scan it where scanning is required. Kept aside,
    /// never served.
    Quarantined,
    /// Processing found the content unacceptable (say, a decompression bomb).
    Rejected,
    /// Processing failed for a reason that is not the content's fault.
    Failed,
}

impl FileStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Processing => "processing",
            FileStatus::Ready => "ready",
            FileStatus::Quarantined => "quarantined",
            FileStatus::Rejected => "rejected",
            FileStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "processing" => FileStatus::Processing,
            "ready" => FileStatus::Ready,
            "quarantined" => FileStatus::Quarantined,
            "rejected" => FileStatus::Rejected,
            "failed" => FileStatus::Failed,
            _ => return None,
        })
    }
}

/// What the virus scan concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum ScanResult {
    Clean,
    Infected {
        signature: String,
    },
    /// No scanner was configured, or the bucket's policy let the file through unscanned.
    Unscanned {
        reason: String,
    },
}

/// A thumbnail made during processing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumbnail {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub size: u64,
    /// `png` or `jpeg`.
    #[serde(rename = "type")]
    pub kind: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    pub id: FileId,
    pub bucket: BucketName,
    /// The sanitised display name.
    pub name: String,
    pub size: u64,
    /// A type name such as `png` (decided from the bytes).
    pub kind: String,
    pub mime: String,
    /// Hex SHA-256 of the stored bytes (after metadata stripping, once processed).
    pub sha256: String,
    pub status: FileStatus,
    /// Machine code of the reason for `rejected`, `quarantined` or `failed`.
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// The end user the file belongs to (a token's `sub`), if any.
    pub owner: Option<String>,
    /// The caller's own small JSON object.
    pub metadata: Value,
    /// The processing job.
    pub job: Option<JobId>,
    pub scan: Option<ScanResult>,
    pub thumbnails: Vec<Thumbnail>,
    pub legal_hold: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Set when deleted: hidden from every read, the bytes purged by a job.
    pub deleted_at: Option<OffsetDateTime>,
    /// Set when the bytes (and thumbnails) are encrypted at rest.
    pub encryption: Option<FileEncryption>,
}

/// How an encrypted file's (or a resumable upload's) data key is kept: wrapped (AES-256-GCM)
/// under the master key whose id is `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEncryption {
    /// The first 8 bytes (hex) of the SHA-256 of the master key.
    pub kid: String,
    /// Base64 of nonce ‖ wrapped data key ‖ tag.
    pub wrapped: String,
    /// Plaintext bytes per encrypted segment.
    pub segment: u32,
}

/// A file to record; its bytes are already stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFile {
    pub id: FileId,
    pub bucket: BucketName,
    pub name: String,
    pub size: u64,
    pub kind: String,
    pub mime: String,
    pub sha256: String,
    pub owner: Option<String>,
    pub metadata: Value,
    pub created_at: OffsetDateTime,
    pub encryption: Option<FileEncryption>,
}

impl NewFile {
    pub fn into_record(self, job: Option<JobId>) -> FileRecord {
        FileRecord {
            id: self.id,
            bucket: self.bucket,
            name: self.name,
            size: self.size,
            kind: self.kind,
            mime: self.mime,
            sha256: self.sha256,
            status: FileStatus::Processing,
            error_code: None,
            error: None,
            owner: self.owner,
            metadata: self.metadata,
            job,
            scan: None,
            thumbnails: Vec::new(),
            legal_hold: false,
            created_at: self.created_at,
            updated_at: self.created_at,
            deleted_at: None,
            encryption: self.encryption,
        }
    }
}

/// The end of processing: the new status and what was learnt.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessingOutcome {
    pub status: FileStatus,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub scan: Option<ScanResult>,
    /// Size and hash of the stored bytes when processing rewrote them (metadata stripping).
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub thumbnails: Vec<Thumbnail>,
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileFilter {
    pub bucket: Option<BucketName>,
    pub owner: Option<String>,
    pub status: Option<FileStatus>,
}
