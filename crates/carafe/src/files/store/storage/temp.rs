//! Temporary files: where an upload waits, synced, between being received and being stored.
//! They live in storage's temporary directory (`Storage::temp_dir`), on local disk whatever
//! the storage; storage moves them into place (or sends them to S3), and removes them when
//! they are dropped instead — a client that goes away leaves nothing behind.

use std::path::{Path, PathBuf};

use bytes::Bytes;

/// A stored temporary file, removed on drop unless it was moved into storage.
#[derive(Debug)]
pub struct TempPath(Option<PathBuf>);

impl TempPath {
    /// Guards a file the caller has just created.
    pub fn new(path: PathBuf) -> Self {
        TempPath(Some(path))
    }

    pub fn path(&self) -> &Path {
        self.0.as_deref().expect("present until taken")
    }

    fn keep(mut self) -> PathBuf {
        self.0.take().expect("present until taken")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A fully received, synced upload.
#[derive(Debug)]
pub struct Received {
    file: TempPath,
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// The first bytes, for type detection (`receive::body::HEAD_BYTES`, fewer for smaller
    /// files).
    pub head: Bytes,
}

impl Received {
    pub fn new(file: TempPath, size: u64, sha256: String, head: Bytes) -> Received {
        Received {
            file,
            size,
            sha256,
            head,
        }
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The same upload held in another file (its encrypted form); the old file is removed.
    pub fn with_file(mut self, file: TempPath) -> Received {
        self.file = file;
        self
    }

    /// Takes the file out of the guard: the caller now owns (and must remove or move) it.
    pub fn into_path(self) -> PathBuf {
        self.file.keep()
    }
}
