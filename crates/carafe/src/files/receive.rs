//! Receiving an upload: the body is streamed to a temporary file while it is counted against
//! the bucket's limit and hashed, and its first bytes are kept for type detection. Memory stays
//! flat whatever the size: chunks pass through a small bounded channel to a blocking writer
//! thread (hashing and writing there keeps both off the async workers and overlaps them with
//! the network). The file is synced before it is handed over, and removed if anything fails
//! or the receiver is dropped (a client that disconnects leaves nothing behind).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Bytes kept from the start of a file for type detection.
pub const HEAD_BYTES: usize = 8 * 1024;

/// Body chunks are gathered into batches of this many bytes for the writing and hashing
/// threads: one hand-off and one write per batch instead of per network read. A batch is a
/// copy: holding the network's chunks instead would keep alive the (larger) read buffers
/// they are slices of, and memory would grow with them.
const BATCH_BYTES: usize = 512 * 1024;

/// Batches queued for each thread: enough to ride out a slow write or sync without stalling
/// the network (at most about 5 MiB of an upload in memory).
const IN_FLIGHT: usize = 8;

/// A batch of the body, shared (not copied again) by the writing and hashing threads.
type Batch = Bytes;

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
    /// The first `HEAD_BYTES` bytes (fewer for smaller files).
    pub head: Bytes,
}

impl Received {
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

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the upload exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body ended early or could not be read (the client went away, or sent less than
    /// it declared).
    #[error("the upload body could not be read: {0}")]
    Body(String),
    #[error("the upload could not be stored")]
    Io(#[from] io::Error),
}

/// Streams `body` into a new temporary file in `dir`, refusing more than `limit` bytes.
pub async fn receive<S, E>(body: S, dir: &Path, limit: u64) -> Result<Received, ReceiveError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let path = dir.join(format!("{}.part", uuid::Uuid::now_v7().simple()));
    let file = std::fs::File::create_new(&path)?;
    let guard = TempPath(Some(path));
    // Hashing and writing run on two threads side by side (each batch is shared by both),
    // so a large upload costs the slower of the two, not their sum.
    let (tx, rx) = mpsc::channel::<Batch>(IN_FLIGHT);
    let (hash_tx, hash_rx) = mpsc::channel::<Batch>(IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || write_all(file, rx));
    let hasher = tokio::task::spawn_blocking(move || hash_all(hash_rx));

    let mut head = BytesMut::new();
    let mut size: u64 = 0;
    let mut failure = None;
    let mut batch = BytesMut::new();
    futures::pin_mut!(body);
    loop {
        let chunk = match body.next().await {
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                failure = Some(ReceiveError::Body(e.to_string()));
                break;
            }
            None => None,
        };
        if let Some(chunk) = &chunk {
            size += chunk.len() as u64;
            if size > limit {
                failure = Some(ReceiveError::TooLarge { limit });
                break;
            }
            if head.len() < HEAD_BYTES {
                let take = (HEAD_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
        }
        let end = chunk.is_none();
        if let Some(chunk) = chunk {
            if batch.is_empty() {
                batch = BytesMut::with_capacity(BATCH_BYTES.max(chunk.len()));
            }
            batch.extend_from_slice(&chunk);
        }
        if !batch.is_empty() && (end || batch.len() >= BATCH_BYTES) {
            let full: Batch = std::mem::take(&mut batch).freeze();
            if hash_tx.send(full.clone()).await.is_err() || tx.send(full).await.is_err() {
                break; // The writer failed; its error is reported below.
            }
        }
        if end {
            break;
        }
    }
    drop(tx);
    drop(hash_tx);
    let written = writer.await.map_err(io::Error::other)?;
    let digest = hasher.await.map_err(io::Error::other)?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    written?;
    Ok(Received {
        file: guard,
        size,
        sha256: hex::encode(digest),
        head: head.freeze(),
    })
}

/// Bytes written between two early flushes of a large upload.
const FLUSH_EVERY: usize = 16 * 1024 * 1024;

/// The writing side: write every batch, then sync.
///
/// A large upload is flushed to disk while it is still arriving: every `FLUSH_EVERY` bytes a
/// second handle on the file is synced on its own thread, so the disk writes overlap the
/// network and the final sync only has the tail left (instead of the whole file after the
/// last byte). std has no `sync_file_range`, and this needs no `unsafe`.
fn write_all(mut file: std::fs::File, mut rx: mpsc::Receiver<Batch>) -> io::Result<()> {
    let mut flusher: Option<std::sync::mpsc::SyncSender<()>> = None;
    let mut unflushed = 0;
    while let Some(batch) = rx.blocking_recv() {
        file.write_all(&batch)?;
        unflushed += batch.len();
        if unflushed >= FLUSH_EVERY {
            unflushed = 0;
            if flusher.is_none() {
                flusher = Some(spawn_flusher(file.try_clone()?));
            }
            if let Some(kick) = &flusher {
                // A flush already pending covers these bytes too.
                let _ = kick.try_send(());
            }
        }
    }
    drop(flusher);
    file.sync_all()
}

/// A thread that syncs `file` each time it is kicked, until its sender is dropped. Its
/// errors are left to the final sync, which reports them.
fn spawn_flusher(file: std::fs::File) -> std::sync::mpsc::SyncSender<()> {
    let (kick, kicked) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::spawn(move || {
        while kicked.recv().is_ok() {
            let _ = file.sync_data();
        }
    });
    kick
}

/// The hashing side: the SHA-256 of every chunk, in order.
fn hash_all(mut rx: mpsc::Receiver<Batch>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    while let Some(batch) = rx.blocking_recv() {
        hasher.update(&batch);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, String>> {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
    }

    #[tokio::test]
    async fn receives_hashes_and_keeps_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let got = receive(chunks(vec![b"hello ", b"world"]), dir.path(), 100)
            .await
            .unwrap();
        assert_eq!(got.size, 11);
        assert_eq!(&got.head[..], b"hello world");
        assert_eq!(
            got.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(std::fs::read(got.path()).unwrap(), b"hello world");
        let path = got.path().to_path_buf();
        drop(got);
        assert!(!path.exists(), "a dropped upload leaves no file");
    }

    #[tokio::test]
    async fn many_chunks_of_every_size_arrive_whole_and_in_order() {
        // Many small chunks and one larger than a batch: batches are cut at their size.
        let dir = tempfile::tempdir().unwrap();
        let parts: Vec<Bytes> = (0..3000usize)
            .map(|i| Bytes::from(format!("{i:08}").repeat(1 + i % 97)))
            // Past FLUSH_EVERY, so the early flushes run too.
            .chain([
                Bytes::new(),
                Bytes::from(vec![b'z'; FLUSH_EVERY + 3 * BATCH_BYTES]),
            ])
            .collect();
        let all = parts.concat();
        let body = futures::stream::iter(parts.into_iter().map(Ok::<_, String>));
        let got = receive(body, dir.path(), u64::MAX).await.unwrap();
        assert_eq!(got.size, all.len() as u64);
        assert_eq!(std::fs::read(got.path()).unwrap(), all);
        assert_eq!(got.sha256, hex::encode(Sha256::digest(&all)));
        assert_eq!(&got.head[..], &all[..HEAD_BYTES]);
    }

    #[tokio::test]
    async fn over_the_limit_or_broken_bodies_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = receive(chunks(vec![b"12345", b"6789"]), dir.path(), 8)
            .await
            .unwrap_err();
        assert!(matches!(err, ReceiveError::TooLarge { limit: 8 }));
        let broken = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err("connection reset".to_string()),
        ]);
        let err = receive(broken, dir.path(), 100).await.unwrap_err();
        assert!(matches!(err, ReceiveError::Body(_)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
