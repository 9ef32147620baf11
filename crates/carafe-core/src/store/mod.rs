//! The store traits. Each capability owns one trait (the job queue a few, one per backend
//! file), in a file of its own here; `Store` is nothing but their sum with `Backend`, what the
//! server needs to operate a database. The server holds an `Arc<dyn Store>` and never learns
//! which database is behind it.
//!
//! `Store` has a blanket impl: a backend implements each capability's trait, in its own file
//! of the same name (`carafe-store-sqlite/src/keys.rs` implements `KeyStore`), and is a
//! `Store` from then on. A new capability adds its trait file here, its conformance cases in
//! `conformance/`, and one bound to `Store` and its blanket impl.

mod audit;
mod backend;
mod campaigns;
#[cfg(feature = "testing")]
pub mod conformance;
mod direct;
mod files;
mod idempotency;
mod jobs;
mod keys;
mod leader;
mod mail;
mod multipart;
mod rate_groups;
mod schedules;
mod templates;
mod uploads;
mod workflows;

pub use audit::AuditStore;
pub use backend::{Backend, PoolStats, WakeupSink};
pub use campaigns::CampaignStore;
pub use direct::DirectStore;
pub use files::FileStore;
pub use idempotency::IdempotencyStore;
pub use jobs::{FailureStore, JobStore, LeaseStore, QueueAdminStore};
pub use keys::KeyStore;
pub use leader::LeaderStore;
pub use mail::MailStore;
pub use multipart::MultipartRecordStore;
pub use rate_groups::RateGroupStore;
pub use schedules::ScheduleStore;
pub use templates::TemplateStore;
pub use uploads::UploadStore;
pub use workflows::WorkflowStore;

/// Every capability of a database, and how to run it.
pub trait Store:
    KeyStore
    + IdempotencyStore
    + AuditStore
    + JobStore
    + LeaseStore
    + FailureStore
    + QueueAdminStore
    + RateGroupStore
    + ScheduleStore
    + WorkflowStore
    + FileStore
    + UploadStore
    + DirectStore
    + MultipartRecordStore
    + LeaderStore
    + MailStore
    + TemplateStore
    + CampaignStore
    + Backend
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: KeyStore
        + IdempotencyStore
        + AuditStore
        + JobStore
        + LeaseStore
        + FailureStore
        + QueueAdminStore
        + RateGroupStore
        + ScheduleStore
        + WorkflowStore
        + FileStore
        + UploadStore
        + DirectStore
        + MultipartRecordStore
        + LeaderStore
        + MailStore
        + TemplateStore
        + CampaignStore
        + Backend
        + Send
        + Sync
        + 'static
        + ?Sized
{
}

/// Every store trait, unnamed, for code that calls a concrete backend's methods (tests,
/// tools): `use carafe_core::store::prelude::*;`. Calls through `dyn Store` need no import.
pub mod prelude {
    pub use super::{
        AuditStore as _, Backend as _, CampaignStore as _, DirectStore as _, FailureStore as _,
        FileStore as _, IdempotencyStore as _, JobStore as _, KeyStore as _, LeaderStore as _,
        LeaseStore as _, MailStore as _, MultipartRecordStore as _, QueueAdminStore as _,
        RateGroupStore as _, ScheduleStore as _, UploadStore as _, WorkflowStore as _,
    };
}
