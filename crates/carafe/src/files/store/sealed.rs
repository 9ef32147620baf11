//! Reading and writing objects through encryption when their file has a data key, and
//! directly when it has none, so processing and serving deal in plaintext either way. Only
//! the segments a range needs are read and decrypted; whole files stream segment by segment.

use std::io;
use std::ops::Range;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::crypto::{self, DataKey};
use super::storage::{ByteStream, Storage};
use crate::files::store::storage::temp::{Received, TempPath};

/// Streams `range` (the whole object when `None`) of the plaintext of `key`, whose plaintext
/// is `plain_size` bytes long.
pub async fn read(
    storage: &Storage,
    key: &str,
    dek: Option<&DataKey>,
    range: Option<Range<u64>>,
    plain_size: u64,
) -> io::Result<ByteStream> {
    let Some(dek) = dek else {
        return storage.read(key, range).await;
    };
    let plan = crypto::ciphertext_range(range.unwrap_or(0..plain_size), plain_size);
    let header = collect(
        storage.read(key, Some(0..crypto::HEADER_LEN)).await?,
        crypto::HEADER_LEN,
    )
    .await?;
    let prefix = crypto::parse_header(&header)?;
    let input = storage.read(key, Some(plan.read.clone())).await?;
    let key = key.to_owned();
    let stream = crypto::decrypt_stream(dek.clone(), prefix, plan, input).inspect(move |r| {
        if let Err(e) = r
            && e.kind() == io::ErrorKind::InvalidData
        {
            // Tampering or corruption at rest: worth an operator's attention.
            tracing::error!(object = %key, error = %e, "an encrypted object failed to decrypt");
        }
    });
    Ok(stream.boxed())
}

/// The whole plaintext of a (small) object in memory.
pub async fn read_all(
    storage: &Storage,
    key: &str,
    dek: Option<&DataKey>,
    plain_size: u64,
) -> io::Result<Bytes> {
    match dek {
        None => storage.read_all(key, plain_size).await,
        Some(dek) => {
            let stored = storage
                .read_all(key, crypto::encrypted_size(plain_size))
                .await?;
            let dek = dek.clone();
            tokio::task::spawn_blocking(move || crypto::decrypt_bytes(&dek, &stored))
                .await
                .map_err(io::Error::other)?
        }
    }
}

/// The plaintext size of an object as stored (for objects whose size the row may not know
/// yet, during processing); `None` when it does not exist.
pub async fn plain_size(
    storage: &Storage,
    key: &str,
    dek: Option<&DataKey>,
) -> io::Result<Option<u64>> {
    let Some(stored) = storage.size(key).await? else {
        return Ok(None);
    };
    match dek {
        None => Ok(Some(stored)),
        Some(_) => crypto::plain_size(stored)
            .map(Some)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an encrypted object")),
    }
}

/// Writes `bytes` to `key`, encrypted when there is a data key (with a fresh nonce prefix).
pub async fn put(
    storage: &Storage,
    key: &str,
    dek: Option<&DataKey>,
    bytes: Bytes,
) -> io::Result<()> {
    let bytes = match dek {
        None => bytes,
        Some(dek) => {
            let dek = dek.clone();
            tokio::task::spawn_blocking(move || crypto::encrypt_bytes(&dek, &bytes))
                .await
                .map_err(io::Error::other)?
        }
    };
    storage.put_bytes(key, bytes).await
}

/// `received` sealed under `dek` into a new synced temporary file in `dir`, before any of it
/// reaches storage (the plaintext file is removed); its size, hash and head stay those of the
/// plaintext.
pub async fn seal_received(dir: &Path, dek: &DataKey, received: Received) -> io::Result<Received> {
    let dst = dir.join(format!("{}.enc", uuid::Uuid::now_v7().simple()));
    let src = received.path().to_path_buf();
    let (dek, out) = (dek.clone(), dst.clone());
    let done = tokio::task::spawn_blocking(move || crypto::encrypt_file(&dek, &src, &out))
        .await
        .map_err(io::Error::other);
    // Guarded before checking, so a failure leaves no partial file.
    let sealed = TempPath::new(dst);
    done.and_then(|r| r)?;
    Ok(received.with_file(sealed))
}

async fn collect(mut stream: ByteStream, len: u64) -> io::Result<Bytes> {
    let mut out = BytesMut::with_capacity(len as usize);
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}
