//! The store traits. Each capability owns one trait; `Store` composes them with what the server
//! needs to operate a backend (ping, migrations, pool figures). The server holds an
//! `Arc<dyn Store>` and never learns which database is behind it.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::audit::{AuditEvent, AuditFilter, NewAuditEvent};
use crate::files::{
    Advance, Bucket, BucketName, DirectState, DirectUpload, FileEncryption, FileFilter, FileId,
    FileRecord, MultipartRecord, NewFile, NewUpload, ProcessingOutcome, Upload, UploadChunk,
    UploadEnd, UploadId,
};
use crate::idempotency::{Reservation, Reserve};
use crate::jobs::{
    Advanced, Claim, ClaimedJob, Completion, Failure, FailureOutcome, Fenced, Heartbeat,
    HeartbeatAck, Inserted, Job, JobEvent, JobFilter, JobId, NewJob, QueueLimits, QueueName,
    QueueStats, Schedule, SweepPage, Workflow, WorkflowId, WorkflowKind,
};
use crate::keys::{ApiKey, KeyHash, KeyId, NewApiKey};
use crate::page::{Page, PageRequest};

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts a key and its audit event in one transaction.
    async fn insert_key(&self, key: NewApiKey, audit: NewAuditEvent) -> StoreResult<ApiKey>;
    /// Finds a key, revoked or not, by the hash of its text.
    async fn find_key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<ApiKey>>;
    async fn get_key(&self, id: KeyId) -> StoreResult<Option<ApiKey>>;
    /// Keys in id (creation) order; `after` is a key id.
    async fn list_keys(&self, page: &PageRequest) -> StoreResult<Page<ApiKey>>;
    /// Marks a key revoked (idempotently: a revoked key keeps its first revocation time) and
    /// writes the audit event, in one transaction. `None` when no such key exists.
    async fn revoke_key(
        &self,
        id: KeyId,
        at: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<Option<ApiKey>>;
    async fn count_active_keys(&self) -> StoreResult<u64>;
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Takes the key if it is free, expired, or held by a crashed request with the same
    /// fingerprint whose lock has lapsed, under a new random token; otherwise reports what
    /// holds it.
    async fn reserve_idempotency(&self, req: Reserve<'_>) -> StoreResult<Reservation>;
    /// Moves the lock of a running request to `locked_until`, if `token` still holds the key
    /// unanswered. False (and nothing changes) otherwise.
    async fn renew_idempotency(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        locked_until: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Stores the answer, if `token` still holds the key unanswered. False (and nothing
    /// changes) otherwise.
    async fn complete_idempotency(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        response: Vec<u8>,
    ) -> StoreResult<bool>;
    /// Frees a key whose request failed, so that it can be retried at once, if `token` still
    /// holds it unanswered. False (and nothing changes) otherwise.
    async fn release_idempotency(&self, scope: &str, key: &str, token: &str) -> StoreResult<bool>;
    /// Deletes up to `batch` expired records; returns how many went.
    async fn prune_idempotency(&self, now: OffsetDateTime, batch: u32) -> StoreResult<u64>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<AuditEvent>;
    /// Appends several events in one transaction (batched writers, such as download logs).
    async fn append_audits(&self, events: &[NewAuditEvent]) -> StoreResult<()>;
    /// The events `filter` matches, newest first; `after` is an event id, the page holds
    /// older events. Large exports page through this with big pages rather than one query.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>>;
}

/// The durable job queue. Every change to a job also appends a `JobEvent` (numbered per job,
/// in the same transaction), so watchers can resume exactly where they left off.
///
/// Every method that can end a workflow step (complete, fail, cancel, rescue) advances the
/// step's workflow in the same transaction (see `WorkflowStore`) and answers with the steps
/// that advance started (`Advanced::started`), for the caller's wake-ups.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Inserts jobs in one transaction. A job whose unique key matches an existing job (in
    /// the key's states and period) is not inserted; that job is returned instead.
    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>>;
    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>>;
    /// The queues of those of these jobs that exist (in no particular order).
    async fn job_queues(&self, ids: &[JobId]) -> StoreResult<Vec<(JobId, QueueName)>>;
    /// Newest first; `after` is a job id, the page holds older jobs.
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
        now: OffsetDateTime,
    ) -> StoreResult<Page<Job>>;
    /// Leases up to `max` claimable jobs of a queue (none while it is paused), by priority,
    /// then time, then id. Each gets a fresh lease token; its attempt is counted.
    async fn claim_jobs(&self, claim: Claim<'_>) -> StoreResult<Vec<ClaimedJob>>;
    /// Queues holding push jobs that are due now.
    async fn push_queues(&self, now: OffsetDateTime) -> StoreResult<Vec<QueueName>>;
    /// Extends the lease and/or records progress and a checkpoint, for the lease holder only.
    async fn heartbeat_job(&self, hb: Heartbeat<'_>) -> StoreResult<Fenced<HeartbeatAck>>;
    /// Completes jobs (one transaction, which also advances their workflows); each answer is
    /// in the order of `items`.
    async fn complete_jobs(
        &self,
        items: &[Completion],
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Vec<Fenced<()>>>>;
    /// Records a failed attempt: retryable with backoff, discarded, or cancelled (the last two
    /// advance the job's workflow).
    async fn fail_job(&self, failure: Failure<'_>)
    -> StoreResult<Advanced<Fenced<FailureOutcome>>>;
    /// Cancels a waiting job at once (advancing its workflow); marks a running one
    /// `cancel_requested`. Final jobs are returned unchanged. `None` when there is no such job.
    async fn cancel_job(
        &self,
        id: JobId,
        now: OffsetDateTime,
    ) -> StoreResult<Advanced<Option<Job>>>;
    /// Makes a finished or waiting job available now (raising `max_attempts` if it was spent).
    /// Running jobs are returned unchanged.
    async fn retry_job(&self, id: JobId, now: OffsetDateTime) -> StoreResult<Option<Job>>;
    /// Treats up to `batch` running jobs whose lease expired as failed attempts (advancing the
    /// workflows of those this discards); returns the rescued jobs.
    async fn rescue_expired_jobs(
        &self,
        now: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<Advanced<Vec<JobId>>>;
    /// Deletes up to `batch` completed or cancelled jobs finalized before `finished_before`
    /// and discarded jobs finalized before `discarded_before`, with their events. Workflow
    /// steps are left alone: they go with their workflow (`WorkflowStore::prune_workflows`).
    async fn prune_jobs(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64>;
    /// A job's events with `seq > after`, oldest first.
    async fn job_events(&self, id: JobId, after: i64, limit: u32) -> StoreResult<Vec<JobEvent>>;
    /// Figures for every queue that has jobs or settings.
    async fn queue_stats(&self, now: OffsetDateTime) -> StoreResult<Vec<QueueStats>>;
    async fn set_queue_paused(&self, queue: &QueueName, paused: bool) -> StoreResult<()>;
    /// Sets (or with `None`s, clears) a queue's claim limits; claims then honour them.
    async fn set_queue_limits(&self, queue: &QueueName, limits: QueueLimits) -> StoreResult<()>;
}

/// Recurring jobs. Firing is done by the maintenance leader; `mark_fired` is fenced by the
/// tick it read, so an instance that briefly also believed itself leader changes nothing.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Creates or replaces a schedule (keeping its creation time and firing history); true
    /// when it was created.
    async fn put_schedule(&self, schedule: Schedule) -> StoreResult<bool>;
    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>>;
    /// In name order; `after` is a name.
    async fn list_schedules(&self, page: &PageRequest) -> StoreResult<Page<Schedule>>;
    /// True when it existed.
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool>;
    /// Unpaused schedules whose next tick is due, earliest first.
    async fn due_schedules(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<Schedule>>;
    /// Records a firing, if the schedule's next tick is still `expected_next`; true when it was.
    async fn mark_fired(
        &self,
        name: &str,
        expected_next: OffsetDateTime,
        fired_at: OffsetDateTime,
        job: Option<JobId>,
        next: OffsetDateTime,
    ) -> StoreResult<bool>;
}

/// Workflows of jobs (see `carafe_core::jobs::plan`). Every step is inserted when the workflow
/// is created. A workflow is advanced inside the transaction that ends one of its steps (see
/// `JobStore`), with the workflow locked, so concurrent step completions cannot both miss (or
/// both start) the next step, and no crash can come between a step's end and the advance.
#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Creates a workflow and its steps in one transaction. A chain's first step and a
    /// group's members start as their `NewJob` says; later chain steps and a chord's callback
    /// (the last step) are `pending`.
    async fn create_workflow(
        &self,
        kind: WorkflowKind,
        steps: Vec<NewJob>,
        now: OffsetDateTime,
    ) -> StoreResult<Workflow>;
    async fn get_workflow(&self, id: WorkflowId) -> StoreResult<Option<Workflow>>;
    /// One page of the sweep that finishes advances left undone by older versions (which
    /// advanced in a second transaction, after the step's): up to `batch` running workflows
    /// with ids above `after`, in id order, read without locks; which of them need an advance,
    /// and the `after` of the next page.
    async fn stalled_workflows(
        &self,
        after: Option<WorkflowId>,
        batch: u32,
    ) -> StoreResult<SweepPage>;
    /// Advances one workflow (if running), locked, in a transaction of its own; returns the
    /// steps it started.
    async fn advance_workflow(
        &self,
        id: WorkflowId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<(JobId, QueueName)>>;
    /// Deletes up to `batch` finished workflows past their retention — completed and cancelled
    /// ones finalized before `finished_before`, failed ones before `discarded_before` — with
    /// every step and the steps' events, once no step is unfinished or finalized after that
    /// cut-off. Returns how many workflows went.
    async fn prune_workflows(
        &self,
        finished_before: OffsetDateTime,
        discarded_before: OffsetDateTime,
        batch: u32,
    ) -> StoreResult<u64>;
}

/// Buckets and file rows. A file's row is written with its processing job (and audit event)
/// in one transaction, so no stored upload is ever left without the job that processes it.
#[async_trait]
pub trait FileStore: Send + Sync {
    /// Stores a bucket. With `replace`, an existing bucket's policy is replaced (keeping its
    /// creation time); without, an existing bucket is returned unchanged. True when created.
    async fn put_bucket(&self, bucket: Bucket, replace: bool) -> StoreResult<(Bucket, bool)>;
    async fn get_bucket(&self, name: &BucketName) -> StoreResult<Option<Bucket>>;
    /// Every bucket, in name order.
    async fn list_buckets(&self) -> StoreResult<Vec<Bucket>>;
    /// Records an upload whose bytes are stored, with its processing job (whose id the row
    /// keeps) and its audit event.
    async fn insert_file(
        &self,
        file: NewFile,
        job: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<FileRecord>;
    /// A file that is not deleted.
    async fn get_file(&self, id: FileId) -> StoreResult<Option<FileRecord>>;
    /// Files that are not deleted, newest first; `after` is a file id.
    async fn list_files(
        &self,
        filter: &FileFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<FileRecord>>;
    /// Ends processing with `outcome` and appends `audit`, if the file is still processing;
    /// `None` otherwise (processing already ended, or the file is gone).
    async fn finish_processing(
        &self,
        id: FileId,
        outcome: ProcessingOutcome,
        audit: Vec<NewAuditEvent>,
    ) -> StoreResult<Option<FileRecord>>;
    /// Marks a file deleted (hiding it at once) and enqueues the job that purges its bytes,
    /// with the audit event. `None` when there is no such file (or it was deleted already, or
    /// it is under legal hold).
    async fn delete_file(
        &self,
        id: FileId,
        at: OffsetDateTime,
        purge: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<Option<FileRecord>>;
    /// Forgets a deleted file once its bytes are gone; false when there was no deleted row.
    async fn purge_file(&self, id: FileId) -> StoreResult<bool>;
    /// Sets or clears a file's legal hold (a held file is never deleted), with the audit event.
    async fn set_legal_hold(
        &self,
        id: FileId,
        hold: bool,
        at: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<Option<FileRecord>>;
    /// Up to `limit` live files of `bucket` created before `before` and not under legal hold
    /// (for retention), oldest first.
    async fn expired_files(
        &self,
        bucket: &BucketName,
        before: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<FileId>>;

    /// Up to `limit` files (deleted ones too) whose data key is wrapped under a master key
    /// other than `kid`, in id order after `after`.
    async fn files_not_under_key(
        &self,
        kid: &str,
        after: Option<FileId>,
        limit: u32,
    ) -> StoreResult<Vec<(FileId, FileEncryption)>>;

    /// Replaces the encryption of these files (rewrapped keys), in one transaction.
    async fn set_file_encryption(&self, files: &[(FileId, FileEncryption)]) -> StoreResult<()>;
}

/// Resumable (tus) uploads. Appending is guarded by a lock with an expiry (so a crashed
/// holder cannot block an upload for long) and every append is fenced by the lock holder and
/// the offset it expects, so two requests — on one instance or several — never both write.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Records a new upload (offset 0, active) with its audit event.
    async fn insert_upload(&self, upload: NewUpload, audit: NewAuditEvent) -> StoreResult<Upload>;
    /// The upload in any status, expired or not.
    async fn get_upload(&self, id: UploadId) -> StoreResult<Option<Upload>>;
    /// Takes or renews the upload's lock until `until`: true when `holder` holds it now
    /// (it was free, lapsed, or already `holder`'s). False for unknown uploads.
    async fn try_lock_upload(
        &self,
        id: UploadId,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Gives the lock up, if `holder` has it.
    async fn release_upload(&self, id: UploadId, holder: &str) -> StoreResult<()>;
    /// Records a stored chunk and moves the offset past it, if the upload is active, `holder`
    /// holds the lock and the offset is still the chunk's offset; true when it was.
    async fn advance_upload(&self, advance: Advance<'_>) -> StoreResult<bool>;
    /// The upload's recorded chunks, in offset order.
    async fn upload_chunks(&self, id: UploadId) -> StoreResult<Vec<UploadChunk>>;
    /// Ends an active upload whose bytes all arrived (the offset becomes the length), frees
    /// its lock and keeps the row until `expires_at`; only for the lock's `holder`.
    async fn finish_upload(
        &self,
        id: UploadId,
        holder: &str,
        end: UploadEnd,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Marks an upload terminated and expired at `now` (hidden at once; the sweep finishes
    /// the clean-up if the caller cannot), with its audit event; only for the lock's `holder`.
    async fn terminate_upload(
        &self,
        id: UploadId,
        holder: &str,
        now: OffsetDateTime,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
    /// Forgets an upload and its chunk rows (their objects must be gone); true when it existed.
    async fn purge_upload(&self, id: UploadId) -> StoreResult<bool>;
    /// Up to `limit` uploads whose expiry has passed (any status), oldest expiry first.
    async fn expired_uploads(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<Upload>>;

    /// Up to `limit` uploads (any status) whose data key is wrapped under a master key other
    /// than `kid`, in id order after `after`.
    async fn uploads_not_under_key(
        &self,
        kid: &str,
        after: Option<UploadId>,
        limit: u32,
    ) -> StoreResult<Vec<(UploadId, FileEncryption)>>;
    /// Replaces the encryption of these uploads (rewrapped keys), in one transaction.
    async fn set_upload_encryption(
        &self,
        uploads: &[(UploadId, FileEncryption)],
    ) -> StoreResult<()>;
}

/// Direct-upload sessions (see `files::DirectUpload`). State changes are conditional, so of
/// two concurrent `complete` calls exactly one goes on.
#[async_trait]
pub trait DirectStore: Send + Sync {
    async fn insert_direct(&self, upload: DirectUpload) -> StoreResult<()>;
    /// The session in any state, expired or not.
    async fn get_direct(&self, id: FileId) -> StoreResult<Option<DirectUpload>>;
    /// Moves the session from `from` to `to`; true when it was in `from`.
    async fn transition_direct(
        &self,
        id: FileId,
        from: DirectState,
        to: DirectState,
    ) -> StoreResult<bool>;
    /// Forgets a session; true when it existed.
    async fn delete_direct(&self, id: FileId) -> StoreResult<bool>;
    /// Up to `limit` sessions whose expiry has passed (any state), oldest expiry first.
    async fn expired_directs(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<DirectUpload>>;
}

/// S3 multipart uploads Carafe sends itself (see `files::MultipartRecord`): recorded before
/// the first part goes up, forgotten once completed or aborted, so a crash in between leaves a
/// record the sweep aborts. Several instances may share the records: the sweep only takes
/// those older than a cut-off no live upload is expected to reach.
#[async_trait]
pub trait MultipartRecordStore: Send + Sync {
    async fn record_multipart(&self, record: MultipartRecord) -> StoreResult<()>;
    /// Forgets one upload's record; true when it existed (forgetting twice is not an error).
    async fn forget_multipart(&self, key: &str, upload_id: &str) -> StoreResult<bool>;
    /// Up to `limit` records started at or before `started_before`, oldest first.
    async fn stale_multiparts(
        &self,
        started_before: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<MultipartRecord>>;
}

/// Leader election for work one instance should do at a time (maintenance, schedules).
#[async_trait]
pub trait LeaderStore: Send + Sync {
    /// Takes or renews the named lease until `until`; true when `holder` leads now.
    async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Gives the lease up, if `holder` has it.
    async fn resign(&self, name: &str, holder: &str) -> StoreResult<()>;
}

/// Connection-pool figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

#[async_trait]
pub trait Store:
    KeyStore
    + IdempotencyStore
    + AuditStore
    + JobStore
    + ScheduleStore
    + WorkflowStore
    + FileStore
    + UploadStore
    + DirectStore
    + MultipartRecordStore
    + LeaderStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// One cheap round trip, for `/readyz` and `carafe check`.
    async fn ping(&self) -> StoreResult<()>;
    /// Applies every pending migration.
    async fn migrate(&self) -> StoreResult<()>;
    /// Names of migrations this build knows but the database has not applied.
    async fn pending_migrations(&self) -> StoreResult<Vec<String>>;
    fn pool_stats(&self) -> PoolStats;
    /// Closes every connection (waiting for those in use to be returned).
    async fn close(&self);
    /// Starts delivering wake-ups written by other processes (PostgreSQL `NOTIFY`) to `sink`,
    /// with `"*"` after any gap in which some may have been missed. Backends without
    /// cross-process wake-ups do nothing; polling covers them.
    async fn listen(&self, sink: WakeupSink) -> StoreResult<()>;
}

/// Receives wake-up topics such as `queue:<name>` or `job:<id>`.
pub type WakeupSink = std::sync::Arc<dyn Fn(&str) + Send + Sync>;
