//! Uploads whose framing lies: a body longer than its `Content-Length`.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Backend, TestApp, eventually};

file_tests!(a_body_longer_than_declared_stores_only_what_was_declared);

async fn a_body_longer_than_declared_stores_only_what_was_declared(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Declares 10 bytes, sends 30: the extra 20 are not part of this request.
    let request = format!(
        "POST /api/v1/files?name=ten.txt HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 10\r\n\r\n\
         0123456789abcdefghijklmnopqrst",
        app.admin_key
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read one whole answer (the connection stays open: the extra bytes are taken as the
    // start of a next request).
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= length || n == 0 {
                break;
            }
        }
        assert!(n > 0, "the connection closed before an answer");
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let items = app.files().await;
    assert_eq!(
        items.len(),
        1,
        "one file; the extra bytes made no second upload"
    );
    assert_eq!(items[0]["size"], 10);
    let id = items[0]["id"].as_str().unwrap().to_owned();
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
    let bytes = app
        .get(&format!("/api/v1/files/{id}/content"), Some(&app.admin_key))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"0123456789");
}
