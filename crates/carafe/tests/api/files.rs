//! Files: uploads (raw and multipart), type and name checks, size limits and listing, plus
//! the upload helpers the other file tests share.

use std::io::Cursor;
use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, eventually, problem};

file_tests!(
    raw_uploads_are_stored_processed_and_served_back,
    multipart_uploads_carry_metadata_and_owners,
    types_come_from_the_bytes_and_must_agree_with_the_name,
    sizes_over_the_bucket_limit_are_refused_early,
    names_are_sanitised_and_never_reach_the_disk,
    malformed_multipart_uploads_are_refused,
    a_client_that_disconnects_leaves_nothing,
);

/// A minimal valid PDF (type `pdf`).
pub fn pdf(body: &str) -> Vec<u8> {
    format!("%PDF-1.4\n1 0 obj <<>> endobj\n% {body}\ntrailer <<>>\n%%EOF\n").into_bytes()
}

/// A PNG of `w × h` pixels.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Uploads `bytes` as a raw body named `name` (via `Content-Disposition`).
pub async fn upload_raw(
    app: &TestApp,
    auth: &str,
    query: &str,
    name: &str,
    bytes: Vec<u8>,
) -> Response {
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    app.request(Method::POST, &format!("/api/v1/files{query}"), Some(auth))
        .header("content-type", "application/octet-stream")
        .header(
            "content-disposition",
            format!("attachment; filename*=UTF-8''{encoded}"),
        )
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// Uploads and waits for processing; the file must end up ready.
pub async fn upload_ready(app: &TestApp, name: &str, bytes: Vec<u8>) -> Value {
    let res = upload_raw(app, &app.admin_key, "?wait=30", name, bytes).await;
    if res.status() != 201 {
        panic!(
            "upload of {name}: {} {}",
            res.status(),
            res.text().await.unwrap()
        );
    }
    let file: Value = res.json().await.unwrap();
    assert_eq!(file["status"], "ready", "{file}");
    file
}

/// A `multipart/form-data` body from `(field, filename, bytes)` parts.
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "carafe-test-boundary-7d1f";
    let mut body = Vec::new();
    for (field, filename, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{field}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{field}\""),
        };
        body.extend_from_slice(format!("Content-Disposition: {disposition}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload_form(
    app: &TestApp,
    auth: &str,
    query: &str,
    parts: &[(&str, Option<&str>, &[u8])],
) -> Response {
    let (content_type, body) = multipart(parts);
    app.request(Method::POST, &format!("/api/v1/files{query}"), Some(auth))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn raw_uploads_are_stored_processed_and_served_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = pdf("quarterly report");
    let res = upload_raw(&app, &app.admin_key, "", "보고서_2025Q4.pdf", bytes.clone()).await;
    assert_eq!(res.status(), 202, "answered before processing");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let file: Value = res.json().await.unwrap();
    assert_eq!(file["status"], "processing");
    assert_eq!(file["name"], "보고서_2025Q4.pdf");
    assert_eq!(file["type"], "pdf");
    assert_eq!(file["mime"], "application/pdf");
    assert_eq!(file["size"], bytes.len());
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert_eq!(file["sha256"], sha);
    let id = file["id"].as_str().unwrap().to_owned();
    assert!(location.ends_with(&format!("/api/v1/files/{id}")));
    // The processing job finishes and the file becomes ready.
    let job = file["job_id"].as_i64().unwrap();
    eventually(Duration::from_secs(20), || async {
        let f: Value = app
            .get(&format!("/api/v1/files/{id}"), Some(&app.admin_key))
            .await
            .json()
            .await
            .unwrap();
        f["status"] == "ready"
    })
    .await;
    // The job's completion is written just after the file's (completions are batched).
    eventually(Duration::from_secs(20), || async {
        let job: Value = app
            .get(&format!("/api/v1/jobs/{job}"), Some(&app.admin_key))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(job["queue"], "carafe.files");
        job["state"] == "completed"
    })
    .await;
    let f: Value = app
        .get(&format!("/api/v1/files/{id}"), Some(&app.admin_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        f["scan"]["result"], "unscanned",
        "no scanner configured: {f}"
    );
    let res = app
        .get(&format!("/api/v1/files/{id}/content"), Some(&app.admin_key))
        .await;
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-type"], "application/pdf");
    assert!(h.contains_key("last-modified"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    let cd = h["content-disposition"].to_str().unwrap();
    assert!(cd.starts_with("inline"), "{cd}");
    assert!(
        cd.contains("filename*=UTF-8''%EB%B3%B4%EA%B3%A0%EC%84%9C_2025Q4.pdf"),
        "{cd}"
    );
    assert!(
        h.get("content-encoding").is_none(),
        "file content is never compressed"
    );
    assert_eq!(res.bytes().await.unwrap(), bytes);
    // `?wait` answers 201 once processing is done in time.
    let again = upload_raw(&app, &app.admin_key, "?wait=30", "again.pdf", pdf("x")).await;
    assert_eq!(again.status(), 201);
    assert!(app.temp_files().is_empty(), "no temporary files remain");
}

async fn multipart_uploads_carry_metadata_and_owners(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let meta = br#"{"invoice": 42}"#;
    let body = pdf("invoice");
    let res = upload_form(
        &app,
        &app.admin_key,
        "?owner=alice&wait=30",
        &[
            ("metadata", None, meta),
            ("file", Some("invoice.pdf"), &body),
        ],
    )
    .await;
    assert_eq!(res.status(), 201);
    let file: Value = res.json().await.unwrap();
    assert_eq!(file["metadata"], json!({"invoice": 42}));
    assert_eq!(file["owner"], "alice");
    assert_eq!(file["name"], "invoice.pdf");
    // A user's upload is theirs, whatever the query says.
    let bob = app.user_token("bob", &["files"]).await;
    let res = upload_form(
        &app,
        &bob,
        "?owner=alice",
        &[("file", Some("notes.txt"), b"hello from bob")],
    )
    .await;
    assert_eq!(res.status(), 202);
    let bobs: Value = res.json().await.unwrap();
    assert_eq!(bobs["owner"], "bob");
    assert_eq!(bobs["type"], "txt");
    // Listing filters; users see only their own.
    let all: Value = app
        .get("/api/v1/files?owner=alice", Some(&app.admin_key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let mine: Value = app
        .get("/api/v1/files", Some(&bob))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes.txt"]);
    let paged = app.get("/api/v1/files?limit=1", Some(&app.admin_key)).await;
    assert!(paged.headers().contains_key("link"));
    let bad = app
        .get("/api/v1/files?status=lost", Some(&app.admin_key))
        .await;
    problem(bad, 422, "validation_failed").await;
    let bad_meta = upload_form(
        &app,
        &app.admin_key,
        "",
        &[("metadata", None, b"[1,2]"), ("file", Some("a.txt"), b"x")],
    )
    .await;
    problem(bad_meta, 422, "validation_failed").await;
    // Metadata is limited to 16 KiB.
    let big = format!("{{\"n\": \"{}\"}}", "x".repeat(17 * 1024));
    let too_big = upload_form(
        &app,
        &app.admin_key,
        "",
        &[
            ("metadata", None, big.as_bytes()),
            ("file", Some("a.txt"), b"x"),
        ],
    )
    .await;
    problem(too_big, 422, "validation_failed").await;
}

async fn types_come_from_the_bytes_and_must_agree_with_the_name(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("photo.pdf", png(4, 4), 415, "extension_mismatch"),
        (
            "page.png",
            b"<!DOCTYPE html><html><script>alert(1)</script></html>".to_vec(),
            415,
            "extension_mismatch",
        ),
        (
            "invoice.pdf.exe",
            [b"MZ\x90\x00\x03\x00\x00\x00".as_slice(), &[0u8; 120]].concat(),
            415,
            "type_not_allowed",
        ),
        (
            "anim.gif",
            b"GIF89a\x01\x00\x01\x00<script>alert(1)</script>".to_vec(),
            415,
            "dangerous_content",
        ),
        (
            "notes.txt",
            b"plain text <script>alert(1)</script>".to_vec(),
            415,
            "dangerous_content",
        ),
        (
            "blob.bin",
            vec![0u8, 1, 2, 3, 0, 0, 0, 255, 254, 253],
            415,
            "type_unknown",
        ),
        ("empty.txt", Vec::new(), 400, "file_empty"),
    ];
    for (name, bytes, status, code) in cases {
        let res = upload_raw(&app, &key, "", name, bytes).await;
        problem(res, status, code).await;
    }
    // The client's Content-Type is ignored: a PNG sent as text/plain is a PNG.
    let res = app
        .request(
            Method::POST,
            "/api/v1/files?name=dot.png&wait=30",
            Some(&key),
        )
        .header("content-type", "text/plain")
        .body(png(2, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let file: Value = res.json().await.unwrap();
    assert_eq!(file["type"], "png");
    assert_eq!(file["mime"], "image/png");
    // A name without an extension gets its type's.
    let file = upload_ready(&app, "scan", pdf("no extension")).await;
    assert_eq!(file["name"], "scan.pdf");
    let listed: Value = app
        .get("/api/v1/files", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        2,
        "refused uploads leave no rows"
    );
    assert!(app.temp_files().is_empty());
}

async fn sizes_over_the_bucket_limit_are_refused_early(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .request(Method::PUT, "/api/v1/buckets/tiny", Some(&app.admin_key))
        .json(&json!({"max_size": 1024, "allowed_types": ["txt"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Declared too large: refused from the header alone.
    let res = upload_raw(
        &app,
        &app.admin_key,
        "?bucket=tiny",
        "big.txt",
        vec![b'a'; 4096],
    )
    .await;
    let body = problem(res, 413, "file_too_large").await;
    assert_eq!(body["max_size"], 1024);
    // Streamed without a length: refused once the count passes the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'b'; 512])).collect();
    let res = app
        .request(
            Method::POST,
            "/api/v1/files?bucket=tiny&name=big.txt",
            Some(&app.admin_key),
        )
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    problem(res, 413, "file_too_large").await;
    // Exactly at the limit is fine.
    let res = upload_raw(
        &app,
        &app.admin_key,
        "?bucket=tiny",
        "ok.txt",
        vec![b'c'; 1024],
    )
    .await;
    assert_eq!(res.status(), 202);
    let res = upload_raw(
        &app,
        &app.admin_key,
        "?bucket=nope",
        "ok.txt",
        b"x".to_vec(),
    )
    .await;
    problem(res, 404, "bucket_not_found").await;
    eventually(Duration::from_secs(5), || async {
        app.temp_files().is_empty()
    })
    .await;
}

async fn names_are_sanitised_and_never_reach_the_disk(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long = format!("{}.txt", "가".repeat(10_000));
    let cases = [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("/abs/path/report.txt", "report.txt"),
        ("C:\\Users\\x\\evil.txt", "evil.txt"),
        ("nul\u{0}and\u{7}bell.txt", "nulandbell.txt"),
        ("con.txt", "_con.txt"),
    ];
    for (given, shown) in cases {
        let res = upload_raw(&app, &app.admin_key, "", given, b"text".to_vec()).await;
        assert_eq!(res.status(), 202, "{given:?}");
        let file: Value = res.json().await.unwrap();
        assert_eq!(file["name"], shown, "{given:?}");
    }
    let res = upload_raw(&app, &app.admin_key, "", &long, b"text".to_vec()).await;
    let file: Value = res.json().await.unwrap();
    let name = file["name"].as_str().unwrap();
    assert!(name.len() <= 255 && name.ends_with(".txt"), "{name}");
    // Objects are stored under ids only (all in `objects/` once processed).
    eventually(Duration::from_secs(20), || async {
        app.objects("incoming").await.is_empty() && app.objects("objects").await.len() >= 6
    })
    .await;
    let stored = app.objects("objects").await;
    assert_eq!(stored.len(), 6);
    assert!(
        stored.iter().all(|n| uuid::Uuid::parse_str(n).is_ok()),
        "{stored:?}"
    );
    assert!(!app.data_dir().join("etc").exists());
}

async fn malformed_multipart_uploads_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    let res = upload_form(&app, &key, "", &[("metadata", None, b"{}")]).await;
    problem(res, 400, "file_missing").await;
    let many: Vec<(&str, Option<&str>, &[u8])> =
        (0..1000).map(|_| ("note", None, b"x".as_slice())).collect();
    let res = upload_form(&app, &key, "", &many).await;
    problem(res, 400, "too_many_parts").await;
    let res = upload_form(
        &app,
        &key,
        "",
        &[
            ("file", Some("a.txt"), b"one"),
            ("file", Some("b.txt"), b"two"),
        ],
    )
    .await;
    problem(res, 400, "multiple_files").await;
    let res = app
        .request(Method::POST, "/api/v1/files", Some(&key))
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nunterminated")
        .send()
        .await
        .unwrap();
    problem(res, 400, "invalid_multipart").await;
    let listed: Value = app
        .get("/api/v1/files", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
    eventually(Duration::from_secs(5), || async {
        app.temp_files().is_empty()
    })
    .await;
}

async fn a_client_that_disconnects_leaves_nothing(backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn(backend).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/files?name=partial.txt HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n",
        app.admin_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'a'; 5000]).await.unwrap();
    stream.flush().await.unwrap();
    // Wait until the server holds the partial upload, then vanish.
    eventually(Duration::from_secs(10), || async {
        !app.temp_files().is_empty()
    })
    .await;
    drop(stream);
    eventually(Duration::from_secs(10), || async {
        app.temp_files().is_empty()
    })
    .await;
    let listed = app.files().await;
    assert!(listed.is_empty(), "no row for a broken upload");
}
