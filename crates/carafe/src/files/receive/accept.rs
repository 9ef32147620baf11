//! Accepting a received upload: its name is sanitised, its type decided from its bytes and
//! checked against its extension and its bucket, and only then is it stored and recorded with
//! its processing job. Nothing the client says about the type is believed.

use std::sync::Arc;

use carafe_core::StoreError;
use carafe_core::files::{Bucket, BucketName, FileEncryption, FileId, FileRecord, NewFile};
use carafe_core::time::now;
use serde_json::{Value, json};

use super::filename;
use crate::context::Origin;
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

impl Files {
    /// The bucket named for an upload (`None` if there is none), checked that it can take
    /// uploads now. Every upload path resolves its bucket here before it reads any of the
    /// body: a bucket that requires scanning refuses uploads while no scanner is configured,
    /// rather than keeping files it could never serve.
    pub async fn upload_bucket(
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
    pub async fn accept(
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
