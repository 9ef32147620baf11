//! The file jobs on Carafe's `carafe.files` queue: processing an upload (virus scan, metadata
//! stripping, image checks and thumbnails, then promotion to `objects/`) and purging a deleted
//! file's bytes. Each step can be re-run: a retried or rescued job starts again from whatever
//! the previous attempt left, and only the final `finish_processing` changes what clients see.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use carafe_core::files::{
    Bucket, BucketPolicy, FileId, FileRecord, FileStatus, ProcessingOutcome, ScanPolicy,
    ScanResult, Thumbnail,
};
use carafe_core::jobs::Progress;
use carafe_core::time::now;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::io::StreamReader;

use super::images::{self, ImageKind, Limits};
use super::scan::{ScanError, Verdict};
use crate::context::Actor;
use crate::files::store::crypto::DataKey;
use crate::files::store::sealed;
use crate::files::{Files, incoming_key, object_key, quarantine_key, thumb_key, thumbs_prefix};
use crate::jobs::runner::{JobContext, JobError, JobHandler};

/// Images larger than this are not loaded for stripping or thumbnails; they are rejected.
const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

/// Runs the jobs of the files queue.
pub struct FileJobs {
    files: Arc<Files>,
}

impl FileJobs {
    pub fn new(files: Arc<Files>) -> Self {
        FileJobs { files }
    }
}

#[async_trait]
impl JobHandler for FileJobs {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        let id = |key: &str| {
            ctx.args()
                .get(key)
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<FileId>().ok())
        };
        if let Some(file) = id("process") {
            return self.process(file, &ctx).await;
        }
        if let Some(file) = id("purge") {
            return self.purge(file).await;
        }
        Err(JobError::abort("not a file job"))
    }
}

fn system() -> Actor {
    Actor {
        id: "system".into(),
        request_id: None,
    }
}

fn retry(what: &str, e: impl std::fmt::Display) -> JobError {
    JobError::retry(format!("{what}: {e}"))
}

/// How processing ended early: with this status, code and message.
struct Stop {
    status: FileStatus,
    code: &'static str,
    message: String,
}

impl Stop {
    fn rejected(code: &'static str, message: impl Into<String>) -> Self {
        Stop {
            status: FileStatus::Rejected,
            code,
            message: message.into(),
        }
    }

    fn quarantined(code: &'static str, message: impl Into<String>) -> Self {
        Stop {
            status: FileStatus::Quarantined,
            code,
            message: message.into(),
        }
    }
}

impl FileJobs {
    async fn process(&self, id: FileId, ctx: &JobContext) -> Result<Value, JobError> {
        let files = &self.files;
        let Some(file) = files
            .store()
            .get_file(id)
            .await
            .map_err(|e| retry("store", e))?
        else {
            return Ok(json!({"skipped": "deleted"}));
        };
        if file.status != FileStatus::Processing {
            return Ok(json!({"skipped": file.status.as_str()}));
        }
        let bucket = files
            .bucket(&file.bucket)
            .await
            .map_err(|e| retry("store", e))?;
        let policy = bucket
            .as_deref()
            .map_or_else(BucketPolicy::default, |b: &Bucket| b.policy.clone());
        // An unknown master key may be a configuration being fixed: retry.
        let dek = files.data_key(&file).map_err(|e| retry("encryption", e))?;
        let dek = dek.as_ref();
        // An earlier attempt may have promoted the bytes already.
        let source = if files
            .storage
            .size(&incoming_key(id))
            .await
            .map_err(|e| retry("storage", e))?
            .is_some()
        {
            incoming_key(id)
        } else {
            object_key(id)
        };
        let step = |n: u64, stage: &str| Progress {
            current: n,
            total: Some(3),
            stage: Some(stage.into()),
            message: None,
        };
        let _ = ctx.progress(step(0, "scan")).await;
        let scan = match self.scan(&file, &policy, &source, dek, ctx).await? {
            Ok(scan) => scan,
            Err((stop, scan)) => return self.stop(&file, &source, stop, scan).await,
        };
        let _ = ctx.progress(step(1, "images")).await;
        let (rewritten, thumbnails) = match self.images(&file, &policy, &source, dek).await? {
            Ok(done) => done,
            Err(stop) => return self.stop(&file, &source, stop, Some(scan)).await,
        };
        let _ = ctx.progress(step(2, "store")).await;
        let (size, sha256) = match rewritten {
            Some(bytes) => {
                let digest = hex::encode(Sha256::digest(&bytes));
                let size = bytes.len() as u64;
                sealed::put(&files.storage, &object_key(id), dek, bytes)
                    .await
                    .map_err(|e| retry("storage", e))?;
                if source != object_key(id) {
                    let _ = files.storage.delete(&source).await;
                }
                (Some(size), Some(digest))
            }
            None => {
                if source != object_key(id) {
                    files
                        .storage
                        .rename(&source, &object_key(id))
                        .await
                        .map_err(|e| retry("storage", e))?;
                }
                (None, None)
            }
        };
        let audit = vec![system().event("file.scan", Some(format!("file:{id}")), json!(scan))];
        let outcome = ProcessingOutcome {
            status: FileStatus::Ready,
            error_code: None,
            error: None,
            scan: Some(scan),
            size,
            sha256,
            thumbnails,
            at: now(),
        };
        files
            .store()
            .finish_processing(id, outcome, audit)
            .await
            .map_err(|e| retry("store", e))?;
        Ok(json!({"file": id, "status": "ready"}))
    }

    /// The scan verdict, or how processing must stop. `Err` only for a retry.
    #[allow(clippy::type_complexity)]
    async fn scan(
        &self,
        file: &FileRecord,
        policy: &BucketPolicy,
        source: &str,
        dek: Option<&DataKey>,
        ctx: &JobContext,
    ) -> Result<Result<ScanResult, (Stop, Option<ScanResult>)>, JobError> {
        let unscanned = |reason: &str| {
            Ok(Ok(ScanResult::Unscanned {
                reason: reason.into(),
            }))
        };
        if policy.scan == ScanPolicy::Off {
            return unscanned("the bucket does not scan");
        }
        let verdict = match &self.files.scanner {
            Some(scanner) => {
                let storage = &self.files.storage;
                let size = sealed::plain_size(storage, source, dek)
                    .await
                    .map_err(|e| retry("storage", e))?
                    .unwrap_or(file.size);
                let stream = sealed::read(storage, source, dek, None, size)
                    .await
                    .map_err(|e| retry("storage", e))?;
                scanner.scan(StreamReader::new(stream)).await
            }
            // A bucket that requires scanning is never served unscanned: a missing scanner
            // (removed from the configuration since the upload) is one that cannot be reached.
            None if policy.scan.needs_scanner() => {
                Err(ScanError::Unavailable("no scanner is configured".into()))
            }
            None => return unscanned("no scanner is configured"),
        };
        let failure = match verdict {
            Ok(Verdict::Clean) => return Ok(Ok(ScanResult::Clean)),
            Ok(Verdict::Infected { signature }) => {
                let stop = Stop::quarantined("malware_found", format!("found {signature}"));
                return Ok(Err((stop, Some(ScanResult::Infected { signature }))));
            }
            Err(e @ ScanError::Unavailable(_)) if !ctx.is_last_attempt() => {
                return Err(retry("scanner", e));
            }
            Err(e) => e,
        };
        let (code, reason) = match &failure {
            ScanError::Unavailable(_) if self.files.scanner.is_none() => {
                ("scanner_unavailable", "no scanner is configured")
            }
            ScanError::Unavailable(_) => {
                ("scanner_unavailable", "the scanner could not be reached")
            }
            ScanError::SizeLimit => (
                "scan_size_limit",
                "the file is larger than the scanner accepts",
            ),
            ScanError::Failed(_) => ("scan_failed", "the scanner could not scan the file"),
        };
        tracing::warn!(file = %file.id, error = %failure, "file scan failed");
        if policy.scan.serves_unscannable() {
            return unscanned(reason);
        }
        Ok(Err((Stop::quarantined(code, reason), None)))
    }

    /// Strips metadata and makes thumbnails of images. Returns the rewritten bytes (when
    /// stripping changed them) and the thumbnails, or how processing must stop.
    #[allow(clippy::type_complexity)]
    async fn images(
        &self,
        file: &FileRecord,
        policy: &BucketPolicy,
        source: &str,
        dek: Option<&DataKey>,
    ) -> Result<Result<(Option<Bytes>, Vec<Thumbnail>), Stop>, JobError> {
        let kind = match file.kind.as_str() {
            "jpeg" => ImageKind::Jpeg,
            "png" => ImageKind::Png,
            "webp" => ImageKind::Webp,
            "gif" => ImageKind::Gif,
            _ => return Ok(Ok((None, Vec::new()))),
        };
        if file.size > MAX_IMAGE_BYTES {
            return Ok(Err(Stop::rejected(
                "image_too_large",
                "images may be at most 64 MiB",
            )));
        }
        let storage = &self.files.storage;
        let size = sealed::plain_size(storage, source, dek)
            .await
            .map_err(|e| retry("storage", e))?
            .unwrap_or(file.size)
            .min(MAX_IMAGE_BYTES);
        let bytes = sealed::read_all(storage, source, dek, size)
            .await
            .map_err(|e| retry("storage", e))?;
        let strip = policy.strip_metadata && kind != ImageKind::Gif;
        let specs = policy.thumbnails.clone();
        let id = file.id;
        let work = tokio::task::spawn_blocking(move || {
            let limits = Limits::default();
            images::dimensions(&bytes, &limits)?;
            let stripped = if strip {
                Some(images::strip_metadata(kind, bytes.clone())?)
            } else {
                None
            };
            let mut thumbs = Vec::with_capacity(specs.len());
            for spec in &specs {
                let t = images::thumbnail(&bytes, spec.width, spec.height, &limits)?;
                thumbs.push((spec.name.clone(), t));
            }
            Ok::<_, images::ImageError>((stripped, thumbs))
        })
        .await
        .map_err(|e| retry("image worker", e))?;
        let (stripped, thumbs) = match work {
            Ok(done) => done,
            Err(e) => return Ok(Err(Stop::rejected(e.code(), e.to_string()))),
        };
        let mut made = Vec::with_capacity(thumbs.len());
        for (name, t) in thumbs {
            let bytes = Bytes::from(t.bytes);
            made.push(Thumbnail {
                name: name.clone(),
                width: t.width,
                height: t.height,
                size: bytes.len() as u64,
                kind: t.kind.name().into(),
                sha256: hex::encode(Sha256::digest(&bytes)),
            });
            // Thumbnails of an encrypted file are encrypted with its data key.
            sealed::put(storage, &thumb_key(id, &name), dek, bytes)
                .await
                .map_err(|e| retry("storage", e))?;
        }
        Ok(Ok((stripped, made)))
    }

    /// Ends processing early: quarantined bytes are moved aside, rejected ones removed.
    async fn stop(
        &self,
        file: &FileRecord,
        source: &str,
        stop: Stop,
        scan: Option<ScanResult>,
    ) -> Result<Value, JobError> {
        let files = &self.files;
        let id = file.id;
        match stop.status {
            FileStatus::Quarantined => files
                .storage
                .rename(source, &quarantine_key(id))
                .await
                .map_err(|e| retry("storage", e))?,
            _ => files
                .storage
                .delete(source)
                .await
                .map_err(|e| retry("storage", e))?,
        }
        let _ = files.storage.delete_prefix(&thumbs_prefix(id)).await;
        let target = Some(format!("file:{id}"));
        let mut audit = Vec::new();
        if let Some(scan) = &scan {
            audit.push(system().event("file.scan", target.clone(), json!(scan)));
        }
        let action = match stop.status {
            FileStatus::Quarantined => "file.quarantine",
            _ => "file.reject",
        };
        audit.push(system().event(
            action,
            target,
            json!({"code": stop.code, "reason": stop.message}),
        ));
        let outcome = ProcessingOutcome {
            status: stop.status,
            error_code: Some(stop.code.into()),
            error: Some(stop.message),
            scan,
            size: None,
            sha256: None,
            thumbnails: Vec::new(),
            at: now(),
        };
        files
            .store()
            .finish_processing(id, outcome, audit)
            .await
            .map_err(|e| retry("store", e))?;
        Ok(json!({"file": id, "status": stop.status.as_str()}))
    }

    async fn purge(&self, id: FileId) -> Result<Value, JobError> {
        let files = &self.files;
        for key in [object_key(id), incoming_key(id), quarantine_key(id)] {
            files
                .storage
                .delete(&key)
                .await
                .map_err(|e| retry("storage", e))?;
            files.forget_content(&key).await;
        }
        files
            .storage
            .delete_prefix(&thumbs_prefix(id))
            .await
            .map_err(|e| retry("storage", e))?;
        files.forget_file(id).await;
        files
            .store()
            .purge_file(id)
            .await
            .map_err(|e| retry("store", e))?;
        Ok(json!({"purged": id}))
    }
}
