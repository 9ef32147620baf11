//! Bytes at rest (not the database, which is `carafe_core::Store`): object storage on local
//! disk or S3 (`storage`), and encryption at rest — the segment format (`crypto`), the master
//! keys that wrap each file's data key (`master_keys`), objects read and written through
//! their key (`sealed`), and rewrapping under a new master key (`rotate`).

pub mod crypto;
pub mod master_keys;
pub mod rotate;
pub mod sealed;
pub mod storage;
