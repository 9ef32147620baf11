//! Direct uploads: the client sends a file's bytes straight to storage — a presigned S3 PUT,
//! presigned S3 parts for large files, or on local disk a signed Carafe URL — so large
//! uploads do not pass through Carafe on S3. Nothing the client sent is believed: `complete`
//! checks the size that actually arrived (HEAD), the type from the first 8 KiB (a ranged GET)
//! against the name and bucket, and hashes the whole object, before the file is recorded
//! with its processing job exactly like any other upload (the scan then reads the object).
//!
//! A presigned PUT stays usable until it expires, so on S3 a single PUT goes to `direct/<id>`
//! and `complete` moves it to `incoming/<id>` before checking it: a second PUT after the
//! checks can never replace what was checked. (A completed multipart upload cannot be
//! written again: its part URLs then answer `NoSuchUpload`.)
//!
//! The session's id is the file's id and the checked bytes sit at `incoming/<id>`, so a crash
//! at any point leaves either a session the expiry sweep aborts (`lifecycle::expired`) or a
//! file row whose job finishes the work. A refused upload's object is deleted at once. This
//! module starts sessions; `complete` ends them.

pub mod complete;
pub mod signing;

use std::io;

use carafe_core::StoreError;
use carafe_core::files::{DirectState, DirectUpload, FileId};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use serde_json::Value;

use super::accept::{UploadError, owner_for};
use super::filename;
use crate::context::{BaseUrl, Denied, FieldError, Principal};
use crate::files::check::sniff::Kind;
use crate::files::{Files, incoming_key};
use signing::SignatureError;

/// S3 allows at most this many parts.
const MAX_PARTS: u64 = 10_000;

/// Where a single presigned S3 PUT lands, until `complete` moves it to `incoming/<id>`.
pub fn direct_key(id: FileId) -> String {
    format!("direct/{id}")
}

/// What the client declares when it starts a direct upload.
#[derive(Debug, Clone)]
pub struct DirectRequest {
    /// The bucket's name (default `default`).
    pub bucket: Option<String>,
    /// The file's name; its extension must be a type the bucket accepts.
    pub name: String,
    /// The exact size in bytes; what arrives must match it.
    pub size: u64,
    /// The type the client expects (e.g. `pdf`): one the bucket takes and the name's
    /// extension stands for.
    pub kind: Option<String>,
    /// The end user the file is to belong to (API keys only).
    pub owner: Option<String>,
    /// A JSON object kept with the file.
    pub metadata: Option<Value>,
}

/// Where to send the bytes.
#[derive(Debug, Clone)]
pub enum Plan {
    /// One PUT of the whole body to `url` (presigned S3, or a signed path on Carafe).
    Single { url: String },
    /// Parts of `part_size` bytes (the last may be smaller), each PUT to its URL.
    Parts {
        part_size: u64,
        parts: Vec<PlannedPart>,
    },
}

#[derive(Debug, Clone)]
pub struct PlannedPart {
    pub number: u32,
    pub url: String,
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The name or the metadata is not acceptable.
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(FieldError),
    /// The declared type is not one the bucket takes under this name.
    #[error("`{0}` is not a type this bucket accepts under this name")]
    KindNotAllowed(String),
    /// The bucket encrypts at rest; direct uploads would bypass it.
    #[error("the bucket encrypts files at rest")]
    Encrypted,
    #[error("the file is empty")]
    Empty,
    #[error("files in this bucket may be at most {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the name has no extension this bucket accepts")]
    NameNotAllowed,
    #[error("no such upload")]
    NotFound,
    #[error("the upload has expired")]
    Expired,
    #[error("the upload was already completed")]
    Completed(FileId),
    #[error("the upload is being completed by another request")]
    InProgress,
    #[error("{0}")]
    Parts(String),
    #[error("nothing has been uploaded yet")]
    Missing,
    #[error("{actual} bytes arrived, {declared} were declared")]
    SizeMismatch { declared: u64, actual: u64 },
    /// The body sent to Carafe's own upload URL went past the declared size.
    #[error("more than the declared {declared} bytes arrived")]
    SizeExceeded { declared: u64 },
    /// The body sent to Carafe's own upload URL ended early or could not be read.
    #[error("the upload ended early or could not be read")]
    BodyIncomplete,
    /// Carafe's own upload URL has expired or is not genuine.
    #[error("the upload URL is expired or not valid")]
    Url(SignatureError),
    #[error(transparent)]
    Refused(UploadError),
    #[error("storage failed")]
    Storage(#[from] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The type names an extension may stand for.
pub fn kinds_for(ext: &str) -> Vec<Kind> {
    Kind::all()
        .filter(|k| k.extensions().contains(&ext))
        .collect()
}

/// A part size of at least `wanted` that needs no more than 10,000 parts for `size` bytes.
pub fn part_size(size: u64, wanted: u64) -> u64 {
    wanted.max(size.div_ceil(MAX_PARTS))
}

impl Files {
    fn direct_ttl(&self) -> time::Duration {
        time::Duration::try_from(self.settings.direct_ttl.0).unwrap_or(time::Duration::HOUR)
    }

    /// Checks what the client declares against the bucket and opens a session; `base` is the
    /// public URL Carafe's own upload URL is built on (local disk).
    pub async fn start_direct(
        &self,
        principal: &Principal,
        req: DirectRequest,
        base: &BaseUrl,
    ) -> Result<(DirectUpload, Plan), DirectError> {
        principal.require(Scope::Files)?;
        let owner = owner_for(principal, req.owner).map_err(DirectError::Refused)?;
        let invalid =
            |field: &str, message: &str| DirectError::Invalid(FieldError::new(field, message));
        if req.name.is_empty() || req.name.len() > 1000 {
            return Err(invalid("name", "1-1000 characters"));
        }
        let metadata = match req.metadata {
            None => Value::Object(Default::default()),
            Some(v @ Value::Object(_)) if v.to_string().len() <= 16 * 1024 => v,
            Some(_) => return Err(invalid("metadata", "a JSON object of at most 16 KiB")),
        };
        let bucket = match self.named_upload_bucket(req.bucket.as_deref()).await {
            Ok(bucket) => bucket,
            Err(UploadError::NoBucket(_)) => return Err(invalid("bucket", "no such bucket")),
            Err(e) => return Err(DirectError::Refused(e)),
        };
        // A declared type must be one the bucket takes and the name's extension stands for.
        let ext = filename::extension(&filename::sanitize(&req.name));
        if let Some(kind) = req.kind
            && (!bucket.policy.allows(&kind)
                || !ext
                    .as_deref()
                    .is_some_and(|e| kinds_for(e).iter().any(|k| k.name() == kind)))
        {
            return Err(DirectError::KindNotAllowed(kind));
        }
        if req.size == 0 {
            return Err(DirectError::Empty);
        }
        // Bytes sent straight to storage would sit there unencrypted: encrypting buckets take
        // uploads through Carafe (POST /api/v1/files or tus) only.
        if bucket.policy.encrypt {
            return Err(DirectError::Encrypted);
        }
        let limit = bucket.policy.max_size.min(self.settings.max_upload_bytes);
        if req.size > limit {
            return Err(DirectError::TooLarge { limit });
        }
        let name = filename::sanitize(&req.name);
        let allowed = filename::extension(&name)
            .map(|e| kinds_for(&e))
            .unwrap_or_default()
            .into_iter()
            .any(|k| bucket.policy.allows(k.name()));
        if !allowed {
            return Err(DirectError::NameNotAllowed);
        }
        let at = now();
        let mut session = DirectUpload {
            id: FileId::new(),
            bucket: bucket.name.clone(),
            owner,
            name,
            size: req.size,
            metadata,
            state: DirectState::Open,
            multipart: None,
            created_at: at,
            expires_at: at + self.direct_ttl(),
        };
        let key = incoming_key(session.id);
        let ttl = self.settings.direct_ttl.0;
        let plan = match self.storage.s3() {
            None => {
                let query = signing::sign(
                    self.links.key(),
                    session.id,
                    session.expires_at.unix_timestamp(),
                );
                Plan::Single {
                    url: base.join(&format!("/api/v1/files/direct/{}?{query}", session.id)),
                }
            }
            Some(s3) if req.size <= self.settings.direct_single_max => Plan::Single {
                url: s3
                    .presigned_put(&direct_key(session.id), ttl)
                    .await?
                    .to_string(),
            },
            Some(s3) => {
                let upload_id = s3.create_multipart(&key).await?;
                session.multipart = Some(upload_id.clone());
                let part = part_size(req.size, self.settings.direct_part_size);
                let mut parts = Vec::new();
                let mut start = 0;
                while start < req.size {
                    let end = (start + part).min(req.size) - 1;
                    let number = parts.len() as u32 + 1;
                    let url = s3.presigned_part(&key, &upload_id, number, ttl).await?;
                    parts.push(PlannedPart {
                        number,
                        url: url.to_string(),
                        start,
                        end,
                    });
                    start = end + 1;
                }
                Plan::Parts {
                    part_size: part,
                    parts,
                }
            }
        };
        if let Err(e) = self.store().insert_direct(session.clone()).await {
            if let (Some(s3), Some(id)) = (self.storage.s3(), &session.multipart) {
                let _ = s3.abort_multipart(&key, id).await;
            }
            return Err(e.into());
        }
        Ok((session, plan))
    }
}
