//! Mail attachments over HTTP: bytes in base64 and Carafe files (ready ones only, readable by
//! the key), attachments and inline parts in the right MIME structure, refusals by field, and
//! a file gone before sending failing its message instead of sending without it.

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::file_processing::{eicar, upload_processed};
use crate::files::upload_ready;
use crate::helpers::{Backend, TestApp, eventually, json_of, post_json, problem};

both_backends!(
    attachments_and_inline_parts_go_out_with_the_mail,
    bad_attachments_are_refused_by_field
);

/// Tests that need a real clamd.
mod clamd {
    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_CLAMD_URL"]
    async fn sqlite_a_quarantined_file_is_never_attached() {
        super::a_quarantined_file_is_never_attached(crate::helpers::Backend::Sqlite).await
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn send(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    post_json(app, key, "/api/v1/mail", &body).await
}

async fn attachments_and_inline_parts_go_out_with_the_mail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail", "files"]).await;
    let logo = crate::files::png(8, 8);
    let file = upload_ready(&app, "logo.png", logo.clone()).await;
    let file_id = file["id"].as_str().unwrap();
    // 300 KiB of bytes that are not text: base64 on the way in, intact on the way out.
    let report: Vec<u8> = (0..300 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let res = send(&app, &key, json!({
        "to": "ana@example.com",
        "subject": "Your report",
        "html": "<p>Hi</p><img src=\"cid:logo\">",
        "attachments": [{"filename": "보고서 2026.bin", "content_base64": b64(&report), "type": "application/octet-stream"}],
        "inline": [{"cid": "logo", "file_id": file_id}]
    }))
    .await;
    assert_eq!(res.status(), 202);
    let mail: Value = res.json().await.unwrap();
    assert_eq!(
        mail["attachments"],
        json!([
            {"filename": "보고서 2026.bin", "type": "application/octet-stream", "size": report.len(), "cid": null, "file_id": null},
            {"filename": "logo.png", "type": "image/png", "size": logo.len(), "cid": "logo", "file_id": file_id}
        ])
    );
    let found = json_of(&app, &key, "/api/v1/outbox?to=ana@example.com&wait=20").await;
    let item = found["items"][0]["id"].as_str().unwrap().to_owned();
    let detail = json_of(&app, &key, &format!("/api/v1/outbox/{item}")).await;
    assert_eq!(
        detail["attachments"],
        json!([
            {"filename": "logo.png", "type": "image/png", "size": logo.len(), "cid": "logo"},
            {"filename": "보고서 2026.bin", "type": "application/octet-stream", "size": report.len(), "cid": null}
        ]),
        "{detail}"
    );
    assert!(detail["html"].as_str().unwrap().contains("cid:logo"));
    // The structure a mail client expects: mixed(related(alternative, image), attachment).
    let raw = app
        .get(&format!("/api/v1/outbox/{item}/raw"), Some(&key))
        .await
        .text()
        .await
        .unwrap();
    let mixed = raw.find("multipart/mixed").expect("mixed");
    let related = raw.find("multipart/related").expect("related");
    let alternative = raw.find("multipart/alternative").expect("alternative");
    assert!(
        mixed < related && related < alternative,
        "{}",
        &raw[..2000.min(raw.len())]
    );
    assert!(raw.contains("Content-ID: <logo>"));
    assert!(raw.lines().all(|l| l.len() <= 998));

    // A file deleted before its mail is sent fails the message; nothing goes out without it.
    let doomed = upload_ready(&app, "terms.pdf", b"%PDF-1.4 terms".to_vec()).await;
    let send_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let res = send(
        &app,
        &key,
        json!({
            "to": "bo@example.com", "subject": "Terms", "text": "attached",
            "attachments": [{"file_id": doomed["id"]}],
            "send_at": send_at.format(&time::format_description::well_known::Rfc3339).unwrap()
        }),
    )
    .await;
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let del = app
        .request(
            Method::DELETE,
            &format!("/api/v1/files/{}", doomed["id"].as_str().unwrap()),
            Some(&key),
        )
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success(), "{}", del.status());
    eventually(Duration::from_secs(30), || async {
        json_of(&app, &key, &format!("/api/v1/mail/{id}")).await["status"] == "failed"
    })
    .await;
    let mail = json_of(&app, &key, &format!("/api/v1/mail/{id}")).await;
    assert!(
        mail["messages"][0]["reply"]
            .as_str()
            .unwrap()
            .contains("no longer available"),
        "{mail}"
    );
    let none = json_of(&app, &key, "/api/v1/outbox?to=bo@example.com").await;
    assert_eq!(none["items"], json!([]));
}

async fn bad_attachments_are_refused_by_field(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.mail.max_attachment_bytes = 1000).await;
    let key = app.new_key(&["mail", "files"]).await;
    let mail_only = app.new_key(&["mail"]).await;
    let file = upload_ready(&app, "a.txt", b"hello".to_vec()).await;
    let base = json!({"to": "a@example.com", "subject": "s", "text": "t"});
    let with = |extra: Value| {
        let mut b = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (extra, field) in [
        (
            json!({"attachments": [{"filename": "a.bin", "content_base64": "not base64!"}]}),
            "/attachments/0",
        ),
        (
            json!({"attachments": [{"content_base64": b64(b"x")}]}),
            "/attachments/0/filename",
        ),
        (
            json!({"attachments": [{"filename": "a\r\nBcc: x@y", "content_base64": b64(b"x")}]}),
            "/attachments/0/filename",
        ),
        (
            json!({"attachments": [{"filename": "a", "content_base64": b64(b"x"), "type": "text/plain\r\nX: y"}]}),
            "/attachments/0/type",
        ),
        (
            json!({"attachments": [{"filename": "a", "content_base64": b64(b"x"), "file_id": file["id"]}]}),
            "/attachments/0",
        ),
        (
            json!({"inline": [{"file_id": file["id"]}]}),
            "/inline/0/cid",
        ),
        (
            json!({"inline": [{"cid": "a b", "file_id": file["id"]}]}),
            "/inline/0/cid",
        ),
        (
            json!({"attachments": [{"file_id": "0190c0de-0000-7000-8000-000000000000"}]}),
            "/attachments/0/file_id",
        ),
        (
            json!({"attachments": [{"filename": "big", "content_base64": b64(&[0u8; 1001])}]}),
            "/attachments",
        ),
        (
            json!({"attachments": (0..21).map(|i| json!({"filename": format!("{i}"), "content_base64": "eA=="})).collect::<Vec<_>>()}),
            "/attachments",
        ),
    ] {
        let p = problem(
            send(&app, &key, with(extra.clone())).await,
            422,
            "validation_failed",
        )
        .await;
        let fields: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{extra}: {p}");
    }
    // A key without the files scope may not attach a file it could not read.
    let p = problem(
        send(
            &app,
            &mail_only,
            with(json!({"attachments": [{"file_id": file["id"]}]})),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/attachments/0/file_id");
    // Nothing was stored.
    let listed = json_of(&app, &key, "/api/v1/mail").await;
    assert_eq!(listed["items"], json!([]));
}

async fn a_quarantined_file_is_never_attached(backend: Backend) {
    let clamd = std::env::var("CARAFE_TEST_CLAMD_URL").expect("CARAFE_TEST_CLAMD_URL");
    let app = TestApp::spawn_with(backend, |c| c.clamd_url = Some(clamd)).await;
    let key = app.new_key(&["mail", "files"]).await;
    let bad = upload_processed(&app, "", "eicar.txt", eicar()).await;
    assert_eq!(bad["status"], "quarantined");
    let p = problem(
        send(
            &app,
            &key,
            json!({
                "to": "a@example.com", "subject": "s", "text": "t",
                "attachments": [{"file_id": bad["id"]}]
            }),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/attachments/0/file_id");
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not ready"),
        "{p}"
    );
}
