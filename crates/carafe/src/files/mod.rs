//! Files: uploads checked against their bucket's policy, stored durably, processed by a job
//! (virus scan, metadata stripping, thumbnails) and served with ranges, validators and signed
//! links. This module holds the rules (the web layer, `api::files`, only translates HTTP),
//! grouped by what happens to the bytes: they are received (`receive`), checked (`check`),
//! kept (`store`), served (`serve`), and at last removed (`lifecycle`). This file is the
//! `Files` service they all belong to; `buckets` holds the policies they follow, and
//! `records` the files' rows as callers may see them.
//!
//! An upload's bytes go to `incoming/<id>` and its row (status `processing`) is written with
//! its processing job in one transaction. Only processing moves the bytes to `objects/<id>`
//! (or to `quarantine/<id>`), so nothing unscanned is ever served, and a crash at any point
//! leaves either a row whose job will finish the work or an `incoming/` object that the sweep
//! removes.

pub mod buckets;
pub mod check;
pub mod lifecycle;
pub mod receive;
pub mod records;
pub mod serve;
mod settings;
pub mod store;

pub use settings::Settings;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use carafe_core::files::{Bucket, BucketName, FileId, FileRecord};
use carafe_core::jobs::{Backoff, NewJob, QueueName};
use carafe_core::time::now;
use carafe_core::{Store, StoreResult};
use moka::future::Cache;
use serde_json::json;

use crate::audit::writer::AuditWriter;
use crate::jobs::Jobs;
use crate::secrets::Secrets;
use check::scan::{self, Clamd};
use serve::download;
use serve::links::LinkSigner;
use store::master_keys;
use store::storage::Storage;
use store::{crypto, sealed};

/// A file and its content as downloads serve it.
#[derive(Debug)]
pub struct Servable {
    pub file: Arc<FileRecord>,
    pub content: Arc<download::Content>,
    /// `file:<id>`, as audit events name the file (made once, not for every download).
    pub audit_target: String,
}

impl Servable {
    fn new(file: Arc<FileRecord>) -> Servable {
        let content = download::Content::new(
            object_key(file.id),
            file.size,
            &file.sha256,
            file.kind.clone(),
            file.mime.clone(),
            file.name.clone(),
            file.updated_at.into(),
        );
        Servable {
            audit_target: format!("file:{}", file.id),
            file,
            content: Arc::new(content),
        }
    }
}

/// Longest a request may wait for its upload's processing to end.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The queue of Carafe's own file work (processing and purging).
pub const QUEUE: &str = "carafe.files";

pub fn incoming_key(id: FileId) -> String {
    format!("incoming/{id}")
}

pub fn object_key(id: FileId) -> String {
    format!("objects/{id}")
}

pub fn quarantine_key(id: FileId) -> String {
    format!("quarantine/{id}")
}

pub fn thumbs_prefix(id: FileId) -> String {
    format!("thumbs/{id}")
}

pub fn thumb_key(id: FileId, name: &str) -> String {
    format!("thumbs/{id}/{name}")
}

pub struct Files {
    store: Arc<dyn Store>,
    jobs: Arc<Jobs>,
    pub storage: Storage,
    pub scanner: Option<Clamd>,
    pub links: LinkSigner,
    /// Master keys that wrap the data keys of encrypted files.
    pub keys: master_keys::MasterKeys,
    pub settings: crate::files::Settings,
    /// Download events are many: they are written in batches.
    pub audit: AuditWriter,
    /// Ready files by id, so downloads skip the database. Short-lived: another instance's
    /// deletion is seen within its time to live.
    records: Cache<FileId, Arc<Servable>>,
    /// Whole small objects by key, so hot downloads skip the disk.
    content: Cache<String, Bytes>,
    buckets: Cache<BucketName, Arc<Bucket>>,
}

/// What the files capability is opened with: its settings, and where the configuration says
/// bytes are kept and scanned.
pub struct Setup<'a> {
    pub settings: Settings,
    /// `s3://…` or `file://…`; `None` keeps files under `data_dir`.
    pub storage_url: Option<&'a str>,
    pub data_dir: &'a std::path::Path,
    /// `tcp://host:port` or `unix:///path`; `None` scans nothing.
    pub clamd_url: Option<&'a str>,
    pub keys: master_keys::MasterKeys,
    pub secrets: &'a Secrets,
}

impl Files {
    pub fn new(setup: Setup<'_>, store: Arc<dyn Store>, jobs: Arc<Jobs>) -> anyhow::Result<Self> {
        let Setup {
            settings,
            storage_url,
            data_dir,
            clamd_url,
            keys,
            secrets,
        } = setup;
        let storage = Storage::open(storage_url, data_dir, store.clone())?;
        let scanner = match clamd_url {
            Some(url) => Some(Clamd::new(
                scan::parse_url(url).map_err(anyhow::Error::msg)?,
                settings.scan_timeout.0,
            )),
            None => None,
        };
        let content = Cache::builder()
            .max_capacity(settings.cache_bytes)
            .weigher(|k: &String, v: &Bytes| (k.len() + v.len()).try_into().unwrap_or(u32::MAX))
            .time_to_live(Duration::from_secs(300))
            .build();
        for (name, policy) in &settings.buckets {
            let errors = buckets::validate(policy, &settings, keys.can_encrypt());
            if let Some(e) = errors.first() {
                anyhow::bail!(
                    "files.buckets.{name}{}: {}",
                    e.field.replace('/', "."),
                    e.message
                );
            }
        }
        Ok(Files {
            audit: AuditWriter::spawn(store.clone()),
            store,
            jobs,
            storage,
            scanner,
            links: LinkSigner::new(secrets.link_key()),
            keys,
            records: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
            content,
            buckets: Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(5))
                .build(),
            settings,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn jobs(&self) -> &Arc<Jobs> {
        &self.jobs
    }

    pub fn queue() -> QueueName {
        QueueName::parse(QUEUE).expect("valid queue name")
    }

    /// A job on Carafe's files queue. Processing retries with backoff (the scanner may be
    /// down for a while); purging retries until the storage answers.
    pub fn job(&self, args: serde_json::Value, max_attempts: u32) -> NewJob {
        let at = now();
        NewJob {
            queue: Self::queue(),
            args,
            priority: 5,
            max_attempts,
            backoff: Some(Backoff::Exponential {
                base_ms: self.settings.scan_retry_base.0.as_millis() as u64,
                max_ms: 600_000,
                jitter: 0.2,
            }),
            timeout: Duration::from_secs(3600),
            scheduled_at: at,
            unique: None,
            owner: None,
            target: None,
            created_at: at,
        }
    }

    pub fn process_job(&self, id: FileId) -> NewJob {
        self.job(json!({"process": id}), self.settings.scan_attempts)
    }

    pub fn purge_job(&self, id: FileId) -> NewJob {
        self.job(json!({"purge": id}), 25)
    }

    /// Wakes this process's workers for the files queue (other instances poll or are told
    /// through the database).
    pub fn wake(&self) {
        self.jobs.bus().publish(&crate::jobs::queue_topic(QUEUE));
    }

    /// A file that is not deleted; ready files come from a short-lived cache.
    pub async fn file(&self, id: FileId) -> StoreResult<Option<Arc<FileRecord>>> {
        Ok(self.servable(id).await?.map(|s| s.file.clone()))
    }

    /// A file that is not deleted, with its content ready to serve; ready files come from a
    /// short-lived cache.
    pub async fn servable(&self, id: FileId) -> StoreResult<Option<Arc<Servable>>> {
        if let Some(s) = self.records.get(&id).await {
            return Ok(Some(s));
        }
        let Some(file) = self.store.get_file(id).await? else {
            return Ok(None);
        };
        let servable = Arc::new(Servable::new(Arc::new(file)));
        if servable.file.status == carafe_core::files::FileStatus::Ready {
            self.records.insert(id, servable.clone()).await;
        }
        Ok(Some(servable))
    }

    /// The data key of an encrypted file (`None` for a file stored in the clear).
    pub fn data_key(
        &self,
        file: &FileRecord,
    ) -> Result<Option<crypto::DataKey>, master_keys::KeyError> {
        file.encryption
            .as_ref()
            .map(|e| self.keys.unwrap(e))
            .transpose()
    }

    pub async fn forget_file(&self, id: FileId) {
        self.records.invalidate(&id).await;
    }

    /// An object's plaintext from the memory cache, if it is small enough to be kept there.
    pub async fn cached_content(
        &self,
        key: &str,
        size: u64,
        dek: Option<&crypto::DataKey>,
    ) -> Option<Bytes> {
        if size > self.settings.cache_max_object || self.settings.cache_bytes == 0 {
            return None;
        }
        if let Some(b) = self.content.get(key).await {
            return Some(b);
        }
        let bytes = sealed::read_all(&self.storage, key, dek, size).await.ok()?;
        if bytes.len() as u64 != size {
            return None;
        }
        self.content.insert(key.to_owned(), bytes.clone()).await;
        Some(bytes)
    }

    /// The whole content of a ready file (a mail attachment); `None` when the file is gone,
    /// deleted or no longer ready (quarantined since).
    pub async fn ready_content(&self, id: FileId) -> std::io::Result<Option<Bytes>> {
        let file = self
            .store
            .get_file(id)
            .await
            .map_err(std::io::Error::other)?;
        let Some(file) = file.filter(|f| {
            f.deleted_at.is_none() && f.status == carafe_core::files::FileStatus::Ready
        }) else {
            return Ok(None);
        };
        let dek = self.data_key(&file).map_err(std::io::Error::other)?;
        sealed::read_all(&self.storage, &object_key(id), dek.as_ref(), file.size)
            .await
            .map(Some)
    }

    pub async fn forget_content(&self, key: &str) {
        self.content.invalidate(key).await;
    }

    /// Waits up to `wait` (at most a minute) for a new file's processing job to end; returns
    /// the file as it is then.
    pub async fn wait_processed(
        &self,
        file: FileRecord,
        wait: Duration,
    ) -> StoreResult<FileRecord> {
        let wait = wait.min(MAX_WAIT);
        let Some(job) = file.job.filter(|_| !wait.is_zero()) else {
            return Ok(file);
        };
        let deadline = tokio::time::Instant::now() + wait;
        let topic = crate::jobs::job_topic(job);
        let mut file = file;
        loop {
            let mut sub = self.jobs.bus().subscribe();
            if let Some(current) = self.store.get_file(file.id).await? {
                file = current;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if file.status != carafe_core::files::FileStatus::Processing || left.is_zero() {
                return Ok(file);
            }
            // Polling covers wake-ups lost between instances.
            sub.wait_for(&topic, left.min(self.jobs.settings().poll_interval.0))
                .await;
        }
    }
}
