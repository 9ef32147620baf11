//! Bytes at rest (not the database, which is `carafe_core::Store`): object storage on local
//! disk or S3 with its temporary files (`storage`), encryption at rest — the segment format
//! (`crypto`), the master keys that wrap each file's data key (`master_keys`), objects read
//! and written through their key (`sealed`), rewrapping under a new master key (`rotate`) —
//! and the removal of leftovers that crashes and expiries leave (`drain`).

pub mod crypto;
pub mod drain;
pub mod master_keys;
pub mod rotate;
pub mod sealed;
pub mod storage;
