//! One-click unsubscribe (RFC 8058): a mail sent with `unsubscribe` carries, per recipient, a
//! link that names the message (not the address); a POST to it, with no cookie or auth,
//! suppresses the address at once, a GET only shows a button, and a forged link is refused.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, eventually, json_of, post_json, problem};

both_backends!(one_click_unsubscribe_suppresses_the_recipient);

/// The raw copy `to` received.
async fn raw_for(app: &TestApp, key: &str, to: &str) -> String {
    let found = json_of(app, key, &format!("/api/v1/outbox?to={to}&wait=20")).await;
    let id = found["items"][0]["id"]
        .as_str()
        .expect("captured")
        .to_owned();
    app.get(&format!("/api/v1/outbox/{id}/raw"), Some(key))
        .await
        .text()
        .await
        .unwrap()
}

/// A header's value in `raw` (unfolded).
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap();
    let mut out: Option<String> = None;
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = out.as_mut() {
                v.push_str(line.trim_start());
            }
            continue;
        }
        if out.is_some() {
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            out = Some(v.trim().to_owned());
        }
    }
    out
}

async fn one_click_unsubscribe_suppresses_the_recipient(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    let res = post_json(
        &app,
        &key,
        "/api/v1/mail",
        &json!({
            "to": ["ana@example.com", "bo@example.com"],
            "subject": "News", "text": "hello", "unsubscribe": true
        }),
    )
    .await;
    assert_eq!(res.status(), 202);
    let mail: Value = res.json().await.unwrap();
    assert_eq!(mail["unsubscribe"], true);
    let raw = raw_for(&app, &key, "ana@example.com").await;
    let link = header(&raw, "List-Unsubscribe").expect("List-Unsubscribe");
    assert_eq!(
        header(&raw, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let url = link
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    assert!(url.starts_with(&format!("{}/u/", app.base)), "{url}");
    assert!(
        !url.contains("ana") && !url.contains('@'),
        "no address in the link: {url}"
    );
    // Each recipient has their own link.
    let bo = header(
        &raw_for(&app, &key, "bo@example.com").await,
        "List-Unsubscribe",
    )
    .unwrap();
    assert_ne!(bo, link);

    // A GET (a scanner following the link) changes nothing.
    let page = app.client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<form method=\"post\">")
    );
    problem(
        app.get("/api/v1/suppressions/ana@example.com", Some(&key))
            .await,
        404,
        "not_found",
    )
    .await;

    // The provider's one-click POST: form body, no cookie, no auth, no redirect.
    for _ in 0..2 {
        let res = app
            .client
            .request(Method::POST, &url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let s = json_of(&app, &key, "/api/v1/suppressions/ana@example.com").await;
    assert_eq!(s["reason"], "unsubscribe");
    assert!(s["source"].as_str().unwrap().starts_with("message:"));
    problem(
        app.get("/api/v1/suppressions/bo@example.com", Some(&key))
            .await,
        404,
        "not_found",
    )
    .await;

    // A forged or damaged link is refused and suppresses nobody.
    let mut forged = url.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [forged, format!("{}/u/nothing", app.base)] {
        let res = app
            .client
            .post(&bad)
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{bad}");
        assert_eq!(app.client.get(&bad).send().await.unwrap().status(), 404);
    }

    // Later mail to the address is spared.
    let res = post_json(
        &app,
        &key,
        "/api/v1/mail",
        &json!({
            "to": "ana@example.com", "subject": "More news", "text": "hi"
        }),
    )
    .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(Duration::from_secs(20), || async {
        json_of(&app, &key, &format!("/api/v1/mail/{id}")).await["status"] == "suppressed"
    })
    .await;

    // Carafe writes the headers itself: a mail may not set them too.
    let p = problem(
        post_json(
            &app,
            &key,
            "/api/v1/mail",
            &json!({
                "to": "c@example.com", "subject": "s", "text": "t", "unsubscribe": true,
                "headers": {"List-Unsubscribe": "<https://elsewhere.example/u>"}
            }),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/headers/List-Unsubscribe");
}
