//! Read buffers of local downloads, reused. A download reads its file in chunks of `SIZE`, and
//! each chunk's buffer comes back here once the chunk has been sent, instead of being freed and
//! allocated anew: a fresh buffer of this size per chunk costs the allocator a trip to its page
//! allocator and the kernel page faults, several times per megabyte sent. At most `KEPT`
//! buffers are kept (8 MiB); any more are freed. (A mutex-guarded list is all this needs: one
//! lock per chunk, not per request; pool crates add nothing here.)

use std::sync::Mutex;

use bytes::Bytes;

/// Bytes per chunk read.
pub const SIZE: usize = 256 * 1024;
/// Most idle buffers kept.
const KEPT: usize = 32;

static IDLE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer of `len` bytes (at most `SIZE`), reused when one is idle. Its bytes are whatever a
/// previous read left there (or zeros): the caller overwrites what it keeps.
pub fn take(len: usize) -> Vec<u8> {
    let idle = IDLE.lock().ok().and_then(|mut idle| idle.pop());
    let mut buf = idle.unwrap_or_else(|| Vec::with_capacity(SIZE));
    buf.resize(len, 0);
    buf
}

/// `buf` as `Bytes` that give the buffer back when the last of them is dropped.
pub fn bytes(buf: Vec<u8>) -> Bytes {
    Bytes::from_owner(Returned(buf))
}

struct Returned(Vec<u8>);

impl AsRef<[u8]> for Returned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        if buf.capacity() == SIZE
            && let Ok(mut idle) = IDLE.lock()
            && idle.len() < KEPT
        {
            idle.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_once_their_bytes_are_dropped() {
        let mut buf = take(SIZE);
        buf[..5].copy_from_slice(b"hello");
        buf.truncate(5);
        let ptr = buf.as_ptr();
        let bytes = bytes(buf);
        let part = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(&part[..], b"el", "a slice keeps the buffer alive");
        drop(part);
        // Other tests may take buffers meanwhile: look for this one among a few.
        let taken: Vec<Vec<u8>> = (0..KEPT).map(|_| take(10)).collect();
        let again = taken.iter().find(|b| b.as_ptr() == ptr).expect("reused");
        assert_eq!(again.len(), 10);
        assert_eq!(&again[..5], b"hello", "reused as it was, not zeroed again");
        assert_eq!(again.capacity(), SIZE);
    }
}
