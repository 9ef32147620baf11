//! Providers' reports after sending, through `POST /api/v1/webhooks/mail/{provider}`: the
//! app's own (`generic`, API key), and Amazon SES through SNS — signed here with `openssl`
//! (an independent signer) by a certificate a local stand-in for SNS serves, with both
//! signature versions, a subscription confirmation, and every forgery refused with 403 and
//! nothing changed. SendGrid, Postmark and Mailgun are in `mail_webhooks_signed.rs`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, eventually, json_of, post_json, problem};

both_backends!(
    generic_reports_bounce_and_suppress_once,
    ses_notifications_are_taken_only_when_sns_signed_them
);

/// Runs `openssl` with `args`, `input` on stdin; its stdout.
pub fn openssl(dir: &Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (scripts/test-all installs it)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Sends one mail (captured in the outbox) to `to` and waits until every copy is sent; the
/// mail as `GET /api/v1/mail/{id}` shows it.
pub async fn sent(app: &TestApp, key: &str, to: &[&str]) -> Value {
    let body = json!({"to": to, "subject": "Receipt", "text": "Thanks"});
    let res = post_json(app, key, "/api/v1/mail", &body).await;
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/mail/{id}");
    eventually(Duration::from_secs(20), || async {
        let mail = json_of(app, key, &path).await;
        mail["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "sent")
    })
    .await;
    json_of(app, key, &path).await
}

/// A message's status and the kinds of its timeline.
pub async fn timeline(app: &TestApp, key: &str, message: &Value) -> (String, Vec<String>) {
    let path = format!("/api/v1/mail/messages/{}", message["id"].as_str().unwrap());
    let got = json_of(app, key, &path).await;
    let kinds = got["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{got}"))
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    (got["status"].as_str().unwrap().to_owned(), kinds)
}

pub async fn suppression(app: &TestApp, key: &str, address: &str) -> Option<Value> {
    let res = app
        .get(&format!("/api/v1/suppressions/{address}"), Some(key))
        .await;
    if res.status() == 404 {
        return None;
    }
    assert_eq!(res.status(), 200);
    Some(res.json().await.unwrap())
}

async fn generic_reports_bounce_and_suppress_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    let mail = sent(&app, &key, &["Ann@example.com", "bo@example.com"]).await;
    let (ann, bo) = (&mail["messages"][0], &mail["messages"][1]);
    let url = "/api/v1/webhooks/mail/generic";
    let body = json!({"events": [
        {"type": "bounced", "recipient": "ann@EXAMPLE.com",
         "message_id": format!("<{}>", mail["message_id"].as_str().unwrap()),
         "event_id": "b-1", "reason": "550 5.1.1 no such user"},
        {"type": "delivered", "recipient": "bo@example.com", "message": bo["id"]},
        {"type": "opened", "recipient": "bo@example.com", "message": bo["id"]}
    ]});
    // Not an event Carafe knows: refused with its place, nothing applied.
    let res = post_json(&app, &key, url, &body).await;
    let p = problem(res, 422, "validation_failed").await;
    assert_eq!(p["errors"][0]["field"], "/events/2/type", "{p}");
    assert_eq!(timeline(&app, &key, ann).await.0, "sent");

    let body = json!({"events": [body["events"][0], body["events"][1]]});
    let res = post_json(&app, &key, url, &body).await;
    assert_eq!(res.status(), 200);
    let summary: Value = res.json().await.unwrap();
    assert_eq!(
        (
            &summary["received"],
            &summary["recorded"],
            &summary["suppressed"]
        ),
        (&json!(2), &json!(2), &json!(1)),
        "{summary}"
    );
    assert_eq!(
        timeline(&app, &key, ann).await,
        (
            "bounced".into(),
            ["queued", "sending", "sent", "bounced"]
                .map(String::from)
                .to_vec()
        )
    );
    assert_eq!(timeline(&app, &key, bo).await.0, "sent");
    assert_eq!(
        timeline(&app, &key, bo).await.1.last().unwrap(),
        "delivered"
    );
    let s = suppression(&app, &key, "ann@example.com")
        .await
        .expect("suppressed");
    assert_eq!(
        (&s["reason"], &s["source"]),
        (&json!("bounce"), &json!("webhook:generic"))
    );
    assert!(suppression(&app, &key, "bo@example.com").await.is_none());

    // The same report again (a retry) changes nothing.
    let again = post_json(&app, &key, url, &json!({"events": [body["events"][0]]})).await;
    let summary: Value = again.json().await.unwrap();
    assert_eq!(
        (&summary["duplicates"], &summary["suppressed"]),
        (&json!(1), &json!(0))
    );
    assert_eq!(timeline(&app, &key, ann).await.1.len(), 4);
    // A report about mail Carafe never sent still suppresses (the address is dead).
    let other = json!({"type": "complained", "recipient": "cy@example.com", "relay_id": "zz"});
    let summary: Value = post_json(&app, &key, url, &other)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&summary["unmatched"], &summary["suppressed"]),
        (&json!(1), &json!(1))
    );

    // The generic endpoint needs a mail key; an unknown provider is not found.
    let res = app
        .request(reqwest::Method::POST, url, None)
        .json(&other)
        .send()
        .await
        .unwrap();
    problem(res, 401, "unauthenticated").await;
    let files = app.new_key(&["files"]).await;
    problem(
        post_json(&app, &files, url, &other).await,
        403,
        "insufficient_scope",
    )
    .await;
    let res = post_json(&app, &key, "/api/v1/webhooks/mail/sparkpost", &other).await;
    problem(res, 404, "not_found").await;
    // Bodies may be 4 MiB (past the API's usual 1 MiB); beyond is a problem, not a bare 413.
    for (mib, status) in [(2, 200), (4, 413)] {
        let pad = "x".repeat(mib * 1024 * 1024);
        let res = app
            .request(reqwest::Method::POST, url, Some(&key))
            .header("content-type", "application/json")
            .body(format!("{{\"events\": [], \"pad\": \"{pad}\"}}"))
            .send()
            .await
            .unwrap();
        if status == 200 {
            assert_eq!(res.status(), 200);
        } else {
            problem(res, 413, "body_too_large").await;
        }
    }
    // Providers with nothing configured refuse everything.
    for provider in ["ses", "sendgrid", "postmark", "mailgun"] {
        let res = app
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/webhooks/mail/{provider}"),
                None,
            )
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        problem(res, 403, "webhook_not_configured").await;
    }
}

/// A stand-in for SNS on loopback: serves the signing certificate and records subscription
/// confirmations.
struct Sns {
    base: String,
    confirmed: Arc<Mutex<Vec<String>>>,
}

async fn sns(cert_pem: Vec<u8>) -> Sns {
    use axum::extract::RawQuery;
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let seen = confirmed.clone();
    let app = axum::Router::new()
        .route(
            "/cert.pem",
            axum::routing::get(move || async move { cert_pem }),
        )
        .route(
            "/confirm",
            axum::routing::get(move |RawQuery(q): RawQuery| async move {
                seen.lock().unwrap().push(q.unwrap_or_default());
                "<ConfirmSubscriptionResponse/>"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Sns { base, confirmed }
}

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:carafe-feedback";

/// An SNS message of `kind` carrying `message`, signed (version 1: SHA-1, 2: SHA-256) with
/// the key in `dir`.
fn sns_message(
    dir: &Path,
    sns: &Sns,
    kind: &str,
    message: &str,
    version: u8,
    topic: &str,
) -> Value {
    let id = uuid::Uuid::now_v7().to_string();
    let ts = "2026-12-07T12:00:00.000Z";
    let mut v = json!({
        "Type": kind, "MessageId": id, "TopicArn": topic, "Message": message,
        "Timestamp": ts, "SignatureVersion": version.to_string(),
        "SigningCertURL": format!("{}/cert.pem", sns.base),
    });
    let mut fields = vec![("Message", message.to_owned()), ("MessageId", id)];
    if kind == "Notification" {
        fields.push(("Timestamp", ts.into()));
    } else {
        let url = format!(
            "{}/confirm?Action=ConfirmSubscription&Token=tok-1",
            sns.base
        );
        v["SubscribeURL"] = json!(url);
        v["Token"] = json!("tok-1");
        fields.push(("SubscribeURL", url));
        fields.push(("Timestamp", ts.into()));
        fields.push(("Token", "tok-1".into()));
    }
    fields.push(("TopicArn", topic.into()));
    fields.push(("Type", kind.into()));
    let canonical: String = fields.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect();
    let digest = if version == 1 { "-sha1" } else { "-sha256" };
    let sig = openssl(
        dir,
        &["dgst", digest, "-sign", "key.pem"],
        canonical.as_bytes(),
    );
    v["Signature"] = json!(STANDARD.encode(sig));
    v
}

async fn post_sns(app: &TestApp, body: &Value) -> reqwest::Response {
    app.request(reqwest::Method::POST, "/api/v1/webhooks/mail/ses", None)
        .header("x-amz-sns-message-type", body["Type"].as_str().unwrap())
        .header("content-type", "text/plain; charset=UTF-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn ses_notifications_are_taken_only_when_sns_signed_them(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let subj = ["-subj", "/CN=sns.us-east-1.amazonaws.com", "-days", "2"];
    let mut args = vec!["req", "-x509", "-newkey", "rsa:2048", "-nodes"];
    args.extend(["-keyout", "key.pem", "-out", "cert.pem"]);
    args.extend(subj);
    openssl(dir.path(), &args, b"");
    let sns = sns(std::fs::read(dir.path().join("cert.pem")).unwrap()).await;
    let app = TestApp::spawn_with(backend, |c| {
        c.mail.webhooks.ses_topics = vec![TOPIC.into()];
        c.mail.webhooks.sns_cert_hosts = vec!["127.0.0.1".into()];
    })
    .await;
    let key = app.new_key(&["mail"]).await;
    let mail = sent(&app, &key, &["ann@example.com", "bo@example.com"]).await;
    let (ann, bo) = (&mail["messages"][0], &mail["messages"][1]);

    // SES names the copy by the id of its SMTP reply (here the outbox's id).
    let bounce = json!({
        "notificationType": "Bounce",
        "mail": {"messageId": ann["relay_id"], "timestamp": "2026-12-07T11:59:00.000Z",
                 "source": "noreply@example.com", "destination": ["ann@example.com"]},
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": "Ann@example.com", "action": "failed",
                       "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                   "timestamp": "2026-12-07T11:59:30.000Z", "feedbackId": "f-1"}
    })
    .to_string();
    let signed = sns_message(dir.path(), &sns, "Notification", &bounce, 1, TOPIC);

    // Forgeries: a changed message, a signature of another key's, a certificate elsewhere,
    // another topic, an unknown signature version. Each is 403 and changes nothing.
    let mut changed = signed.clone();
    changed["Message"] = json!(bounce.replace("Ann@", "bo@"));
    let mut elsewhere = signed.clone();
    elsewhere["SigningCertURL"] = json!("http://127.0.0.2:9/cert.pem");
    let mut version = signed.clone();
    version["SignatureVersion"] = json!("3");
    let other_topic = "arn:aws:sns:us-east-1:999999999999:someone-else";
    let foreign = sns_message(dir.path(), &sns, "Notification", &bounce, 1, other_topic);
    for (forged, code) in [
        (&changed, "webhook_signature"),
        (&elsewhere, "webhook_signature"),
        (&version, "webhook_signature"),
        (&foreign, "webhook_topic"),
    ] {
        problem(post_sns(&app, forged).await, 403, code).await;
    }
    assert_eq!(timeline(&app, &key, ann).await.0, "sent");
    assert!(suppression(&app, &key, "ann@example.com").await.is_none());

    // Signed as SNS signs: the bounce is applied, once.
    for round in 0..2 {
        let res = post_sns(&app, &signed).await;
        assert_eq!(res.status(), 200);
        let summary: Value = res.json().await.unwrap();
        let counted = if round == 0 { "recorded" } else { "duplicates" };
        assert_eq!(summary[counted], 1, "{summary}");
    }
    let (status, kinds) = timeline(&app, &key, ann).await;
    assert_eq!(
        (status.as_str(), kinds.last().unwrap().as_str()),
        ("bounced", "bounced")
    );
    let s = suppression(&app, &key, "ann@example.com").await.unwrap();
    assert_eq!(
        (&s["reason"], &s["source"]),
        (&json!("bounce"), &json!("webhook:ses"))
    );

    // A complaint, signed with SHA-256 (version 2), found by the copy's Message-ID header.
    let complaint = json!({
        "notificationType": "Complaint",
        "mail": {"messageId": "0100-not-a-reply-id", "headers": [
            {"name": "Message-ID", "value": format!("<{}>", mail["message_id"].as_str().unwrap())}]},
        "complaint": {"complainedRecipients": [{"emailAddress": "bo@example.com"}],
                      "complaintFeedbackType": "abuse", "timestamp": "2026-12-07T12:00:00Z",
                      "feedbackId": "f-2"}
    })
    .to_string();
    let signed = sns_message(dir.path(), &sns, "Notification", &complaint, 2, TOPIC);
    assert_eq!(post_sns(&app, &signed).await.status(), 200);
    assert_eq!(timeline(&app, &key, bo).await.0, "complained");
    let s = suppression(&app, &key, "bo@example.com").await.unwrap();
    assert_eq!(s["reason"], "complaint");

    // A subscription to the topic is confirmed by fetching its SubscribeURL.
    let sub = sns_message(
        dir.path(),
        &sns,
        "SubscriptionConfirmation",
        "confirm me",
        1,
        TOPIC,
    );
    let res = post_sns(&app, &sub).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["subscription_confirmed"],
        true
    );
    assert_eq!(
        *sns.confirmed.lock().unwrap(),
        vec!["Action=ConfirmSubscription&Token=tok-1".to_string()]
    );
}
