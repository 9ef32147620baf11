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
//! The session's id is the file's id and the checked bytes sit at `incoming/<id>`, so a crash at any
//! point leaves either a session the expiry sweep aborts or a file row whose job finishes the
//! work. A refused upload's object is deleted at once. The sweep cleans each session on its
//! own: one it cannot clean now (S3 refusing the abort) waits for a later sweep without
//! holding up the others.

pub mod signing;

use std::io;
use std::sync::Arc;

use carafe_core::StoreError;
use carafe_core::files::{Bucket, DirectState, DirectUpload, FileId, FileRecord, NewFile};
use carafe_core::time::now;
use futures::TryStreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::accept::UploadError;
use super::body::HEAD_BYTES;
use super::filename;
use crate::context::Origin;
use crate::files::check::sniff::{self, Kind};
use crate::files::{Files, incoming_key};

/// S3 allows at most this many parts.
const MAX_PARTS: u64 = 10_000;

/// Where a single presigned S3 PUT lands, until `complete` moves it to `incoming/<id>`.
pub fn direct_key(id: FileId) -> String {
    format!("direct/{id}")
}

/// What the client declares when it starts a direct upload.
#[derive(Debug, Clone)]
pub struct DirectRequest {
    pub bucket: Arc<Bucket>,
    pub name: String,
    pub size: u64,
    pub owner: Option<String>,
    pub metadata: Value,
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
        req: DirectRequest,
        base: &str,
    ) -> Result<(DirectUpload, Plan), DirectError> {
        if req.size == 0 {
            return Err(DirectError::Empty);
        }
        // Bytes sent straight to storage would sit there unencrypted: encrypting buckets take
        // uploads through Carafe (POST /api/v1/files or tus) only.
        if req.bucket.policy.encrypt {
            return Err(DirectError::Encrypted);
        }
        let limit = req
            .bucket
            .policy
            .max_size
            .min(self.settings.max_upload_bytes);
        if req.size > limit {
            return Err(DirectError::TooLarge { limit });
        }
        let name = filename::sanitize(&req.name);
        let allowed = filename::extension(&name)
            .map(|e| kinds_for(&e))
            .unwrap_or_default()
            .into_iter()
            .any(|k| req.bucket.policy.allows(k.name()));
        if !allowed {
            return Err(DirectError::NameNotAllowed);
        }
        let at = now();
        let mut session = DirectUpload {
            id: FileId::new(),
            bucket: req.bucket.name.clone(),
            owner: req.owner,
            name,
            size: req.size,
            metadata: req.metadata,
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
                    url: format!("{base}/api/v1/files/direct/{}?{query}", session.id),
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

    /// The session, if it is open and not expired.
    pub async fn open_direct(&self, id: FileId) -> Result<DirectUpload, DirectError> {
        let session = self
            .store()
            .get_direct(id)
            .await?
            .ok_or(DirectError::NotFound)?;
        match session.state {
            DirectState::Completed => return Err(DirectError::Completed(id)),
            DirectState::Completing => return Err(DirectError::InProgress),
            DirectState::Open => {}
        }
        if now() >= session.expires_at {
            return Err(DirectError::Expired);
        }
        Ok(session)
    }

    /// Completes a session: assembles the parts (multipart), checks what arrived and records
    /// the file. `parts` are `(part_number, etag)`. Refused bytes are deleted and the session
    /// forgotten; a retryable failure (missing bytes, bad part list, storage down) reopens it.
    pub async fn complete_direct(
        &self,
        session: DirectUpload,
        parts: Vec<(u32, String)>,
        origin: Origin,
    ) -> Result<FileRecord, DirectError> {
        let id = session.id;
        // Checked before anything is read: a refusal here leaves the session open, to be
        // completed once the bucket can take the file.
        let bucket = self
            .upload_bucket(&session.bucket)
            .await
            .map_err(|e| match e {
                UploadError::Store(e) => DirectError::Store(e),
                e => DirectError::Refused(e),
            })?
            .ok_or(DirectError::NotFound)?;
        let store = self.store();
        if !store
            .transition_direct(id, DirectState::Open, DirectState::Completing)
            .await?
        {
            return Err(DirectError::InProgress);
        }
        match self.finish_direct(&session, &bucket, parts, origin).await {
            Ok(file) => {
                store
                    .transition_direct(id, DirectState::Completing, DirectState::Completed)
                    .await?;
                self.wake();
                Ok(file)
            }
            Err(e @ (DirectError::SizeMismatch { .. } | DirectError::Refused(_))) => {
                let _ = self.storage.delete(&incoming_key(id)).await;
                let _ = self.storage.delete(&direct_key(id)).await;
                store.delete_direct(id).await?;
                Err(e)
            }
            Err(e) => {
                store
                    .transition_direct(id, DirectState::Completing, DirectState::Open)
                    .await?;
                Err(e)
            }
        }
    }

    async fn finish_direct(
        &self,
        session: &DirectUpload,
        bucket: &Bucket,
        mut parts: Vec<(u32, String)>,
        origin: Origin,
    ) -> Result<FileRecord, DirectError> {
        let key = incoming_key(session.id);
        if let (Some(s3), Some(upload_id)) = (self.storage.s3(), &session.multipart) {
            parts.sort_by_key(|p| p.0);
            let contiguous = parts.iter().enumerate().all(|(i, p)| p.0 as usize == i + 1);
            if parts.is_empty() || !contiguous {
                return Err(DirectError::Parts(
                    "`parts` must list every part, numbered from 1 without gaps".into(),
                ));
            }
            // An already completed upload (a retry after a lost answer) is no longer listed.
            if self.storage.size(&key).await?.is_none() {
                let etags = parts.into_iter().map(|p| p.1).collect();
                s3.complete_multipart(&key, upload_id, etags)
                    .await
                    .map_err(|e| {
                        tracing::info!(error = %e, "direct upload: S3 refused the parts");
                        DirectError::Parts("the storage refused the parts and their ETags".into())
                    })?;
            }
        }
        if self.storage.s3().is_some() && session.multipart.is_none() {
            let staged = direct_key(session.id);
            // Absent when a retry (after a lost answer) finds it moved already.
            if self.storage.size(&staged).await?.is_some() {
                self.storage.rename(&staged, &key).await?;
            }
        }
        let actual = self.storage.size(&key).await?.ok_or(DirectError::Missing)?;
        if actual != session.size {
            return Err(DirectError::SizeMismatch {
                declared: session.size,
                actual,
            });
        }
        let head_len = (HEAD_BYTES as u64).min(actual);
        let head: Vec<u8> = self
            .storage
            .read(&key, Some(0..head_len))
            .await?
            .try_fold(Vec::new(), |mut acc, chunk| async move {
                acc.extend_from_slice(&chunk);
                Ok(acc)
            })
            .await?;
        let ext = filename::extension(&session.name);
        let kind = sniff::detect_with_hint(&head, ext.as_deref());
        sniff::check(kind, &head, ext.as_deref()).map_err(|m| {
            DirectError::Refused(UploadError::Type {
                code: m.code(),
                detail: m.to_string(),
            })
        })?;
        if !bucket.policy.allows(kind.name()) {
            return Err(DirectError::Refused(UploadError::NotAllowed(
                kind.name().to_owned(),
            )));
        }
        let (size, sha256) = self.hash_object(&key).await?;
        if size != session.size {
            return Err(DirectError::SizeMismatch {
                declared: session.size,
                actual: size,
            });
        }
        let new = NewFile {
            id: session.id,
            bucket: session.bucket.clone(),
            name: session.name.clone(),
            size,
            kind: kind.name().to_owned(),
            mime: kind.mime().to_owned(),
            sha256,
            owner: session.owner.clone(),
            metadata: session.metadata.clone(),
            created_at: now(),
            encryption: None,
        };
        let audit = origin.event(
            "file.upload",
            session.id,
            json!({
                "bucket": new.bucket, "name": new.name, "size": new.size,
                "type": new.kind, "sha256": new.sha256, "direct": true,
            }),
        );
        Ok(self
            .store()
            .insert_file(new, self.process_job(session.id), audit)
            .await?)
    }

    /// The object's size and hex SHA-256, read as a stream.
    async fn hash_object(&self, key: &str) -> io::Result<(u64, String)> {
        let mut stream = self.storage.read(key, None).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((size, hex::encode(hasher.finalize())))
    }
}
