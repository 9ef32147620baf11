//! Downloads: single and multiple ranges, validators and conditional requests, HEAD, on files
//! served from the memory cache and from storage.

use reqwest::{Method, Response};
use serde_json::Value;

use crate::files::{upload_raw, upload_ready};
use crate::helpers::{Backend, TestApp, problem};

file_tests!(
    ranges_are_served_from_memory_and_disk,
    conditional_requests_answer_304_412_and_honour_if_range,
    bad_range_headers_never_break_a_download;
    // X-Accel-Redirect hands nginx a path under the local storage root.
    local: accel_redirect_hands_whole_downloads_to_nginx,
);

/// A text file of `len` bytes whose content says where each byte is.
fn text(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = app.request(Method::GET, path, Some(&app.admin_key));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// Splits a `multipart/byteranges` body into (Content-Range, bytes) parts.
fn byteranges(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .unwrap()
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let text = body.to_vec();
    let mut parts = Vec::new();
    let mut rest = &text[..];
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let head_end = find(rest, b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .unwrap()
            .to_owned();
        let data_start = head_end + 4;
        let next = find(&rest[data_start..], format!("\r\n{delimiter}").as_bytes()).unwrap();
        parts.push((range, rest[data_start..data_start + next].to_vec()));
        rest = &rest[data_start + next..];
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn ranges_are_served_from_memory_and_disk(backend: Backend) {
    // 100 KiB is cached in memory; 1 MiB is above the cache's object limit and streams.
    let app = TestApp::spawn(backend).await;
    for len in [100 * 1024, 1024 * 1024] {
        let bytes = text(len);
        let file = upload_ready(&app, "data.txt", bytes.clone()).await;
        let path = format!("/api/v1/files/{}/content", file["id"].as_str().unwrap());
        let size = len as u64;

        let res = get_with(&app, &path, &[("range", "bytes=10-19")]).await;
        assert_eq!(res.status(), 206);
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes 10-19/{size}").as_str()
        );
        assert_eq!(res.headers()["content-length"], "10");
        assert_eq!(res.bytes().await.unwrap(), bytes[10..20]);

        let res = get_with(&app, &path, &[("range", "bytes=-5")]).await;
        assert_eq!(res.status(), 206);
        assert_eq!(res.bytes().await.unwrap(), bytes[len - 5..]);

        let res = get_with(&app, &path, &[("range", &format!("bytes={}-", len - 3))]).await;
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {}-{}/{size}", len - 3, len - 1).as_str()
        );
        assert_eq!(res.bytes().await.unwrap(), bytes[len - 3..]);

        // Ends past the file are clamped.
        let res = get_with(
            &app,
            &path,
            &[("range", &format!("bytes={}-{}", len - 2, len + 100))],
        )
        .await;
        assert_eq!(res.status(), 206);
        assert_eq!(res.bytes().await.unwrap(), bytes[len - 2..]);

        // Several ranges: multipart/byteranges, overlapping ones merged.
        let res = get_with(&app, &path, &[("range", "bytes=0-4, 100-109, 105-119, -3")]).await;
        assert_eq!(res.status(), 206);
        let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("multipart/byteranges"), "{ct}");
        let declared: usize = res.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = res.bytes().await.unwrap();
        assert_eq!(body.len(), declared);
        let parts = byteranges(&ct, &body);
        let expected = vec![
            (format!("bytes 0-4/{size}"), bytes[0..5].to_vec()),
            (format!("bytes 100-119/{size}"), bytes[100..120].to_vec()),
            (
                format!("bytes {}-{}/{size}", len - 3, len - 1),
                bytes[len - 3..].to_vec(),
            ),
        ];
        assert_eq!(parts, expected);

        // Nothing overlaps the file: 416 with the size.
        let res = get_with(&app, &path, &[("range", &format!("bytes={}-", len + 10))]).await;
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes */{size}").as_str()
        );
        problem(res, 416, "range_not_satisfiable").await;

        // HEAD: the same headers, no body.
        let res = app
            .request(Method::HEAD, &path, Some(&app.admin_key))
            .header("range", "bytes=0-9")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["content-length"], "10");
        assert!(res.bytes().await.unwrap().is_empty());
        let res = app
            .request(Method::HEAD, &path, Some(&app.admin_key))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-length"], size.to_string().as_str());

        // The whole file, twice (the second time from the cache when small).
        for _ in 0..2 {
            let res = get_with(&app, &path, &[]).await;
            assert_eq!(res.status(), 200);
            assert_eq!(res.bytes().await.unwrap(), bytes);
        }
    }
}

async fn conditional_requests_answer_304_412_and_honour_if_range(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = text(5000);
    let file: Value = upload_ready(&app, "cond.txt", bytes.clone()).await;
    let path = format!("/api/v1/files/{}/content", file["id"].as_str().unwrap());
    let res = get_with(&app, &path, &[]).await;
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let modified = res.headers()["last-modified"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", file["sha256"].as_str().unwrap()));

    let res = get_with(&app, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], etag.as_str());
    assert!(res.bytes().await.unwrap().is_empty());
    let res = get_with(&app, &path, &[("if-none-match", "\"other\", W/\"x\"")]).await;
    assert_eq!(res.status(), 200);
    let res = get_with(&app, &path, &[("if-modified-since", &modified)]).await;
    assert_eq!(res.status(), 304);
    let res = get_with(
        &app,
        &path,
        &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")],
    )
    .await;
    assert_eq!(res.status(), 200);

    let res = get_with(&app, &path, &[("if-match", "\"stale\"")]).await;
    problem(res, 412, "precondition_failed").await;
    let res = get_with(&app, &path, &[("if-match", &etag)]).await;
    assert_eq!(res.status(), 200);

    // If-Range: the range only while the validator still matches.
    let res = get_with(&app, &path, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    assert_eq!(res.status(), 206);
    let res = get_with(
        &app,
        &path,
        &[("range", "bytes=0-9"), ("if-range", "\"stale\"")],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), bytes);
    let res = get_with(
        &app,
        &path,
        &[("range", "bytes=0-9"), ("if-range", &modified)],
    )
    .await;
    assert_eq!(res.status(), 206);
    let res = get_with(
        &app,
        &path,
        &[
            ("range", "bytes=0-9"),
            ("if-range", "Mon, 01 Jan 2001 00:00:00 GMT"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
}

async fn bad_range_headers_never_break_a_download(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bytes = text(2000);
    let res = upload_raw(&app, &app.admin_key, "?wait=30", "r.txt", bytes.clone()).await;
    let file: Value = res.json().await.unwrap();
    let path = format!("/api/v1/files/{}/content", file["id"].as_str().unwrap());
    let thousand = format!(
        "bytes={}",
        (0..1000)
            .map(|i| format!("{}-{}", i * 2, i * 2))
            .collect::<Vec<_>>()
            .join(",")
    );
    // Malformed, reversed, another unit, or abusive: the header is ignored and the whole file sent.
    for range in [
        "bytes=abc",
        "bytes=500-100",
        "items=0-5",
        "bytes=--5",
        "bytes=",
        "bytes=1-2-3",
        &thousand,
    ] {
        let res = get_with(&app, &path, &[("range", range)]).await;
        assert_eq!(res.status(), 200, "{range}");
        assert_eq!(res.bytes().await.unwrap(), bytes, "{range}");
    }
    // A range covering the whole file is the whole file.
    let res = get_with(&app, &path, &[("range", "bytes=0-")]).await;
    assert_eq!(res.status(), 200);
    let res = get_with(&app, &path, &[("range", "bytes=-0")]).await;
    problem(res, 416, "range_not_satisfiable").await;
}

async fn accel_redirect_hands_whole_downloads_to_nginx(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.files.accel_redirect = Some("/protected/".into());
    })
    .await;
    let bytes = text(3000);
    let file = upload_ready(&app, "n.txt", bytes.clone()).await;
    let id = file["id"].as_str().unwrap();
    let path = format!("/api/v1/files/{id}/content");
    let res = get_with(&app, &path, &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["x-accel-redirect"],
        format!("/protected/objects/{id}").as_str()
    );
    // nginx sends the bytes; Carafe still decides the headers it keeps.
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("inline")
    );
    assert_eq!(
        res.headers()["etag"],
        format!("\"{}\"", file["sha256"].as_str().unwrap()).as_str()
    );
    assert!(res.bytes().await.unwrap().is_empty());
    let object = app.data_dir().join(format!("files/objects/{id}"));
    assert_eq!(
        std::fs::read(object).unwrap(),
        bytes,
        "the path names the stored object"
    );
    // Ranges and validators are still answered by Carafe itself.
    let res = get_with(&app, &path, &[("range", "bytes=0-9")]).await;
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap(), bytes[..10]);
}
