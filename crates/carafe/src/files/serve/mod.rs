//! Bytes going out: the response that carries a file's content (`download`), with byte
//! ranges (`range`), conditional requests (`conditional`) and safe names
//! (`disposition`), and signed links that let anyone holding one read a file (`links`).

pub mod conditional;
pub mod disposition;
pub mod download;
pub mod links;
pub mod range;
