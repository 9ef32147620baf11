//! Deciding what bytes are and whether they may be served: the type from the bytes
//! themselves (`sniff`), the virus scan (`scan`), image metadata stripping and thumbnails
//! (`images`), and the job that runs them on every upload (`process`).

pub mod images;
pub mod process;
pub mod scan;
pub mod sniff;
