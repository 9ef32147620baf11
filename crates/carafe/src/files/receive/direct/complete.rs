//! Ending a direct upload: on local disk the bytes arrive at Carafe's own signed URL, and
//! `complete` — on any storage — checks what actually arrived (its size, its type from the
//! first bytes against the name and bucket, its hash) before the file is recorded with its
//! processing job like any other upload.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use carafe_core::files::{Bucket, DirectState, DirectUpload, FileId, FileRecord, NewFile};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use futures::{Stream, TryStreamExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::signing::{self, PutQuery};
use super::{DirectError, direct_key};
use crate::context::{Origin, Principal};
use crate::files::check::sniff;
use crate::files::receive::accept::UploadError;
use crate::files::receive::body::{HEAD_BYTES, ReceiveError, receive};
use crate::files::receive::filename;
use crate::files::{Files, incoming_key};

impl Files {
    /// The session, if it is open and not expired.
    async fn open_direct(&self, id: FileId) -> Result<DirectUpload, DirectError> {
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

    /// Stores the bytes of a session on local disk, sent to the signed URL `start_direct`
    /// gave (there is no other authentication). The body must be exactly the declared size.
    pub async fn put_direct<S, E>(
        &self,
        id: FileId,
        signature: &PutQuery,
        body: S,
    ) -> Result<(), DirectError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        signing::verify(self.links.key(), id, signature, now().unix_timestamp())
            .map_err(DirectError::Url)?;
        if self.storage.s3().is_some() {
            return Err(DirectError::NotFound);
        }
        let session = self.open_direct(id).await?;
        let declared = session.size;
        let received = receive(body, &self.storage.temp_dir(), declared)
            .await
            .map_err(|e| match e {
                ReceiveError::TooLarge { .. } => DirectError::SizeExceeded { declared },
                ReceiveError::Body(_) => DirectError::BodyIncomplete,
                ReceiveError::Io(e) => DirectError::Storage(e),
            })?;
        if received.size != declared {
            return Err(DirectError::SizeMismatch {
                declared,
                actual: received.size,
            });
        }
        // Held while storing, so a `complete` can never check bytes this PUT then replaces.
        let store = self.store();
        if !store
            .transition_direct(id, DirectState::Open, DirectState::Completing)
            .await?
        {
            return Err(DirectError::InProgress);
        }
        let stored = self.storage.put_received(&incoming_key(id), received).await;
        store
            .transition_direct(id, DirectState::Completing, DirectState::Open)
            .await?;
        Ok(stored?)
    }

    /// Completes a session the caller may see: assembles the parts (multipart), checks what
    /// arrived and records the file, then waits up to `wait` for its processing. `parts` are
    /// `(part_number, etag)`. Refused bytes are deleted and the session forgotten; a
    /// retryable failure (missing bytes, bad part list, storage down) reopens it.
    pub async fn complete_direct(
        &self,
        principal: &Principal,
        id: FileId,
        parts: Vec<(u32, String)>,
        origin: Origin,
        wait: Duration,
    ) -> Result<FileRecord, DirectError> {
        principal.require(Scope::Files)?;
        // Only the owner (or a key) may learn the session exists.
        match self.store().get_direct(id).await? {
            Some(s) if principal.may_see(Scope::Files, s.owner.as_deref()) => {}
            _ => return Err(DirectError::NotFound),
        }
        let session = self.open_direct(id).await?;
        let file = self.complete_session(session, parts, origin).await?;
        Ok(self.wait_processed(file, wait).await?)
    }

    async fn complete_session(
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
