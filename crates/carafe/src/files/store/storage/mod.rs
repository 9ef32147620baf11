//! Object storage for file bytes, behind one type whatever the backend: local disk (the
//! default) or any S3-compatible store. Keys are made by Carafe from file ids
//! (`incoming/<id>`, `objects/<id>`, `quarantine/<id>`, `thumbs/<id>/<name>`), never from
//! client input, so no name can reach a path.
//!
//! Uploads are always received into a local temporary directory first (hashed, counted and
//! synced there), then moved into storage: a rename on local disk, an upload on S3.

mod buffers;
mod local;
mod s3;
pub mod temp;

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use carafe_core::store::MultipartRecordStore;

pub use local::LocalStorage;
pub use s3::S3Storage;

use temp::Received;

pub type ByteStream = futures::stream::BoxStream<'static, io::Result<Bytes>>;

/// The headers a presigned download makes the store answer with.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHeaders<'a> {
    pub content_type: &'a str,
    pub content_disposition: &'a str,
    pub cache_control: &'a str,
}

#[derive(Debug, Clone)]
pub enum Storage {
    Local(LocalStorage),
    S3(S3Storage),
}

impl Storage {
    /// Opens the storage named by `url`: unset means local disk under `data_dir/files`,
    /// `file:///path` another directory, `s3://bucket[/prefix]?endpoint=…&region=…` S3.
    /// S3 records its multipart uploads under way in `records`.
    pub fn open(
        url: Option<&str>,
        data_dir: &Path,
        records: Arc<dyn MultipartRecordStore>,
    ) -> anyhow::Result<Storage> {
        match url {
            None => Ok(Storage::Local(LocalStorage::open(data_dir.join("files"))?)),
            Some(url) if url.starts_with("s3://") => Ok(Storage::S3(S3Storage::open(
                url,
                &data_dir.join("upload-tmp"),
                records,
            )?)),
            Some(url) => match url.strip_prefix("file://") {
                Some(path) if path.starts_with('/') => {
                    Ok(Storage::Local(LocalStorage::open(PathBuf::from(path))?))
                }
                _ => anyhow::bail!("storage_url must be file:///absolute/path or s3://bucket?…"),
            },
        }
    }

    /// `local` or `s3`.
    pub fn kind(&self) -> &'static str {
        match self {
            Storage::Local(_) => "local",
            Storage::S3(_) => "s3",
        }
    }

    /// A local directory for temporary files (received uploads) that can be moved into the
    /// store.
    pub fn temp_dir(&self) -> PathBuf {
        match self {
            Storage::Local(l) => l.temp_dir(),
            Storage::S3(s) => s.temp_dir(),
        }
    }

    /// Moves a received (synced) temporary file to `key`; the temporary file is gone after.
    pub async fn put_received(&self, key: &str, received: Received) -> io::Result<()> {
        match self {
            Storage::Local(l) => l.put_received(key, received).await,
            Storage::S3(s) => s.put_received(key, received).await,
        }
    }

    /// Writes `bytes` to `key` (atomically: whole or not at all).
    pub async fn put_bytes(&self, key: &str, bytes: Bytes) -> io::Result<()> {
        match self {
            Storage::Local(l) => l.put_bytes(key, bytes).await,
            Storage::S3(s) => s.put_bytes(key, bytes).await,
        }
    }

    /// Moves an object to another key (quarantine, promotion).
    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        match self {
            Storage::Local(l) => l.rename(from, to).await,
            Storage::S3(s) => s.rename(from, to).await,
        }
    }

    /// The object's size, `None` when it does not exist.
    pub async fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match self {
            Storage::Local(l) => l.size(key).await,
            Storage::S3(s) => s.size(key).await,
        }
    }

    /// Reads a whole (small) object into memory, at most `limit` bytes.
    pub async fn read_all(&self, key: &str, limit: u64) -> io::Result<Bytes> {
        match self {
            Storage::Local(l) => l.read_all(key, limit).await,
            Storage::S3(s) => s.read_all(key, limit).await,
        }
    }

    /// Streams `range` of an object (the whole object when `None`).
    pub async fn read(&self, key: &str, range: Option<Range<u64>>) -> io::Result<ByteStream> {
        match self {
            Storage::Local(l) => l.read(key, range).await,
            Storage::S3(s) => s.read(key, range).await,
        }
    }

    /// Deletes an object; deleting a missing one is not an error.
    pub async fn delete(&self, key: &str) -> io::Result<()> {
        match self {
            Storage::Local(l) => l.delete(key).await,
            Storage::S3(s) => s.delete(key).await,
        }
    }

    /// Deletes every object under `prefix/` (a file's thumbnails).
    pub async fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        match self {
            Storage::Local(l) => l.delete_prefix(prefix).await,
            Storage::S3(s) => s.delete_prefix(prefix).await,
        }
    }

    /// The object's path relative to the local storage root (for `X-Accel-Redirect`);
    /// `None` on S3.
    pub fn local_path<'a>(&self, key: &'a str) -> Option<&'a str> {
        match self {
            Storage::Local(_) => Some(key),
            Storage::S3(_) => None,
        }
    }

    /// A short-lived presigned GET URL (S3 only), with the download headers S3 should send.
    pub async fn presigned_get(
        &self,
        key: &str,
        expires_in: Duration,
        answer: &ResponseHeaders<'_>,
    ) -> io::Result<Option<url::Url>> {
        match self {
            Storage::Local(_) => Ok(None),
            Storage::S3(s) => s.presigned_get(key, expires_in, answer).await.map(Some),
        }
    }

    /// Names of the objects directly under `prefix/` last written more than `age` ago.
    pub async fn list_older(&self, prefix: &str, age: Duration) -> io::Result<Vec<String>> {
        match self {
            Storage::Local(l) => l.list_older(prefix, age).await,
            Storage::S3(s) => s.list_older(prefix, age).await,
        }
    }

    /// Removes temporary files older than `age`: leftovers of uploads a crash interrupted.
    pub async fn sweep_temp(&self, age: Duration) -> io::Result<u64> {
        let mut removed = 0;
        for path in local::older_files(&self.temp_dir(), age).await? {
            if tokio::fs::remove_file(path).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Aborts the S3 multipart uploads Carafe started more than `age` ago and never finished
    /// (a crash interrupted them); returns how many. Nothing to do on local disk.
    pub async fn sweep_multiparts(&self, age: Duration) -> io::Result<u64> {
        match self {
            Storage::Local(_) => Ok(0),
            Storage::S3(s) => s.sweep_multiparts(age).await,
        }
    }

    /// A presigned PUT of `key` for direct uploads; `None` on local disk (Carafe signs its
    /// own URL there).
    pub async fn presigned_put(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> io::Result<Option<url::Url>> {
        match self {
            Storage::Local(_) => Ok(None),
            Storage::S3(s) => s.presigned_put(key, expires_in).await.map(Some),
        }
    }

    /// The S3 store, for the multipart calls only it has.
    pub fn s3(&self) -> Option<&S3Storage> {
        match self {
            Storage::Local(_) => None,
            Storage::S3(s) => Some(s),
        }
    }
}
