//! Direct uploads as stored: a session that lets a client send a file's bytes straight to
//! storage (a presigned S3 URL, or a signed Carafe URL on local disk) and then ask Carafe to
//! check and record them. The session's id is the future file's id, so the bytes land at the
//! file's `incoming/<id>` key; the row remembers what the client declared (to be checked
//! against what arrived) and, on S3, the multipart upload to complete or abort.

use serde_json::Value;
use time::OffsetDateTime;

use super::{BucketName, FileId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirectState {
    /// Waiting for the bytes and the client's `complete`.
    Open,
    /// A `complete` is checking the bytes now.
    Completing,
    /// The file was recorded; the row stays until it expires so a repeated `complete` is told.
    Completed,
}

impl DirectState {
    pub fn as_str(self) -> &'static str {
        match self {
            DirectState::Open => "open",
            DirectState::Completing => "completing",
            DirectState::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => DirectState::Open,
            "completing" => DirectState::Completing,
            "completed" => DirectState::Completed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DirectUpload {
    /// The future file's id.
    pub id: FileId,
    pub bucket: BucketName,
    pub owner: Option<String>,
    /// The sanitised name the file will have.
    pub name: String,
    /// The size the client declared; what arrives must match it exactly.
    pub size: u64,
    pub metadata: Value,
    pub state: DirectState,
    /// The S3 multipart upload id, for uploads sent in parts.
    pub multipart: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}
