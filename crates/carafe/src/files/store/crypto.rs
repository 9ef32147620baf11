//! The format of an encrypted object, kept pure so it can be tested on its own.
//!
//! `b"CRF1"` ‖ 7-byte random nonce prefix, then segments of up to 64 KiB of plaintext, each
//! stored as ciphertext ‖ 16-byte tag (AES-256-GCM under the file's data key). The nonce of
//! segment `i` is prefix ‖ `i` as 4 bytes big-endian ‖ 1 byte "last segment" flag: the STREAM
//! construction (Hoang, Reyhanitabar, Rogaway, Vizár). The counter binds each segment to its
//! place (swapping or repeating segments fails), the flag binds the end (cutting the object
//! at a segment boundary fails), and because a segment's nonce depends only on its index, a
//! Range request decrypts just the segments it touches. `aead-stream` implements the same
//! construction but only as a sequential encryptor/decryptor, so the few lines are our own.
//! An empty plaintext still has one (empty) last segment, so even it is authenticated.

use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::Path;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};

type Nonce = aes_gcm::aead::Nonce<Aes256Gcm>;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use rand::RngCore;

use super::storage::ByteStream;

pub const MAGIC: &[u8; 4] = b"CRF1";
pub const HEADER_LEN: u64 = 11;
/// Plaintext bytes per segment.
pub const SEGMENT: u64 = 64 * 1024;
pub const TAG_LEN: u64 = 16;
const STORED_SEGMENT: u64 = SEGMENT + TAG_LEN;

/// A file's data key (DEK). Never printed.
#[derive(Clone)]
pub struct DataKey {
    raw: [u8; 32],
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn generate() -> Self {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        Self::from_bytes(raw)
    }

    pub fn from_bytes(raw: [u8; 32]) -> Self {
        let cipher = Aes256Gcm::new_from_slice(&raw).expect("32-byte key");
        DataKey { raw, cipher }
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.raw
    }
}

fn io_err(msg: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("encrypted object: {msg}"),
    )
}

fn nonce(prefix: &[u8; 7], index: u64, last: bool) -> io::Result<Nonce> {
    let index = u32::try_from(index).map_err(|_| io_err("too many segments"))?;
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Ok(Nonce::from(n))
}

/// How many segments a plaintext of `size` bytes has (at least one).
pub fn segments(size: u64) -> u64 {
    size.div_ceil(SEGMENT).max(1)
}

/// The size of the object that holds `plain` bytes.
pub fn encrypted_size(plain: u64) -> u64 {
    HEADER_LEN + plain + segments(plain) * TAG_LEN
}

/// The plaintext size of an object of `stored` bytes, `None` if no object can be that long.
pub fn plain_size(stored: u64) -> Option<u64> {
    let body = stored.checked_sub(HEADER_LEN)?;
    let n = body.div_ceil(STORED_SEGMENT).max(1);
    let plain = body.checked_sub(n * TAG_LEN)?;
    (segments(plain) == n).then_some(plain)
}

fn header(prefix: &[u8; 7]) -> [u8; 11] {
    let mut h = [0u8; 11];
    h[..4].copy_from_slice(MAGIC);
    h[4..].copy_from_slice(prefix);
    h
}

/// The nonce prefix from an object's first `HEADER_LEN` bytes.
pub fn parse_header(h: &[u8]) -> io::Result<[u8; 7]> {
    if h.len() < HEADER_LEN as usize || &h[..4] != MAGIC {
        return Err(io_err("not a Carafe encrypted object"));
    }
    Ok(h[4..11].try_into().expect("7 bytes"))
}

fn seal(
    key: &DataKey,
    prefix: &[u8; 7],
    index: u64,
    last: bool,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let tag = key
        .cipher
        .encrypt_inout_detached(&nonce(prefix, index, last)?, b"", buf.as_mut_slice().into())
        .map_err(|_| io_err("segment could not be encrypted"))?;
    buf.extend_from_slice(&tag);
    Ok(())
}

fn open(key: &DataKey, prefix: &[u8; 7], index: u64, last: bool, seg: &[u8]) -> io::Result<Bytes> {
    let split = seg
        .len()
        .checked_sub(TAG_LEN as usize)
        .ok_or_else(|| io_err("segment too short"))?;
    let mut plain = seg[..split].to_vec();
    let tag = Tag::try_from(&seg[split..]).map_err(|_| io_err("bad tag"))?;
    key.cipher
        .decrypt_inout_detached(
            &nonce(prefix, index, last)?,
            b"",
            plain.as_mut_slice().into(),
            &tag,
        )
        .map_err(|_| io_err("a segment failed authentication"))?;
    Ok(Bytes::from(plain))
}

/// Encrypts everything `input` yields into `out`.
fn encrypt_to(key: &DataKey, mut input: impl Read, mut out: impl Write) -> io::Result<()> {
    let mut prefix = [0u8; 7];
    rand::rng().fill_bytes(&mut prefix);
    out.write_all(&header(&prefix))?;
    let mut current = read_segment(&mut input)?;
    let mut index = 0;
    loop {
        let next = if current.len() as u64 == SEGMENT {
            read_segment(&mut input)?
        } else {
            Vec::new()
        };
        let last = next.is_empty();
        seal(key, &prefix, index, last, &mut current)?;
        out.write_all(&current)?;
        if last {
            return Ok(());
        }
        current = next;
        index += 1;
    }
}

fn read_segment(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(SEGMENT as usize + TAG_LEN as usize);
    input.take(SEGMENT).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Encrypts the file at `src` into a new file at `dst`, synced. Blocking.
pub fn encrypt_file(key: &DataKey, src: &Path, dst: &Path) -> io::Result<()> {
    let input = io::BufReader::with_capacity(1 << 20, std::fs::File::open(src)?);
    let file = std::fs::File::create_new(dst)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, file);
    encrypt_to(key, input, &mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

pub fn encrypt_bytes(key: &DataKey, plain: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(encrypted_size(plain.len() as u64) as usize);
    encrypt_to(key, plain, &mut out).expect("in-memory encryption cannot fail");
    Bytes::from(out)
}

/// Decrypts a whole object held in memory.
pub fn decrypt_bytes(key: &DataKey, stored: &[u8]) -> io::Result<Bytes> {
    let prefix = parse_header(stored)?;
    let plain = plain_size(stored.len() as u64).ok_or_else(|| io_err("impossible length"))?;
    let n = segments(plain);
    let mut out = BytesMut::with_capacity(plain as usize);
    for (i, seg) in stored[HEADER_LEN as usize..]
        .chunks(STORED_SEGMENT as usize)
        .enumerate()
    {
        out.extend_from_slice(&open(key, &prefix, i as u64, i as u64 + 1 == n, seg)?);
    }
    Ok(out.freeze())
}

/// What to read of an object to get a plaintext range, and how to cut the decrypted bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The byte range of the object to read (whole segments, after the header).
    pub read: Range<u64>,
    pub first_segment: u64,
    /// All segments of the object.
    pub total_segments: u64,
    /// Bytes to drop from the first decrypted segment, then bytes to keep.
    pub skip: u64,
    pub take: u64,
}

/// The plan for `plain` (clamped to the file) of a file of `plain_size` bytes.
pub fn ciphertext_range(plain: Range<u64>, plain_size: u64) -> Plan {
    let end = plain.end.min(plain_size);
    let start = plain.start.min(end);
    let total = segments(plain_size);
    let first = (start / SEGMENT).min(total - 1);
    let last = if end > start {
        (end - 1) / SEGMENT
    } else {
        first
    };
    let read_end = (HEADER_LEN + (last + 1) * STORED_SEGMENT).min(encrypted_size(plain_size));
    Plan {
        read: HEADER_LEN + first * STORED_SEGMENT..read_end,
        first_segment: first,
        total_segments: total,
        skip: start - first * SEGMENT,
        take: end - start,
    }
}

/// Decrypts `input` (the bytes of `plan.read`) segment by segment, yielding only the planned
/// plaintext. A segment that fails authentication, or input that ends early, ends the stream
/// with an error: never wrong bytes.
pub fn decrypt_stream(key: DataKey, prefix: [u8; 7], plan: Plan, input: ByteStream) -> ByteStream {
    struct State {
        key: DataKey,
        prefix: [u8; 7],
        plan: Plan,
        index: u64,
        skip: u64,
        left: u64,
        buf: BytesMut,
        input: ByteStream,
        done: bool,
    }
    let state = State {
        key,
        prefix,
        index: plan.first_segment,
        skip: plan.skip,
        left: plan.take,
        plan,
        buf: BytesMut::new(),
        input,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done || (s.left == 0 && s.index > s.plan.first_segment) {
                return None;
            }
            let last = s.index + 1 == s.plan.total_segments;
            let want = if last {
                // The last segment is whatever remains of the object.
                s.plan.read.end.saturating_sub(
                    s.plan.read.start + (s.index - s.plan.first_segment) * STORED_SEGMENT,
                )
            } else {
                STORED_SEGMENT
            } as usize;
            if s.buf.len() < want {
                match s.input.next().await {
                    Some(Ok(chunk)) => {
                        s.buf.extend_from_slice(&chunk);
                        continue;
                    }
                    Some(Err(e)) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                    None => {
                        s.done = true;
                        return Some((Err(io_err("the object is truncated")), s));
                    }
                }
            }
            let seg = s.buf.split_to(want);
            let plain = match open(&s.key, &s.prefix, s.index, last, &seg) {
                Ok(p) => p,
                Err(e) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
            };
            s.index += 1;
            let from = (s.skip as usize).min(plain.len());
            s.skip = 0;
            let to = (from as u64 + s.left).min(plain.len() as u64) as usize;
            s.left -= (to - from) as u64;
            if last {
                s.done = true;
            }
            if to > from {
                return Some((Ok(plain.slice(from..to)), s));
            }
        }
    })
    .boxed()
}

#[cfg(test)]
#[path = "crypto_tests.rs"]
mod tests;
