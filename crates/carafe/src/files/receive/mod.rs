//! Bytes coming in. Every way an upload arrives ends in the same checks: a request body
//! streamed to a synced temporary file (`body`), resumable tus uploads sent in chunks (`tus`),
//! and direct uploads sent straight to storage (`direct`), all named safely (`filename`) and
//! accepted against their bucket's policy with their processing job (`accept`, which also
//! decides who may upload into which bucket, and whose the file is).

pub mod accept;
pub mod body;
pub mod direct;
pub mod filename;
pub mod tus;
