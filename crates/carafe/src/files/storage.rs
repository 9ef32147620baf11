//! Object storage for file bytes, behind one type whatever the backend. Keys are made by
//! Carafe from file ids (`incoming/<id>`, `objects/<id>`, `quarantine/<id>`,
//! `thumbs/<id>/<name>`), never from client input, so no name can reach a path.
//!
//! Local disk writes every object to a temporary file, syncs it, renames it into place and
//! syncs the directory: an object is either whole or absent, also after a power cut. Reads
//! stream large chunks straight from the file.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::receive::Received;

/// Chunk size for streaming reads: large chunks keep per-chunk overhead out of the way.
const READ_CHUNK: usize = 256 * 1024;

/// Where temporary upload files go, inside the storage root so renames never cross devices.
const TMP_DIR: &str = ".tmp";

pub type ByteStream = futures::stream::BoxStream<'static, io::Result<Bytes>>;

#[derive(Debug, Clone)]
pub enum Storage {
    Local(LocalStorage),
}

impl Storage {
    /// Opens the storage named by `url` (`file:///path`), or local disk under `data_dir`.
    pub fn open(url: Option<&str>, data_dir: &Path) -> anyhow::Result<Storage> {
        let root = match url {
            None => data_dir.join("files"),
            Some(url) => match url.strip_prefix("file://") {
                Some(path) if path.starts_with('/') => PathBuf::from(path),
                _ => anyhow::bail!("storage_url: only file:///absolute/path is supported here"),
            },
        };
        std::fs::create_dir_all(root.join(TMP_DIR))?;
        Ok(Storage::Local(LocalStorage { root }))
    }

    /// A directory for temporary files that can be renamed into the store.
    pub fn temp_dir(&self) -> PathBuf {
        match self {
            Storage::Local(l) => l.root.join(TMP_DIR),
        }
    }

    /// Moves a received (synced) temporary file to `key`.
    pub async fn put_received(&self, key: &str, received: Received) -> io::Result<()> {
        match self {
            Storage::Local(l) => {
                let path = received.into_path();
                let result = l.rename_in(&path, key).await;
                if result.is_err() {
                    let _ = tokio::fs::remove_file(&path).await;
                }
                result
            }
        }
    }

    /// Writes `bytes` to `key` (atomically: whole or not at all).
    pub async fn put_bytes(&self, key: &str, bytes: Bytes) -> io::Result<()> {
        match self {
            Storage::Local(l) => {
                let tmp = l
                    .root
                    .join(TMP_DIR)
                    .join(format!("{}.put", uuid::Uuid::now_v7().simple()));
                let written = {
                    let tmp = tmp.clone();
                    tokio::task::spawn_blocking(move || -> io::Result<()> {
                        use std::io::Write;
                        let mut f = std::fs::File::create(&tmp)?;
                        f.write_all(&bytes)?;
                        f.sync_all()
                    })
                    .await
                    .map_err(io::Error::other)?
                };
                let result = match written {
                    Ok(()) => l.rename_in(&tmp, key).await,
                    Err(e) => Err(e),
                };
                if result.is_err() {
                    let _ = tokio::fs::remove_file(&tmp).await;
                }
                result
            }
        }
    }

    /// Moves an object to another key (quarantine, promotion).
    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        match self {
            Storage::Local(l) => l.rename_in(&l.path(from), to).await,
        }
    }

    /// The object's size, `None` when it does not exist.
    pub async fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match self {
            Storage::Local(l) => match tokio::fs::metadata(l.path(key)).await {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Reads a whole (small) object into memory.
    pub async fn read_all(&self, key: &str, limit: u64) -> io::Result<Bytes> {
        match self {
            Storage::Local(l) => {
                let f = tokio::fs::File::open(l.path(key)).await?;
                let mut buf = Vec::new();
                f.take(limit).read_to_end(&mut buf).await?;
                Ok(Bytes::from(buf))
            }
        }
    }

    /// Streams `range` of an object (the whole object when `None`).
    pub async fn read(&self, key: &str, range: Option<Range<u64>>) -> io::Result<ByteStream> {
        match self {
            Storage::Local(l) => {
                let mut f = tokio::fs::File::open(l.path(key)).await?;
                let stream = match range {
                    None => ReaderStream::with_capacity(f, READ_CHUNK).boxed(),
                    Some(r) => {
                        f.seek(io::SeekFrom::Start(r.start)).await?;
                        let cap = READ_CHUNK.min((r.end - r.start).max(1) as usize);
                        ReaderStream::with_capacity(f.take(r.end - r.start), cap).boxed()
                    }
                };
                Ok(stream)
            }
        }
    }

    /// Deletes an object; deleting a missing one is not an error.
    pub async fn delete(&self, key: &str) -> io::Result<()> {
        match self {
            Storage::Local(l) => match tokio::fs::remove_file(l.path(key)).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// Deletes every object under `prefix/` (a file's thumbnails).
    pub async fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        match self {
            Storage::Local(l) => match tokio::fs::remove_dir_all(l.path(prefix)).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// The object's path on local disk (for `X-Accel-Redirect`), relative to the root.
    pub fn local_path<'a>(&self, key: &'a str) -> Option<&'a str> {
        match self {
            Storage::Local(_) => Some(key),
        }
    }

    /// Removes temporary files older than `age`: leftovers of uploads a crash interrupted.
    pub async fn sweep_temp(&self, age: std::time::Duration) -> io::Result<u64> {
        let dir = self.temp_dir();
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let old = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|e| e >= age);
            if old && tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    fn path(&self, key: &str) -> PathBuf {
        debug_assert!(!key.contains(".."), "keys are made by Carafe");
        self.root.join(key)
    }

    /// Renames `from` to `key`'s path, creating its directory, and syncs the directory so
    /// the rename survives a crash.
    async fn rename_in(&self, from: &Path, key: &str) -> io::Result<()> {
        let to = self.path(key);
        let dir = to.parent().map(Path::to_path_buf).unwrap_or_default();
        let from = from.to_path_buf();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(&from, &to)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Drains a stream into memory, up to `limit` bytes (for small objects headed for the cache).
pub async fn collect(mut stream: ByteStream, limit: usize) -> io::Result<Bytes> {
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if buf.len() + chunk.len() > limit {
            return Err(io::Error::other("object larger than expected"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}
