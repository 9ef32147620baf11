//! Bytes going out: who may read which file and the audit of each download (`access`), the
//! response that carries the content (`download`), with byte ranges (`range`), conditional
//! requests (`conditional`) and safe names (`disposition`), and signed links that let anyone
//! holding one read a file (`links`).

pub mod access;
pub mod conditional;
pub mod disposition;
pub mod download;
pub mod links;
pub mod range;
