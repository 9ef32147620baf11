//! File processing: virus scanning with a real clamd (fail closed when it cannot answer),
//! metadata stripping without re-encoding, thumbnails, and decompression bombs.

use std::io::Cursor;
use std::time::Duration;

use img_parts::{Bytes, ImageEXIF};
use reqwest::Method;
use serde_json::{Value, json};

use crate::files::{pdf, upload_raw};
use crate::helpers::{Backend, TestApp};
use crate::sse::read_sse;

file_tests!(
    an_unreachable_scanner_fails_closed_unless_scanning_is_optional,
    photos_lose_their_metadata_but_keep_their_orientation,
    decompression_bombs_and_truncated_images_are_rejected,
);

/// Tests that need a real clamd, on each database and storage.
mod clamd {
    use super::*;

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL"]
    async fn sqlite_malware_is_quarantined() {
        malware_is_quarantined_and_never_served(Backend::Sqlite).await
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL and CARAFE_TEST_POSTGRES_URL"]
    async fn postgres_malware_is_quarantined() {
        malware_is_quarantined_and_never_served(Backend::Postgres).await
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL and CARAFE_TEST_S3_URL"]
    async fn s3_sqlite_malware_is_quarantined() {
        malware_is_quarantined_and_never_served(Backend::S3Sqlite).await
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL, CARAFE_TEST_S3_URL and CARAFE_TEST_POSTGRES_URL"]
    async fn s3_postgres_malware_is_quarantined() {
        malware_is_quarantined_and_never_served(Backend::S3Postgres).await
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL"]
    async fn sqlite_auto_scans_like_required() {
        auto_scans_like_required_with_a_scanner(Backend::Sqlite).await
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL and CARAFE_TEST_POSTGRES_URL"]
    async fn postgres_auto_scans_like_required() {
        auto_scans_like_required_with_a_scanner(Backend::Postgres).await
    }
}

fn clamd_url() -> String {
    std::env::var("CARAFE_TEST_CLAMD_URL").expect(
        "CARAFE_TEST_CLAMD_URL is not set: run scripts/services/clamd (scripts/test-all does)",
    )
}

/// The EICAR test string, built from two halves so that no file holds it whole.
pub fn eicar() -> Vec<u8> {
    let a = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-";
    let b = "STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    format!("{a}{b}").into_bytes()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zip archive holding one stored (uncompressed) member.
fn zip_with(name: &str, data: &[u8]) -> Vec<u8> {
    let crc = crc32(data);
    let (n, len) = (name.len() as u16, data.len() as u32);
    let mut zip = Vec::new();
    zip.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    zip.extend_from_slice(&crc.to_le_bytes());
    zip.extend_from_slice(&len.to_le_bytes());
    zip.extend_from_slice(&len.to_le_bytes());
    zip.extend_from_slice(&n.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip.extend_from_slice(name.as_bytes());
    zip.extend_from_slice(data);
    let central = zip.len() as u32;
    zip.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    zip.extend_from_slice(&crc.to_le_bytes());
    zip.extend_from_slice(&len.to_le_bytes());
    zip.extend_from_slice(&len.to_le_bytes());
    zip.extend_from_slice(&n.to_le_bytes());
    zip.extend_from_slice(&[0u8; 12]);
    zip.extend_from_slice(&0u32.to_le_bytes());
    zip.extend_from_slice(name.as_bytes());
    let size = zip.len() as u32 - central;
    zip.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00");
    zip.extend_from_slice(&size.to_le_bytes());
    zip.extend_from_slice(&central.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes());
    zip
}

pub async fn put_bucket(app: &TestApp, name: &str, policy: Value) {
    let res = app
        .request(
            Method::PUT,
            &format!("/api/v1/buckets/{name}"),
            Some(&app.admin_key),
        )
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
}

pub async fn upload_processed(app: &TestApp, query: &str, name: &str, bytes: Vec<u8>) -> Value {
    let res = upload_raw(app, &app.admin_key, query, name, bytes).await;
    assert!(res.status().is_success(), "{name}: {}", res.status());
    let file: Value = res.json().await.unwrap();
    processed(app, file["id"].as_str().unwrap()).await
}

/// Waits until the file's processing has ended; returns its record.
pub async fn processed(app: &TestApp, id: &str) -> Value {
    let id = id.to_owned();
    crate::helpers::eventually(Duration::from_secs(30), || {
        let id = id.clone();
        async move {
            let file: Value = app
                .get(&format!("/api/v1/files/{id}"), Some(&app.admin_key))
                .await
                .json()
                .await
                .unwrap();
            file["status"] != "processing"
        }
    })
    .await;
    app.get(&format!("/api/v1/files/{id}"), Some(&app.admin_key))
        .await
        .json()
        .await
        .unwrap()
}

async fn malware_is_quarantined_and_never_served(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.clamd_url = Some(clamd_url())).await;
    put_bucket(&app, "archives", json!({"allowed_types": ["zip", "txt"]})).await;
    let clean = upload_processed(&app, "", "clean.txt", b"nothing to see here".to_vec()).await;
    assert_eq!(clean["status"], "ready");
    assert_eq!(clean["scan"], json!({"result": "clean"}));
    for (query, name, bytes) in [
        ("", "eicar.txt", eicar()),
        (
            "?bucket=archives",
            "eicar.zip",
            zip_with("eicar.com", &eicar()),
        ),
    ] {
        let file = upload_processed(&app, query, name, bytes).await;
        assert_eq!(file["status"], "quarantined", "{file}");
        assert_eq!(file["error"]["code"], "malware_found");
        assert_eq!(file["scan"]["result"], "infected");
        assert!(
            file["scan"]["signature"]
                .as_str()
                .unwrap()
                .contains("EICAR")
        );
        let id = file["id"].as_str().unwrap();
        let res = app
            .get(&format!("/api/v1/files/{id}/content"), Some(&app.admin_key))
            .await;
        let body = crate::helpers::problem(res, 409, "file_not_ready").await;
        assert_eq!(body["file_status"], "quarantined");
        let res = app
            .post_json(
                &format!("/api/v1/files/{id}/links"),
                Some(&app.admin_key),
                &json!({}),
            )
            .await;
        crate::helpers::problem(res, 409, "file_not_ready").await;
        assert!(app.has_object(&format!("quarantine/{id}")).await);
        assert!(!app.has_object(&format!("objects/{id}")).await);
        let events = app.audit_items("?limit=100").await;
        let actions: Vec<&str> = events
            .iter()
            .filter(|e| e["target"] == format!("file:{id}").as_str())
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["file.quarantine", "file.scan", "file.upload"]);
    }
}

/// `auto` (the default) with a scanner configured: scanned, and infected files quarantined.
async fn auto_scans_like_required_with_a_scanner(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.clamd_url = Some(clamd_url())).await;
    put_bucket(
        &app,
        "docs",
        json!({"allowed_types": ["txt"], "scan": "auto"}),
    )
    .await;
    let clean = upload_processed(&app, "?bucket=docs", "clean.txt", b"harmless".to_vec()).await;
    assert_eq!(clean["status"], "ready");
    assert_eq!(clean["scan"], json!({"result": "clean"}));
    let file = upload_processed(&app, "?bucket=docs", "eicar.txt", eicar()).await;
    assert_eq!(file["status"], "quarantined", "{file}");
    assert_eq!(file["error"]["code"], "malware_found");
    let id = file["id"].as_str().unwrap();
    assert!(!app.has_object(&format!("objects/{id}")).await);
}

async fn an_unreachable_scanner_fails_closed_unless_scanning_is_optional(backend: Backend) {
    // Nothing listens on this port: every scan is a retryable failure.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = TestApp::spawn_with(backend, |c| {
        c.clamd_url = Some(format!("tcp://127.0.0.1:{port}"));
        c.files.scan_attempts = 2;
        c.files.scan_retry_base = carafe::config::HumanDuration(Duration::from_millis(10));
    })
    .await;
    let file = upload_processed(&app, "", "report.pdf", pdf("unscanned")).await;
    assert_eq!(file["status"], "quarantined", "{file}");
    assert_eq!(file["error"]["code"], "scanner_unavailable");
    let job: Value = app
        .get(
            &format!("/api/v1/jobs/{}", file["job_id"]),
            Some(&app.admin_key),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["attempt"], 2, "retried before giving up: {job}");
    put_bucket(
        &app,
        "relaxed",
        json!({"allowed_types": ["pdf"], "scan": "optional"}),
    )
    .await;
    let file = upload_processed(&app, "?bucket=relaxed", "report.pdf", pdf("relaxed")).await;
    assert_eq!(file["status"], "ready");
    assert_eq!(file["scan"]["result"], "unscanned");
}

/// A TIFF/EXIF block with an orientation and a description (standing in for GPS data).
fn exif(orientation: u16, description: &str) -> Vec<u8> {
    let mut text = description.as_bytes().to_vec();
    text.push(0);
    let mut t = b"II*\x00\x08\x00\x00\x00".to_vec();
    t.extend_from_slice(&2u16.to_le_bytes());
    // 0x010E ImageDescription, ASCII, count, offset of the text after the IFD.
    t.extend_from_slice(&0x010Eu16.to_le_bytes());
    t.extend_from_slice(&2u16.to_le_bytes());
    t.extend_from_slice(&(text.len() as u32).to_le_bytes());
    t.extend_from_slice(&(8 + 2 + 24 + 4u32).to_le_bytes());
    // 0x0112 Orientation, SHORT, 1 value.
    t.extend_from_slice(&0x0112u16.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&orientation.to_le_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(&text);
    t
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn photos_lose_their_metadata_but_keep_their_orientation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A 400×200 JPEG shot sideways (orientation 6), with location, XMP and a comment.
    let img = image::RgbImage::from_fn(400, 200, |x, _| image::Rgb([(x % 256) as u8, 90, 200]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    let mut jpeg = img_parts::jpeg::Jpeg::from_bytes(Bytes::from(out.into_inner())).unwrap();
    jpeg.set_exif(Some(Bytes::from(exif(6, "GPS 37.5665N 126.9780E"))));
    let xmp = [
        b"http://ns.adobe.com/xap/1.0/\0".as_slice(),
        b"<x:xmpmeta>xmp-secret</x:xmpmeta>",
    ]
    .concat();
    let segments = jpeg.segments_mut();
    segments.insert(
        1,
        img_parts::jpeg::JpegSegment::new_with_contents(0xE1, Bytes::from(xmp)),
    );
    segments.insert(
        1,
        img_parts::jpeg::JpegSegment::new_with_contents(
            0xFE,
            Bytes::from_static(b"comment-secret"),
        ),
    );
    let mut original = Vec::new();
    jpeg.encoder().write_to(&mut original).unwrap();
    assert!(find(&original, b"37.5665N") && find(&original, b"xmp-secret"));

    let file = upload_processed(&app, "", "holiday.jpg", original.clone()).await;
    assert_eq!(file["status"], "ready", "{file}");
    let id = file["id"].as_str().unwrap();
    let stored = app
        .get(&format!("/api/v1/files/{id}/content"), Some(&app.admin_key))
        .await
        .bytes()
        .await
        .unwrap();
    for secret in [b"37.5665N".as_slice(), b"xmp-secret", b"comment-secret"] {
        assert!(
            !find(&stored, secret),
            "{} survived",
            String::from_utf8_lossy(secret)
        );
    }
    assert_eq!(
        file["size"],
        stored.len(),
        "the record describes the stored bytes"
    );
    assert_eq!(
        file["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored))
    );
    let stripped = img_parts::jpeg::Jpeg::from_bytes(stored.clone()).unwrap();
    let kept = stripped.exif().expect("orientation is kept");
    assert_eq!(
        carafe::files::check::images::exif_orientation(&kept),
        Some(6)
    );
    // The pixels were not re-encoded: the scan data is byte for byte the same.
    let scan = |j: &img_parts::jpeg::Jpeg| {
        j.segments()
            .iter()
            .find(|s| s.marker() == 0xDA)
            .map(|s| s.contents().clone())
    };
    let before = img_parts::jpeg::Jpeg::from_bytes(Bytes::from(original)).unwrap();
    assert_eq!(scan(&before), scan(&stripped));

    // The thumbnail is upright: 200×400 shown, fitted into 256×256.
    let thumb = &file["thumbnails"][0];
    assert_eq!(
        (
            thumb["name"].as_str(),
            thumb["width"].as_u64(),
            thumb["height"].as_u64()
        ),
        (Some("small"), Some(128), Some(256))
    );
    let res = app
        .get(
            &format!("/api/v1/files/{id}/thumbnails/small"),
            Some(&app.admin_key),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["etag"].to_str().unwrap().len() > 10);
    let bytes = res.bytes().await.unwrap();
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (128, 256));
    let missing = app
        .get(
            &format!("/api/v1/files/{id}/thumbnails/huge"),
            Some(&app.admin_key),
        )
        .await;
    assert_eq!(missing.status(), 404);

    // Progress was reported on the processing job's event stream.
    let res = app
        .get(
            &format!("/api/v1/jobs/{}/events", file["job_id"]),
            Some(&app.admin_key),
        )
        .await;
    let events = read_sse(res, 100).await;
    let stages: Vec<&str> = events
        .iter()
        .filter_map(|e| e.data["progress"]["stage"].as_str())
        .collect();
    assert!(
        stages.contains(&"scan") && stages.contains(&"images"),
        "{events:?}"
    );
}

/// A PNG that declares `w × h` pixels and holds no image data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    png.extend_from_slice(&0u32.to_be_bytes());
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    png
}

async fn decompression_bombs_and_truncated_images_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bomb = upload_processed(&app, "", "bomb.png", png_header(50_000, 50_000)).await;
    assert_eq!(bomb["status"], "rejected", "{bomb}");
    assert_eq!(bomb["error"]["code"], "image_too_large");
    let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    let jpeg = out.into_inner();
    let truncated = jpeg[..jpeg.len() / 2].to_vec();
    let cut = upload_processed(&app, "", "cut.jpg", truncated).await;
    assert_eq!(cut["status"], "rejected", "{cut}");
    assert_eq!(cut["error"]["code"], "image_corrupt");
    // Rejected bytes are not kept.
    for file in [&bomb, &cut] {
        let id = file["id"].as_str().unwrap();
        assert!(!app.has_object(&format!("objects/{id}")).await);
        assert!(!app.has_object(&format!("incoming/{id}")).await);
    }
}
