//! Tests for `crypto.rs`: round trips (in memory, from files, as streams), ranges that
//! decrypt only their segments, and tampering, truncation, swapped segments and wrong keys
//! that must fail.

use super::*;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn stream_of(bytes: Bytes, chunk: usize) -> ByteStream {
    let parts: Vec<io::Result<Bytes>> = (0..bytes.len().div_ceil(chunk).max(1))
        .map(|i| Ok(bytes.slice(i * chunk..((i + 1) * chunk).min(bytes.len()))))
        .collect();
    futures::stream::iter(parts).boxed()
}

async fn read_range(
    key: &DataKey,
    stored: &Bytes,
    plain: Range<u64>,
    size: u64,
) -> io::Result<Vec<u8>> {
    let prefix = parse_header(stored)?;
    let plan = ciphertext_range(plain, size);
    let end = (plan.read.end as usize).min(stored.len());
    let input = stream_of(
        stored.slice((plan.read.start as usize).min(end)..end),
        10_000,
    );
    let mut out = Vec::new();
    let mut s = decrypt_stream(key.clone(), prefix, plan, input);
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

const SIZES: [usize; 6] = [0, 1, 65535, 65536, 65537, 3 * 65536 + 5];

#[tokio::test]
async fn round_trips_in_memory_from_files_and_as_streams() {
    let key = DataKey::generate();
    let dir = tempfile::tempdir().unwrap();
    for size in SIZES {
        let plain = pattern(size);
        let stored = encrypt_bytes(&key, &plain);
        assert_eq!(
            stored.len() as u64,
            encrypted_size(size as u64),
            "size {size}"
        );
        assert_eq!(plain_size(stored.len() as u64), Some(size as u64));
        assert_eq!(&stored[..4], MAGIC);
        assert_eq!(decrypt_bytes(&key, &stored).unwrap(), plain, "size {size}");
        let all = read_range(&key, &stored, 0..size as u64, size as u64)
            .await
            .unwrap();
        assert_eq!(all, plain, "streamed, size {size}");
        let src = dir.path().join(format!("p{size}"));
        let dst = dir.path().join(format!("c{size}"));
        std::fs::write(&src, &plain).unwrap();
        encrypt_file(&key, &src, &dst).unwrap();
        let from_file = std::fs::read(&dst).unwrap();
        assert_eq!(decrypt_bytes(&key, &from_file).unwrap(), plain);
        if size > 16 {
            assert!(!from_file.windows(16).any(|w| w == &plain[..16]));
        }
    }
}

#[tokio::test]
async fn ranges_decrypt_only_the_segments_they_need() {
    let key = DataKey::generate();
    let size = 3 * 65536 + 5;
    let plain = pattern(size);
    let stored = encrypt_bytes(&key, &plain);
    let plan = ciphertext_range(65530..65546, size as u64);
    assert_eq!(plan.first_segment, 0);
    assert_eq!(plan.read, HEADER_LEN..HEADER_LEN + 2 * STORED_SEGMENT);
    let plan = ciphertext_range(2 * 65536 + 3..2 * 65536 + 4, size as u64);
    assert_eq!(plan.first_segment, 2);
    assert_eq!(plan.read.end - plan.read.start, STORED_SEGMENT);
    let tail = ciphertext_range(3 * 65536..size as u64, size as u64);
    assert_eq!(tail.read.end, stored.len() as u64);
    for r in [
        65530..65546,
        0..1,
        131072..196613,
        70000..70001,
        196610..196613,
    ] {
        let got = read_range(&key, &stored, r.clone(), size as u64)
            .await
            .unwrap();
        assert_eq!(got, &plain[r.start as usize..r.end as usize], "{r:?}");
    }
    // Corrupting a segment the range does not touch does not matter to it.
    let mut bad = stored.to_vec();
    bad[HEADER_LEN as usize + 5] ^= 1;
    let bad = Bytes::from(bad);
    let got = read_range(&key, &bad, 70000..70010, size as u64)
        .await
        .unwrap();
    assert_eq!(got, &plain[70000..70010]);
    assert!(read_range(&key, &bad, 0..10, size as u64).await.is_err());
}

#[tokio::test]
async fn tampering_truncation_swaps_and_wrong_keys_fail() {
    let key = DataKey::generate();
    let size = 3 * 65536 + 5;
    let n = size as u64;
    let plain = pattern(size);
    let stored = encrypt_bytes(&key, &plain);
    let mut flipped = stored.to_vec();
    flipped[stored.len() / 2] ^= 0x40;
    let flipped = Bytes::from(flipped);
    assert!(decrypt_bytes(&key, &flipped).is_err());
    assert!(read_range(&key, &flipped, 0..n, n).await.is_err());

    let s = STORED_SEGMENT as usize;
    let h = HEADER_LEN as usize;
    let mut swapped = stored.to_vec();
    let (a, b) = (stored[h..h + s].to_vec(), stored[h + s..h + 2 * s].to_vec());
    swapped[h..h + s].copy_from_slice(&b);
    swapped[h + s..h + 2 * s].copy_from_slice(&a);
    let swapped = Bytes::from(swapped);
    assert!(decrypt_bytes(&key, &swapped).is_err());
    assert!(read_range(&key, &swapped, 0..n, n).await.is_err());

    // Cut at a segment boundary: the new last segment is not flagged last.
    let cut = stored.slice(..h + 2 * s);
    assert!(decrypt_bytes(&key, &cut).is_err());
    assert!(read_range(&key, &cut, 0..n, n).await.is_err());
    let short = stored.slice(..stored.len() - 3);
    assert!(read_range(&key, &short, 0..n, n).await.is_err());

    let other = DataKey::generate();
    assert!(decrypt_bytes(&other, &stored).is_err());
    assert!(read_range(&other, &stored, 0..n, n).await.is_err());
    assert!(decrypt_bytes(&key, b"CRX1abcdefg").is_err());

    let empty = encrypt_bytes(&key, b"");
    assert!(read_range(&other, &empty, 0..0, 0).await.is_err());
}
