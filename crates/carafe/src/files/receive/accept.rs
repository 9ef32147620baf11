//! Accepting an upload: who may upload into which bucket and whose the file will be, then,
//! once its bytes are received, its name is sanitised, its type decided from its bytes and
//! checked against its extension and its bucket, and only then is it stored and recorded with
//! its processing job. Nothing the client says about the type is believed.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use carafe_core::StoreError;
use carafe_core::files::{Bucket, BucketName, FileEncryption, FileId, FileRecord, NewFile};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use serde_json::{Value, json};

use super::filename;
use crate::context::{Denied, FieldError, Origin, Principal};
use crate::files::check::sniff::{self, Kind};
use crate::files::store::sealed;
use crate::files::store::storage::temp::Received;
use crate::files::{Files, incoming_key};

/// What the client said about the upload besides its bytes.
#[derive(Debug, Clone)]
pub struct UploadMeta {
    pub bucket: Arc<Bucket>,
    pub name: Option<String>,
    pub owner: Option<String>,
    pub metadata: Value,
    pub origin: Origin,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The owner or the bucket's name is not acceptable.
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(FieldError),
    #[error("there is no bucket `{0}`")]
    NoBucket(BucketName),
    #[error("the file is empty")]
    Empty,
    /// The bytes and the name disagree, or the content is unsafe; `code` says how.
    #[error("{detail}")]
    Type { code: &'static str, detail: String },
    #[error("the bucket does not accept `{0}` files")]
    NotAllowed(String),
    #[error("the file could not be stored")]
    Storage(#[source] std::io::Error),
    /// The bucket encrypts but no master key is configured.
    #[error("the bucket encrypts files but this server has no master key")]
    NoMasterKey,
    /// The bucket requires virus scanning but no scanner is configured.
    #[error("the bucket requires virus scanning but this server has no scanner")]
    ScannerMissing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An upload request's bytes as the web layer reads them (a form, or the raw body), once
/// the bucket is known: received into a temporary file in `dir`, refused past `limit` bytes.
pub trait UploadBody {
    /// Why the body could not be read (the web layer's own answer).
    type Error;

    fn receive(
        self,
        dir: &Path,
        limit: u64,
    ) -> impl Future<Output = Result<BodyRead, Self::Error>> + Send;
}

/// A received request body, and what it said about the file.
#[derive(Debug)]
pub struct BodyRead {
    pub received: Received,
    pub name: Option<String>,
    pub metadata: Value,
}

/// An upload request besides its body.
#[derive(Debug)]
pub struct UploadRequest {
    /// The bucket's name (default `default`).
    pub bucket: Option<String>,
    /// The end user the file is to belong to (API keys only: a token's user owns its uploads).
    pub owner: Option<String>,
    pub origin: Origin,
    /// How long to wait for processing before answering (at most a minute).
    pub wait: Duration,
}

/// Why `Files::upload` failed: the upload was refused, or its body could not be read.
#[derive(Debug)]
pub enum UploadFailed<E> {
    Refused(UploadError),
    Body(E),
}

impl<E> From<UploadError> for UploadFailed<E> {
    fn from(e: UploadError) -> Self {
        UploadFailed::Refused(e)
    }
}

/// Whose an upload's file will be: a token's user owns what it uploads; an API key may name
/// an end user.
pub(super) fn owner_for(
    principal: &Principal,
    requested: Option<String>,
) -> Result<Option<String>, UploadError> {
    let owner = match principal {
        Principal::User(u) => Some(u.id.clone()),
        Principal::Key(_) => requested,
    };
    if owner
        .as_ref()
        .is_some_and(|o| o.is_empty() || o.len() > 200)
    {
        return Err(UploadError::Invalid(FieldError::new(
            "owner",
            "1-200 characters",
        )));
    }
    Ok(owner)
}

impl Files {
    /// Receives, checks, stores and records an upload, then waits up to `request.wait` for
    /// its processing. The bucket is checked before any of the body is read.
    pub async fn upload<B: UploadBody>(
        &self,
        principal: &Principal,
        request: UploadRequest,
        body: B,
    ) -> Result<FileRecord, UploadFailed<B::Error>> {
        principal.require(Scope::Files).map_err(UploadError::from)?;
        let owner = owner_for(principal, request.owner)?;
        let bucket = self.named_upload_bucket(request.bucket.as_deref()).await?;
        let limit = bucket.policy.max_size.min(self.settings.max_upload_bytes);
        let read = body
            .receive(&self.storage.temp_dir(), limit)
            .await
            .map_err(UploadFailed::Body)?;
        let meta = UploadMeta {
            bucket,
            name: read.name,
            owner,
            metadata: read.metadata,
            origin: request.origin,
        };
        let file = self.accept(read.received, meta).await?;
        let file = self.wait_processed(file, request.wait).await;
        Ok(file.map_err(UploadError::from)?)
    }

    /// The bucket an upload names (`None`: the `default` bucket), if it can take uploads now.
    pub(super) async fn named_upload_bucket(
        &self,
        name: Option<&str>,
    ) -> Result<Arc<Bucket>, UploadError> {
        let name = BucketName::parse(name.unwrap_or(BucketName::DEFAULT))
            .map_err(|e| UploadError::Invalid(FieldError::new("bucket", e)))?;
        match self.upload_bucket(&name).await? {
            Some(bucket) => Ok(bucket),
            None => Err(UploadError::NoBucket(name)),
        }
    }

    /// The bucket named for an upload (`None` if there is none), checked that it can take
    /// uploads now. Every upload path resolves its bucket here before it reads any of the
    /// body: a bucket that requires scanning refuses uploads while no scanner is configured,
    /// rather than keeping files it could never serve.
    pub(super) async fn upload_bucket(
        &self,
        name: &BucketName,
    ) -> Result<Option<Arc<Bucket>>, UploadError> {
        let Some(bucket) = self.bucket(name).await? else {
            return Ok(None);
        };
        if bucket.policy.scan.needs_scanner() && self.scanner.is_none() {
            return Err(UploadError::ScannerMissing);
        }
        Ok(Some(bucket))
    }

    /// Validates a received upload against its bucket, stores it and records it with its
    /// processing job. On any refusal the received file is removed.
    pub(super) async fn accept(
        &self,
        received: Received,
        meta: UploadMeta,
    ) -> Result<FileRecord, UploadError> {
        if received.size == 0 {
            return Err(UploadError::Empty);
        }
        let name = filename::sanitize(meta.name.as_deref().unwrap_or(""));
        let ext = filename::extension(&name);
        let kind = sniff::detect_with_hint(&received.head, ext.as_deref());
        sniff::check(kind, &received.head, ext.as_deref()).map_err(|m| UploadError::Type {
            code: m.code(),
            detail: m.to_string(),
        })?;
        if !meta.bucket.policy.allows(kind.name()) {
            return Err(UploadError::NotAllowed(kind.name().to_owned()));
        }
        // A name without an extension gets its type's, so downloads open in the right program.
        let name = match ext {
            Some(_) => name,
            None => format!("{name}.{}", kind.extensions()[0]),
        };
        self.record(received, meta, name, kind).await
    }

    async fn record(
        &self,
        received: Received,
        meta: UploadMeta,
        name: String,
        kind: Kind,
    ) -> Result<FileRecord, UploadError> {
        let id = FileId::new();
        let (received, encryption) = if meta.bucket.policy.encrypt {
            let (received, enc) = self.encrypt_received(received).await?;
            (received, Some(enc))
        } else {
            (received, None)
        };
        let new = NewFile {
            id,
            bucket: meta.bucket.name.clone(),
            name,
            size: received.size,
            kind: kind.name().to_owned(),
            mime: kind.mime().to_owned(),
            sha256: received.sha256.clone(),
            owner: meta.owner,
            metadata: meta.metadata,
            created_at: now(),
            encryption,
        };
        let audit = meta.origin.event(
            "file.upload",
            id,
            json!({
                "bucket": new.bucket, "name": new.name, "size": new.size,
                "type": new.kind, "sha256": new.sha256,
            }),
        );
        let key = incoming_key(id);
        self.storage
            .put_received(&key, received)
            .await
            .map_err(UploadError::Storage)?;
        match self
            .store()
            .insert_file(new, self.process_job(id), audit)
            .await
        {
            Ok(file) => {
                self.wake();
                Ok(file)
            }
            Err(e) => {
                // Not recorded: the bytes must not linger.
                let _ = self.storage.delete(&key).await;
                Err(e.into())
            }
        }
    }

    /// Encrypts a received upload under a new data key into another temporary file, before
    /// any of it reaches storage.
    async fn encrypt_received(
        &self,
        received: Received,
    ) -> Result<(Received, FileEncryption), UploadError> {
        let (dek, enc) = self
            .keys
            .new_data_key()
            .map_err(|_| UploadError::NoMasterKey)?;
        let sealed = sealed::seal_received(&self.storage.temp_dir(), &dek, received)
            .await
            .map_err(UploadError::Storage)?;
        Ok((sealed, enc))
    }
}
