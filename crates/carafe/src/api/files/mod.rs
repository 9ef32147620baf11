//! Files over HTTP: buckets, uploads (multipart and raw, resumable tus, direct to storage),
//! records, and the bytes with their ranges and validators. Handlers parse, call the `files`
//! capability and map its answers.

pub mod buckets;
pub mod content;
pub mod direct;
pub mod multipart;
pub mod records;
pub mod tus;
pub mod tus_protocol;
pub mod views;
