//! Local disk: every object is written to a temporary file, synced, renamed into place, and
//! its directory synced, so an object is either whole or absent, also after a power cut.
//! Reads stream large chunks straight from the file.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::temp::Received;
use super::{ByteStream, buffers};

/// Chunk size for streaming reads: large enough to keep per-chunk overhead out of the way,
/// small enough that many concurrent downloads stay light (each holds about two: the chunk
/// being read and the one being sent).
const READ_CHUNK: usize = buffers::SIZE;

/// Where temporary files go, inside the root so renames never cross devices.
const TMP_DIR: &str = ".tmp";

#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn open(root: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root.join(TMP_DIR))?;
        Ok(LocalStorage { root })
    }

    pub fn temp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

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

    pub async fn put_received(&self, key: &str, received: Received) -> io::Result<()> {
        let path = received.into_path();
        let result = self.rename_in(&path, key).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&path).await;
        }
        result
    }

    pub async fn put_bytes(&self, key: &str, bytes: Bytes) -> io::Result<()> {
        let tmp = self
            .temp_dir()
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
            Ok(()) => self.rename_in(&tmp, key).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.rename_in(&self.path(from), to).await
    }

    pub async fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn read_all(&self, key: &str, limit: u64) -> io::Result<Bytes> {
        let f = tokio::fs::File::open(self.path(key)).await?;
        let mut buf = Vec::new();
        f.take(limit).read_to_end(&mut buf).await?;
        Ok(Bytes::from(buf))
    }

    pub async fn read(&self, key: &str, range: Option<Range<u64>>) -> io::Result<ByteStream> {
        let file = std::fs::File::open(self.path(key))?;
        let range = match range {
            Some(r) => r,
            None => 0..file.metadata()?.len(),
        };
        Ok(chunks(file, range))
    }

    pub async fn delete(&self, key: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub async fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        match tokio::fs::remove_dir_all(self.path(prefix)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub async fn list_older(
        &self,
        prefix: &str,
        age: std::time::Duration,
    ) -> io::Result<Vec<String>> {
        Ok(older_files(&self.path(prefix), age)
            .await?
            .into_iter()
            .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .collect())
    }
}

/// The files directly in `dir` last written more than `age` ago (none when `dir` is missing).
pub(super) async fn older_files(dir: &Path, age: std::time::Duration) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    while let Some(entry) = entries.next_entry().await? {
        let old = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|e| e >= age);
        if old {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// `range` of `file` as a stream of chunks of up to `READ_CHUNK` bytes. Each chunk is read
/// with one positioned read on the blocking pool straight into its own buffer, allocated
/// here on the caller's thread (tokio's `File` would read into a buffer of its own first and
/// copy: one more buffer per download, allocated on whichever blocking thread ran the read).
/// A file that ends early ends the stream with an error, so the answer is cut off rather
/// than silently short.
fn chunks(file: std::fs::File, range: Range<u64>) -> ByteStream {
    let file = std::sync::Arc::new(file);
    futures::stream::try_unfold(range, move |r| {
        let file = file.clone();
        async move {
            if r.start >= r.end {
                return Ok(None);
            }
            let want = READ_CHUNK.min((r.end - r.start) as usize);
            let mut buf = buffers::take(want);
            let at = r.start;
            let (buf, got) = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let got = file.read_at(&mut buf, at)?;
                Ok::<_, io::Error>((buf, got))
            })
            .await
            .map_err(io::Error::other)??;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the object is shorter than expected",
                ));
            }
            let mut buf = buf;
            buf.truncate(got);
            Ok(Some((buffers::bytes(buf), r.start + got as u64..r.end)))
        }
    })
    .boxed()
}
