//! Receiving an upload: the body is streamed to a temporary file while it is counted against
//! the bucket's limit and hashed, and its first bytes are kept for type detection. Memory stays
//! flat whatever the size: chunks pass through a small bounded channel to a blocking writer
//! thread (hashing and writing there keeps both off the async workers and overlaps them with
//! the network). The file is synced before it is handed over, and removed if anything fails
//! or the receiver is dropped (a client that disconnects leaves nothing behind).

use std::io;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::files::store::storage::temp::{Received, TempPath};

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
    let guard = TempPath::new(path);
    let sink = Sink::open(file, guard.path());
    // Hashing and writing run on two threads side by side (each batch is shared by both),
    // so a large upload costs the slower of the two, not their sum.
    let (tx, rx) = mpsc::channel::<Batch>(IN_FLIGHT);
    let (hash_tx, hash_rx) = mpsc::channel::<Batch>(IN_FLIGHT);
    // Hashed batches come back to be filled again: a fresh 512 KiB buffer each time costs
    // page faults and zeroing in the kernel for every batch.
    let (spent_tx, mut spent) = mpsc::unbounded_channel::<Batch>();
    let writer = tokio::task::spawn_blocking(move || write_all(sink, rx));
    let hasher = tokio::task::spawn_blocking(move || hash_all(hash_rx, spent_tx));

    let mut head = BytesMut::new();
    let mut size: u64 = 0;
    let mut failure = None;
    let mut batch: Option<BytesMut> = None;
    futures::pin_mut!(body);
    'body: loop {
        let mut chunk = match body.next().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                failure = Some(ReceiveError::Body(e.to_string()));
                break;
            }
            None => break,
        };
        size += chunk.len() as u64;
        if size > limit {
            failure = Some(ReceiveError::TooLarge { limit });
            break;
        }
        if head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        // Batches are cut at exactly BATCH_BYTES, so every one but the last can be written
        // straight to the disk.
        while !chunk.is_empty() {
            let filling = batch.get_or_insert_with(|| reuse(&mut spent).unwrap_or_else(new_batch));
            let take = (BATCH_BYTES - filling.len()).min(chunk.len());
            filling.extend_from_slice(&chunk.split_to(take));
            if filling.len() == BATCH_BYTES {
                let full = batch.take().expect("being filled").freeze();
                if hash_tx.send(full.clone()).await.is_err() || tx.send(full).await.is_err() {
                    break 'body; // The writer failed; its error is reported below.
                }
            }
        }
    }
    if let (None, Some(last)) = (&failure, batch.take().filter(|b| !b.is_empty())) {
        let last = last.freeze();
        let _ = hash_tx.send(last.clone()).await;
        let _ = tx.send(last).await;
    }
    drop(tx);
    drop(hash_tx);
    let written = writer.await.map_err(io::Error::other)?;
    let digest = hasher.await.map_err(io::Error::other)?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    written?;
    Ok(Received::new(
        guard,
        size,
        hex::encode(digest),
        head.freeze(),
    ))
}

/// Bytes written through the page cache between two early flushes of a large upload.
const FLUSH_EVERY: usize = 16 * 1024 * 1024;

/// What `O_DIRECT` asks of a write's memory, length and file offset.
const DIRECT_ALIGN: usize = 4096;

/// An empty batch buffer whose first byte is aligned for `O_DIRECT`.
fn new_batch() -> BytesMut {
    let mut buffer = BytesMut::with_capacity(BATCH_BYTES + DIRECT_ALIGN);
    let skip = buffer.as_ptr().align_offset(DIRECT_ALIGN);
    buffer.resize(skip, 0);
    let _ = buffer.split_to(skip);
    buffer
}

/// Where the batches go. Full, aligned batches are written with `O_DIRECT` when the
/// filesystem allows it: straight from the batch to the disk, without a copy into the page
/// cache or a write-back later (on these machines that copy and write-back cost as much CPU as
/// receiving the body). Everything else (the tail, or any filesystem without `O_DIRECT`) goes
/// through the page cache, flushed early as it grows.
struct Sink {
    direct: Option<std::fs::File>,
    buffered: std::fs::File,
    offset: u64,
}

impl Sink {
    fn open(buffered: std::fs::File, path: &Path) -> Sink {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        Sink {
            direct,
            buffered,
            offset: 0,
        }
    }

    /// Writes `batch` at the end; true when it went through the page cache.
    fn write(&mut self, batch: &[u8]) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let aligned = batch.as_ptr().align_offset(DIRECT_ALIGN) == 0
            && batch.len().is_multiple_of(DIRECT_ALIGN)
            && self.offset.is_multiple_of(DIRECT_ALIGN as u64);
        let mut cached = true;
        if let (Some(direct), true) = (&self.direct, aligned) {
            match direct.write_all_at(batch, self.offset) {
                Ok(()) => cached = false,
                // Refused (a filesystem that takes the flag but not the write): no more tries.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        if cached {
            self.buffered.write_all_at(batch, self.offset)?;
        }
        self.offset += batch.len() as u64;
        Ok(cached)
    }
}

/// The writing side: write every batch, then sync.
///
/// What goes through the page cache is flushed while the upload is still arriving: every
/// `FLUSH_EVERY` bytes a second handle on the file is synced on its own thread, so the disk
/// writes overlap the network and the final sync only has the tail left (instead of the whole
/// file after the last byte). std has no `sync_file_range`, and this needs no `unsafe`.
fn write_all(mut sink: Sink, mut rx: mpsc::Receiver<Batch>) -> io::Result<()> {
    let mut flusher: Option<std::sync::mpsc::SyncSender<()>> = None;
    let mut unflushed = 0;
    while let Some(batch) = rx.blocking_recv() {
        if !sink.write(&batch)? {
            continue;
        }
        unflushed += batch.len();
        if unflushed >= FLUSH_EVERY {
            unflushed = 0;
            if flusher.is_none() {
                flusher = Some(spawn_flusher(sink.buffered.try_clone()?));
            }
            if let Some(kick) = &flusher {
                // A flush already pending covers these bytes too.
                let _ = kick.try_send(());
            }
        }
    }
    drop(flusher);
    // Also flushes the disk's own cache for what O_DIRECT wrote, and the file's size.
    sink.buffered.sync_all()
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

/// The hashing side: the SHA-256 of every chunk, in order. Each hashed batch is handed back
/// to be reused.
fn hash_all(mut rx: mpsc::Receiver<Batch>, spent: mpsc::UnboundedSender<Batch>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    while let Some(batch) = rx.blocking_recv() {
        hasher.update(&batch);
        let _ = spent.send(batch);
    }
    hasher.finalize().into()
}

/// An emptied batch buffer that nothing else holds any more, if one has come back (a batch
/// the writer still holds is let go: the writer frees it).
fn reuse(spent: &mut mpsc::UnboundedReceiver<Batch>) -> Option<BytesMut> {
    while let Ok(batch) = spent.try_recv() {
        if let Ok(mut buffer) = batch.try_into_mut() {
            buffer.clear();
            return Some(buffer);
        }
    }
    None
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

    #[test]
    fn only_aligned_batches_at_aligned_offsets_skip_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload.part");
        let file = std::fs::File::create_new(&path).unwrap();
        let mut sink = Sink::open(file, &path);
        // Filesystems without O_DIRECT (tmpfs) take every write through the page cache.
        let direct = sink.direct.is_some();
        let mut full = new_batch();
        full.extend_from_slice(&vec![b'a'; BATCH_BYTES]);
        assert_eq!(full.as_ptr().align_offset(DIRECT_ALIGN), 0);
        assert_eq!(sink.write(&full).unwrap(), !direct, "a full batch");
        assert!(sink.write(b"tail").unwrap(), "a short batch is cached");
        // The offset is no longer aligned, so even a full batch goes through the cache now.
        assert!(
            sink.write(&full).unwrap(),
            "a full batch at an unaligned offset"
        );
        // Memory that is not aligned is cached too.
        let mut offset_by_one = BytesMut::with_capacity(BATCH_BYTES + DIRECT_ALIGN + 1);
        offset_by_one.extend_from_slice(&[0]);
        let _ = offset_by_one.split_to(1);
        offset_by_one.extend_from_slice(&vec![b'b'; DIRECT_ALIGN]);
        assert!(sink.write(&offset_by_one).unwrap());
        sink.buffered.sync_all().unwrap();
        let mut want = vec![b'a'; BATCH_BYTES];
        want.extend_from_slice(b"tail");
        want.extend_from_slice(&vec![b'a'; BATCH_BYTES]);
        want.extend_from_slice(&vec![b'b'; DIRECT_ALIGN]);
        assert!(std::fs::read(&path).unwrap() == want);
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
