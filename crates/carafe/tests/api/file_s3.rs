//! Files on S3-compatible storage (a real S3 server that checks signatures): the same upload,
//! processing and download paths as on local disk, multipart uploads of large files,
//! presigned download redirects (attachments only), purging, and a store that is down.

use std::time::Duration;

use carafe::config::Secret;
use reqwest::Method;
use serde_json::{Value, json};

use crate::files::{pdf, png, upload_raw, upload_ready};
use crate::helpers::{Backend, TestApp, eventually, problem};

s3_tests!(
    files_round_trip_through_s3,
    large_files_go_up_in_parts_and_ranges_come_back,
    presigned_downloads_redirect_only_attachments,
);

both_backends!(an_unreachable_store_refuses_uploads_cleanly);

async fn files_round_trip_through_s3(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.state.files.storage.kind(), "s3");
    let bytes = pdf("stored in s3");
    let file = upload_ready(&app, "s3.pdf", bytes.clone()).await;
    let id = file["id"].as_str().unwrap();
    assert!(app.has_object(&format!("objects/{id}")).await);
    assert!(!app.has_object(&format!("incoming/{id}")).await);
    let path = format!("/api/v1/files/{id}/content");
    let res = app.get(&path, Some(&app.admin_key)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap(), bytes);
    // Images: stripped and thumbnailed on S3 as on disk.
    let img = upload_ready(&app, "pic.png", png(300, 100)).await;
    let img_id = img["id"].as_str().unwrap();
    assert_eq!(img["thumbnails"][0]["width"], 256);
    let res = app
        .get(
            &format!("/api/v1/files/{img_id}/thumbnails/small"),
            Some(&app.admin_key),
        )
        .await;
    assert_eq!(res.status(), 200);
    // Deleting purges every object of the file.
    for id in [id, img_id] {
        let res = app
            .request(
                Method::DELETE,
                &format!("/api/v1/files/{id}"),
                Some(&app.admin_key),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
    eventually(Duration::from_secs(20), || async {
        !app.has_object(&format!("objects/{id}")).await
            && !app.has_object(&format!("objects/{img_id}")).await
            && !app.has_object(&format!("thumbs/{img_id}/small")).await
    })
    .await;
}

async fn large_files_go_up_in_parts_and_ranges_come_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // 20 MiB is over the single-PUT size: it goes up as a multipart upload.
    let bytes: Vec<u8> = (0..20 * 1024 * 1024)
        .map(|i| b'a' + (i % 23) as u8)
        .collect();
    let file = upload_ready(&app, "big.txt", bytes.clone()).await;
    let id = file["id"].as_str().unwrap();
    let path = format!("/api/v1/files/{id}/content");
    let res = app
        .request(Method::GET, &path, Some(&app.admin_key))
        .header("range", "bytes=10485750-10485769")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap(), bytes[10_485_750..10_485_770]);
    let res = app.get(&path, Some(&app.admin_key)).await;
    assert_eq!(
        res.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    let got = res.bytes().await.unwrap();
    assert!(got == bytes, "the whole object streams back unchanged");
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

async fn presigned_downloads_redirect_only_attachments(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let policy = json!({
        "allowed_types": ["pdf", "png", "txt", "html"], "scan": "off",
        "presigned_downloads": true, "cache_control": "private, max-age=60",
    });
    let res = app
        .request(Method::PUT, "/api/v1/buckets/direct", Some(&app.admin_key))
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (mut ids, mut mimes) = (Vec::new(), Vec::new());
    let page = b"<!doctype html><html><body>hi</body></html>".to_vec();
    let uploads = [
        ("d.pdf", pdf("straight from s3")),
        ("p.png", png(40, 30)),
        ("t.txt", b"plain text".to_vec()),
        ("page.html", page),
    ];
    for (name, bytes) in &uploads {
        let query = "?bucket=direct&wait=30";
        let res = upload_raw(&app, &app.admin_key, query, name, bytes.clone()).await;
        assert_eq!(res.status(), 201, "{name}");
        let file: Value = res.json().await.unwrap();
        assert_eq!(file["status"], "ready", "{file}");
        ids.push(file["id"].as_str().unwrap().to_owned());
        mimes.push(file["mime"].as_str().unwrap().to_owned());
    }
    let client = no_redirects();
    let get = |path: String| {
        client
            .get(app.url(&path))
            .bearer_auth(&app.admin_key)
            .send()
    };

    // Shown inline (PDF, image, text, and a thumbnail): Carafe serves them, with nosniff and
    // the sandboxing CSP that S3 could not send.
    let thumbnail = format!("/api/v1/files/{}/thumbnails/small", ids[1]);
    let inline = ids[..3]
        .iter()
        .map(|id| format!("/api/v1/files/{id}/content"));
    for path in inline.chain([thumbnail]) {
        let res = get(path.clone()).await.unwrap();
        assert_eq!(res.status(), 200, "{path} is not redirected");
        let h = res.headers();
        assert!(
            h["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("inline")
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("sandbox"), "{csp}");
        assert_eq!(h["cache-control"], "private, max-age=60");
    }
    // HEAD is answered here too: a presigned URL is signed for GET only.
    let res = client
        .head(app.url(&format!("/api/v1/files/{}/content?download=1", ids[0])))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Attachments (asked for, or a type never shown inline) redirect to S3, which answers with
    // the signed headers.
    let attachments = [
        (0, "?download=1", "attachment; filename=\"d.pdf\""),
        (3, "", "attachment; filename=\"page.html\""),
    ];
    assert_eq!(mimes[0], "application/pdf");
    assert!(mimes[3].starts_with("text/html"), "{}", mimes[3]);
    for (i, query, disposition) in attachments {
        let res = get(format!("/api/v1/files/{}/content{query}", ids[i]))
            .await
            .unwrap();
        assert_eq!(res.status(), 302, "{}", uploads[i].0);
        assert_eq!(res.headers()["cache-control"], "no-store");
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.contains("X-Amz-Signature="), "{location}");
        let res = client.get(&location).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let h = res.headers();
        assert_eq!(h["content-type"], mimes[i].as_str());
        assert_eq!(h["content-disposition"], disposition);
        assert_eq!(h["cache-control"], "private, max-age=60");
        assert_eq!(res.bytes().await.unwrap(), uploads[i].1);

        // The S3 server checks the signature: a changed URL is refused there.
        let forged = location.replace("response-content-type=", "response-content-type=x");
        assert_ne!(forged, location);
        let res = client.get(&forged).send().await.unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
}

async fn an_unreachable_store_refuses_uploads_cleanly(backend: Backend) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!(
        "s3://nowhere?endpoint=http://127.0.0.1:{port}&region=us-east-1&access_key_id=a&secret_access_key=b"
    );
    let app = TestApp::spawn_with(backend, |c| c.storage_url = Some(Secret::new(url))).await;
    let res = upload_raw(&app, &app.admin_key, "", "a.pdf", pdf("lost?")).await;
    problem(res, 503, "unavailable").await;
    let listed = app.files().await;
    assert!(listed.is_empty(), "no row without bytes");
    let temp = app.state.files.storage.temp_dir();
    assert_eq!(
        std::fs::read_dir(temp).unwrap().count(),
        0,
        "no temporary file left"
    );
}
