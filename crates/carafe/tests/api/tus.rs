//! Resumable uploads (tus 1.0): discovery, chunks with checksums, creation with upload,
//! offsets, limits, termination and expiry, plus the tus helpers the other
//! upload tests share.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::files::pdf;
use crate::helpers::{Backend, TestApp, eventually, problem};

file_tests!(
    discovery_and_version_negotiation,
    chunks_with_checksums_become_a_processed_file,
    creation_with_upload_takes_the_first_chunk,
    offsets_and_content_types_are_checked,
    a_checksum_mismatch_discards_the_chunk,
    lengths_and_limits_are_enforced,
    terminated_uploads_are_gone,
    expired_uploads_are_gone_and_swept,
);

/// `Upload-Metadata` from pairs.
pub fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256 {}", STANDARD.encode(Sha256::digest(bytes)))
}

pub fn tus(app: &TestApp, method: Method, url: &str, auth: &str) -> RequestBuilder {
    let url = if url.starts_with("http") {
        url.to_owned()
    } else {
        app.url(url)
    };
    app.client
        .request(method, url)
        .bearer_auth(auth)
        .header("tus-resumable", "1.0.0")
}

pub async fn create(app: &TestApp, auth: &str, length: usize, meta: &str) -> Response {
    tus(app, Method::POST, "/api/v1/uploads", auth)
        .header("upload-length", length.to_string())
        .header("upload-metadata", meta)
        .send()
        .await
        .unwrap()
}

/// Creates an upload of `length` bytes named `name`; returns its URL.
pub async fn new_upload(app: &TestApp, auth: &str, length: usize, name: &str) -> String {
    let res = create(app, auth, length, &metadata(&[("filename", name)])).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["upload-offset"], "0");
    res.headers()["location"].to_str().unwrap().to_owned()
}

pub async fn patch(app: &TestApp, auth: &str, url: &str, offset: usize, chunk: &[u8]) -> Response {
    tus(app, Method::PATCH, url, auth)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset.to_string())
        .header("upload-checksum", sha256(chunk))
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
}

pub async fn head(app: &TestApp, auth: &str, url: &str) -> Response {
    tus(app, Method::HEAD, url, auth).send().await.unwrap()
}

pub async fn offset_of(app: &TestApp, url: &str) -> u64 {
    let res = head(app, &app.admin_key, url).await;
    assert_eq!(res.status(), 200);
    res.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub fn header(res: &Response, name: &str) -> String {
    res.headers()[name].to_str().unwrap().to_owned()
}

pub fn upload_id(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

/// Names of the upload's stored chunks.
pub async fn chunks(app: &TestApp, url: &str) -> Vec<String> {
    app.objects(&format!("uploads/{}", upload_id(url))).await
}

/// Waits until the file is processed; returns its record.
pub async fn ready_file(app: &TestApp, id: &str) -> Value {
    let path = format!("/api/v1/files/{id}");
    eventually(Duration::from_secs(20), || async {
        let file: Value = app
            .get(&path, Some(&app.admin_key))
            .await
            .json()
            .await
            .unwrap();
        file["status"] == "ready"
    })
    .await;
    app.get(&path, Some(&app.admin_key))
        .await
        .json()
        .await
        .unwrap()
}

pub async fn content(app: &TestApp, id: &str) -> Vec<u8> {
    let res = app
        .get(&format!("/api/v1/files/{id}/content"), Some(&app.admin_key))
        .await;
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap().to_vec()
}

/// A PDF of about `size` bytes whose text depends on `seed`.
pub fn big_pdf(size: usize, seed: u8) -> Vec<u8> {
    let body: String = (0..size)
        .map(|i| (b'a' + ((i as u8) ^ seed) % 26) as char)
        .collect();
    pdf(&body)
}

async fn discovery_and_version_negotiation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .request(Method::OPTIONS, "/api/v1/uploads", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "OPTIONS needs no credentials");
    assert_eq!(header(&res, "tus-resumable"), "1.0.0");
    assert_eq!(header(&res, "tus-version"), "1.0.0");
    let extensions = header(&res, "tus-extension");
    for ext in [
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
        "checksum",
    ] {
        assert!(extensions.split(',').any(|e| e == ext), "{extensions}");
    }
    assert_eq!(header(&res, "tus-checksum-algorithm"), "sha256");
    assert_eq!(header(&res, "tus-max-size"), "5368709120");
    // Every other request must speak 1.0.0; the answer says which versions are served.
    for version in [None, Some("0.2.2")] {
        let mut req = app
            .request(Method::POST, "/api/v1/uploads", Some(&app.admin_key))
            .header("upload-length", "10");
        if let Some(v) = version {
            req = req.header("tus-resumable", v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(header(&res, "tus-version"), "1.0.0");
        assert_eq!(header(&res, "tus-resumable"), "1.0.0");
        problem(res, 412, "tus_version_unsupported").await;
    }
    let res = tus(&app, Method::HEAD, "/api/v1/uploads/nope", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(header(&res, "tus-resumable"), "1.0.0", "errors too");
    let res = app
        .request(Method::POST, "/api/v1/uploads", None)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

async fn chunks_with_checksums_become_a_processed_file(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = big_pdf(300_000, 1);
    let meta = metadata(&[
        ("filename", "보고서 2025.pdf"),
        ("filetype", "application/pdf"),
        ("invoice", "7"),
    ]);
    let res = create(&app, &app.admin_key, bytes.len(), &meta).await;
    assert_eq!(res.status(), 201);
    let url = header(&res, "location");
    assert!(url.starts_with(&app.base), "absolute: {url}");
    let expires = httpdate::parse_http_date(&header(&res, "upload-expires")).unwrap();
    let ttl = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(ttl > Duration::from_secs(23 * 3600), "24 h by default");
    let res = head(&app, &app.admin_key, &url).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "upload-length"), bytes.len().to_string());
    assert_eq!(header(&res, "cache-control"), "no-store");
    assert_eq!(header(&res, "upload-metadata").split(',').count(), 3);

    let cuts = [0, 100_000, 200_000, bytes.len()];
    for pair in cuts.windows(2) {
        let res = patch(
            &app,
            &app.admin_key,
            &url,
            pair[0],
            &bytes[pair[0]..pair[1]],
        )
        .await;
        assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
        assert_eq!(header(&res, "upload-offset"), pair[1].to_string());
        assert_eq!(header(&res, "tus-resumable"), "1.0.0");
        if pair[1] < bytes.len() {
            assert!(res.headers().get("carafe-file-id").is_none());
            assert_eq!(offset_of(&app, &url).await, pair[1] as u64);
        }
    }
    let res = head(&app, &app.admin_key, &url).await;
    assert_eq!(header(&res, "upload-offset"), bytes.len().to_string());
    let id = header(&res, "carafe-file-id");
    assert_eq!(
        header(&res, "carafe-file-url"),
        format!("{}/api/v1/files/{id}", app.base)
    );
    let file = ready_file(&app, &id).await;
    assert_eq!(file["name"], "보고서 2025.pdf");
    assert_eq!(file["bucket"], "default");
    assert_eq!(file["type"], "pdf");
    assert_eq!(file["metadata"]["invoice"], "7");
    assert!(file["metadata"].get("filename").is_none());
    assert_eq!(content(&app, &id).await, bytes);
    assert!(chunks(&app, &url).await.is_empty(), "chunks are deleted");
    let audit: Value = app.audit(&app.admin_key, "").await.json().await.unwrap();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"upload.create") && actions.contains(&"file.upload"));
}

async fn creation_with_upload_takes_the_first_chunk(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = big_pdf(50_000, 2);
    let res = tus(&app, Method::POST, "/api/v1/uploads", &app.admin_key)
        .header("upload-length", bytes.len().to_string())
        .header("upload-metadata", metadata(&[("filename", "a.pdf")]))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-checksum", sha256(&bytes[..20_000]))
        .body(bytes[..20_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(header(&res, "upload-offset"), "20000");
    let url = header(&res, "location");
    let res = patch(&app, &app.admin_key, &url, 20_000, &bytes[20_000..]).await;
    assert_eq!(res.status(), 204);
    let id = header(&res, "carafe-file-id");
    ready_file(&app, &id).await;
    assert_eq!(content(&app, &id).await, bytes);
    // The whole file in the creating request.
    let small = pdf("all at once");
    let res = tus(&app, Method::POST, "/api/v1/uploads", &app.admin_key)
        .header("upload-length", small.len().to_string())
        .header("upload-metadata", metadata(&[("filename", "b.pdf")]))
        .header("content-type", "application/offset+octet-stream")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(header(&res, "upload-offset"), small.len().to_string());
    let id = header(&res, "carafe-file-id");
    ready_file(&app, &id).await;
    assert_eq!(content(&app, &id).await, small);
}

async fn offsets_and_content_types_are_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = pdf("offsets");
    let url = new_upload(&app, &app.admin_key, bytes.len(), "o.pdf").await;
    assert_eq!(
        patch(&app, &app.admin_key, &url, 0, &bytes[..10])
            .await
            .status(),
        204
    );
    let res = patch(&app, &app.admin_key, &url, 0, &bytes[..10]).await;
    assert_eq!(
        header(&res, "upload-offset"),
        "10",
        "says where the upload is"
    );
    let body = problem(res, 409, "offset_mismatch").await;
    assert_eq!(body["offset"], 10);
    let res = patch(&app, &app.admin_key, &url, 20, &bytes[20..]).await;
    problem(res, 409, "offset_mismatch").await;
    let res = tus(&app, Method::PATCH, &url, &app.admin_key)
        .header("content-type", "application/octet-stream")
        .header("upload-offset", "10")
        .body(bytes[10..].to_vec())
        .send()
        .await
        .unwrap();
    problem(res, 415, "unsupported_content_type").await;
    let res = tus(&app, Method::PATCH, &url, &app.admin_key)
        .header("content-type", "application/offset+octet-stream")
        .body(bytes[10..].to_vec())
        .send()
        .await
        .unwrap();
    problem(res, 400, "upload_offset_required").await;
    for bad in ["-1", "ten", "1e3"] {
        let res = tus(&app, Method::PATCH, &url, &app.admin_key)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", bad)
            .body(bytes[10..].to_vec())
            .send()
            .await
            .unwrap();
        problem(res, 400, "invalid_header").await;
    }
    assert_eq!(offset_of(&app, &url).await, 10, "nothing moved");
    let res = patch(&app, &app.admin_key, &url, 10, &bytes[10..]).await;
    assert_eq!(res.status(), 204);
    // A finished upload takes no more chunks.
    let res = patch(&app, &app.admin_key, &url, 10, &bytes[10..]).await;
    assert!(res.headers().contains_key("carafe-file-id"));
    problem(res, 409, "upload_ended").await;
}

async fn a_checksum_mismatch_discards_the_chunk(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = pdf("checksums");
    let url = new_upload(&app, &app.admin_key, bytes.len(), "c.pdf").await;
    let res = tus(&app, Method::PATCH, &url, &app.admin_key)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .header("upload-checksum", sha256(b"something else"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(header(&res, "tus-resumable"), "1.0.0");
    problem(res, 460, "checksum_mismatch").await;
    assert_eq!(offset_of(&app, &url).await, 0, "the offset did not move");
    for (value, code) in [
        (
            "md5 1B2M2Y8AsgTpgAmY7PhCfg==",
            "checksum_algorithm_unsupported",
        ),
        ("sha256 not-base64!", "invalid_checksum"),
        ("sha256 YWJj", "invalid_checksum"),
    ] {
        let res = tus(&app, Method::PATCH, &url, &app.admin_key)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", "0")
            .header("upload-checksum", value)
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        problem(res, 400, code).await;
    }
    assert!(app.temp_files().is_empty(), "no temporary files remain");
    let res = patch(&app, &app.admin_key, &url, 0, &bytes).await;
    assert_eq!(res.status(), 204);
}

async fn lengths_and_limits_are_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = create(&app, &app.admin_key, 50 * 1024 * 1024 + 1, "").await;
    let body = problem(res, 413, "file_too_large").await;
    assert_eq!(
        body["max_size"],
        50 * 1024 * 1024,
        "the default bucket's limit"
    );
    let meta = metadata(&[("filename", "x.pdf"), ("bucket", "nope")]);
    problem(
        create(&app, &app.admin_key, 10, &meta).await,
        404,
        "bucket_not_found",
    )
    .await;
    let res = create(&app, &app.admin_key, 10, "filename !!!").await;
    problem(res, 400, "invalid_metadata").await;
    problem(create(&app, &app.admin_key, 0, "").await, 400, "file_empty").await;
    let res = tus(&app, Method::POST, "/api/v1/uploads", &app.admin_key)
        .send()
        .await
        .unwrap();
    problem(res, 400, "upload_length_required").await;
    let res = tus(&app, Method::POST, "/api/v1/uploads", &app.admin_key)
        .header("upload-defer-length", "1")
        .send()
        .await
        .unwrap();
    problem(res, 400, "defer_length_unsupported").await;

    let bytes = pdf("limits");
    let url = new_upload(&app, &app.admin_key, bytes.len(), "l.pdf").await;
    let mut longer = bytes.clone();
    longer.push(b'\n');
    let res = patch(&app, &app.admin_key, &url, 0, &longer).await;
    let body = problem(res, 413, "upload_length_exceeded").await;
    assert_eq!(body["remaining"], bytes.len());
    // Without a Content-Length the excess is counted as it arrives.
    let stream = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes.clone()),
        Ok(b"more".to_vec()),
    ]);
    let res = tus(&app, Method::PATCH, &url, &app.admin_key)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    problem(res, 413, "upload_length_exceeded").await;
    assert_eq!(offset_of(&app, &url).await, 0);
}

async fn terminated_uploads_are_gone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = pdf("terminated");
    let url = new_upload(&app, &app.admin_key, bytes.len(), "t.pdf").await;
    assert_eq!(
        patch(&app, &app.admin_key, &url, 0, &bytes[..10])
            .await
            .status(),
        204
    );
    assert!(!chunks(&app, &url).await.is_empty());
    let res = tus(&app, Method::DELETE, &url, &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(header(&res, "tus-resumable"), "1.0.0");
    assert!(chunks(&app, &url).await.is_empty(), "chunks deleted");
    assert_eq!(head(&app, &app.admin_key, &url).await.status(), 404);
    problem(
        patch(&app, &app.admin_key, &url, 10, &bytes[10..]).await,
        404,
        "not_found",
    )
    .await;
    let res = tus(&app, Method::DELETE, &url, &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let audit: Value = app.audit(&app.admin_key, "").await.json().await.unwrap();
    assert_eq!(audit["items"][0]["action"], "upload.terminate");
    assert_eq!(
        audit["items"][0]["target"],
        format!("upload:{}", upload_id(&url))
    );
}

async fn expired_uploads_are_gone_and_swept(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.files.upload_ttl = carafe::config::HumanDuration(Duration::from_secs(1));
    })
    .await;
    let bytes = pdf("expiring");
    let url = new_upload(&app, &app.admin_key, bytes.len(), "e.pdf").await;
    let res = patch(&app, &app.admin_key, &url, 0, &bytes[..10]).await;
    assert_eq!(res.status(), 204);
    assert!(res.headers().contains_key("upload-expires"));
    assert!(!chunks(&app, &url).await.is_empty());
    eventually(Duration::from_secs(10), || async {
        head(&app, &app.admin_key, &url).await.status() == 404
    })
    .await;
    problem(
        patch(&app, &app.admin_key, &url, 10, &bytes[10..]).await,
        404,
        "not_found",
    )
    .await;
    // The sweep deletes the chunks and forgets the upload.
    let id = upload_id(&url).parse().unwrap();
    eventually(Duration::from_secs(10), || async {
        let row = app.state.store.get_upload(id).await.unwrap();
        row.is_none() && chunks(&app, &url).await.is_empty()
    })
    .await;
}
