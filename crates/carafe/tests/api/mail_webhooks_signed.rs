//! SendGrid (ECDSA P-256 over timestamp + body), Postmark (basic auth in the webhook URL) and
//! Mailgun (HMAC-SHA256 of timestamp + token) reports, each signed here with `openssl` as the
//! provider signs it: applied when the signature holds, refused with 403 — and nothing
//! changed — when it does not or when the signed time is stale.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, problem};
use crate::mail_webhooks::{openssl, sent, suppression, timeline};

both_backends!(sendgrid_postmark_and_mailgun_reports_are_checked_then_applied);

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn post(
    app: &TestApp,
    provider: &str,
    body: &[u8],
    headers: &[(&str, String)],
) -> reqwest::Response {
    let mut req = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/webhooks/mail/{provider}"),
            None,
        )
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap()
}

const SG_SIG: &str = "X-Twilio-Email-Event-Webhook-Signature";
const SG_TS: &str = "X-Twilio-Email-Event-Webhook-Timestamp";

async fn sendgrid_postmark_and_mailgun_reports_are_checked_then_applied(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
        b"",
    );
    let public = openssl(
        d,
        &["ec", "-in", "ec.pem", "-pubout", "-outform", "DER"],
        b"",
    );
    let app = TestApp::spawn_with(backend, |c| {
        c.mail.webhooks.sendgrid_public_key = Some(STANDARD.encode(&public));
        c.mail.webhooks.postmark_auth = Some(carafe::values::Secret::new("pm:hunter2".into()));
        c.mail.webhooks.mailgun_signing_key =
            Some(carafe::values::Secret::new("mg-signing-key".into()));
    })
    .await;
    let key = app.new_key(&["mail"]).await;
    let mail = sent(
        &app,
        &key,
        &["a@example.com", "b@example.com", "c@example.com"],
    )
    .await;
    let m = |i: usize| mail["messages"][i].clone();
    let message_id = mail["message_id"].as_str().unwrap().to_owned();

    // SendGrid: an array of events; the bounce names the copy by its smtp-id.
    let events = json!([
        {"email": "a@example.com", "timestamp": unix_now(), "event": "bounce", "type": "bounce",
         "smtp-id": format!("<{message_id}>"), "sg_event_id": "sg-1",
         "sg_message_id": "nomatch.filter0001", "reason": "550 5.1.1 unknown", "status": "5.1.1"},
        {"email": "a@example.com", "timestamp": unix_now(), "event": "open", "sg_event_id": "sg-2"}
    ])
    .to_string();
    let sign = |ts: &str, body: &str| {
        let signed = format!("{ts}{body}");
        let sig = openssl(
            d,
            &["dgst", "-sha256", "-sign", "ec.pem"],
            signed.as_bytes(),
        );
        STANDARD.encode(sig)
    };
    let ts = unix_now().to_string();
    let good = vec![(SG_SIG, sign(&ts, &events)), (SG_TS, ts.clone())];
    // Tampered body, a signature over another timestamp, a stale time, no headers.
    let tampered = events.replace("a@example.com", "b@example.com");
    let other_ts = vec![
        (SG_SIG, sign(&ts, &events)),
        (SG_TS, (unix_now() - 1).to_string()),
    ];
    let old = (unix_now() - 7200).to_string();
    let stale = vec![(SG_SIG, sign(&old, &events)), (SG_TS, old)];
    for (body, headers, code) in [
        (&tampered, &good, "webhook_signature"),
        (&events, &other_ts, "webhook_signature"),
        (&events, &stale, "webhook_stale"),
        (&events, &vec![], "webhook_signature"),
    ] {
        let res = post(&app, "sendgrid", body.as_bytes(), headers).await;
        problem(res, 403, code).await;
    }
    assert_eq!(timeline(&app, &key, &m(0)).await.0, "sent");
    let res = post(&app, "sendgrid", events.as_bytes(), &good).await;
    assert_eq!(res.status(), 200);
    let summary: Value = res.json().await.unwrap();
    assert_eq!(
        (&summary["recorded"], &summary["ignored"]),
        (&json!(1), &json!(1)),
        "{summary}"
    );
    assert_eq!(timeline(&app, &key, &m(0)).await.0, "bounced");
    let s = suppression(&app, &key, "a@example.com").await.unwrap();
    assert_eq!(s["source"], "webhook:sendgrid");

    // Postmark: one record per call, by the relay's id, basic auth from the webhook URL.
    let record = json!({
        "RecordType": "Bounce", "ID": 4323372036854775807_i64, "Type": "HardBounce",
        "TypeCode": 1, "MessageID": m(1)["relay_id"], "Email": "b@example.com",
        "BouncedAt": "2026-12-07T12:00:00Z", "Description": "The server was unable to deliver",
        "Details": "smtp;550 5.1.1 The email account does not exist"
    })
    .to_string();
    let basic = |cred: &str| format!("Basic {}", STANDARD.encode(cred));
    for cred in ["pm:wrong", "pm:hunter2x", "pm"] {
        let res = post(
            &app,
            "postmark",
            record.as_bytes(),
            &[("authorization", basic(cred))],
        )
        .await;
        problem(res, 403, "webhook_credentials").await;
    }
    problem(
        post(&app, "postmark", record.as_bytes(), &[]).await,
        403,
        "webhook_credentials",
    )
    .await;
    assert_eq!(timeline(&app, &key, &m(1)).await.0, "sent");
    let auth = [("authorization", basic("pm:hunter2"))];
    let res = post(&app, "postmark", record.as_bytes(), &auth).await;
    assert_eq!(res.status(), 200);
    let (status, kinds) = timeline(&app, &key, &m(1)).await;
    assert_eq!(
        (status.as_str(), kinds.last().unwrap().as_str()),
        ("bounced", "bounced")
    );
    // Postmark retries: the same bounce id counts once.
    let again: Value = post(&app, "postmark", record.as_bytes(), &auth)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["duplicates"], 1);

    // Mailgun: a complaint, found by the Message-ID Mailgun reports.
    let token = "9f2c1b7e4d3a5f60718293a4b5c6d7e8f9012345678abcdef0";
    let mg = |ts: &str, key: &str| {
        let out = openssl(
            d,
            &["dgst", "-sha256", "-hmac", key],
            format!("{ts}{token}").as_bytes(),
        );
        let out = String::from_utf8(out).unwrap();
        let hex = out.trim().rsplit(' ').next().unwrap().to_owned();
        json!({
            "signature": {"timestamp": ts, "token": token, "signature": hex},
            "event-data": {"id": "mg-ev-1", "event": "complained", "recipient": "c@example.com",
                           "timestamp": 1_765_108_800.5,
                           "message": {"headers": {"message-id": message_id}}}
        })
        .to_string()
    };
    let now = unix_now().to_string();
    let forged = mg(&now, "not-the-key");
    problem(
        post(&app, "mailgun", forged.as_bytes(), &[]).await,
        403,
        "webhook_signature",
    )
    .await;
    let stale = mg(&(unix_now() - 7200).to_string(), "mg-signing-key");
    problem(
        post(&app, "mailgun", stale.as_bytes(), &[]).await,
        403,
        "webhook_stale",
    )
    .await;
    assert_eq!(timeline(&app, &key, &m(2)).await.0, "sent");
    let res = post(&app, "mailgun", mg(&now, "mg-signing-key").as_bytes(), &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(timeline(&app, &key, &m(2)).await.0, "complained");
    let s = suppression(&app, &key, "c@example.com").await.unwrap();
    assert_eq!(
        (&s["reason"], &s["source"]),
        (&json!("complaint"), &json!("webhook:mailgun"))
    );
}
