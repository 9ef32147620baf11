//! Mail over HTTP with no relay configured: a send becomes one message per recipient, each is
//! "sent" into the outbox by its job, and the outbox shows exactly what a relay would have
//! received; bad input is refused field by field and stores nothing; cancelling stops what is
//! not sent yet.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, eventually, json_of, problem};

both_backends!(
    mail_goes_to_the_outbox_one_message_per_recipient,
    bad_mail_is_refused_by_field_and_stores_nothing,
    scheduled_mail_is_cancelled_before_it_is_sent,
    suppressed_addresses_are_spared,
    an_interrupted_send_is_recorded_and_sent_again
);

async fn send(
    app: &TestApp,
    key: &str,
    body: &Value,
    idempotency: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .request(Method::POST, "/api/v1/mail", Some(key))
        .json(body);
    if let Some(k) = idempotency {
        req = req.header("idempotency-key", k);
    }
    req.send().await.unwrap()
}

async fn mail_goes_to_the_outbox_one_message_per_recipient(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    let body = json!({
        "from": "Shop <shop@example.com>",
        "to": ["a@example.com", "B Person <b@example.com>"],
        "cc": "c@example.com",
        "bcc": ["d@example.com", "A@EXAMPLE.com"],
        "subject": "주문 확인 — order 42",
        "html": "<h1>Thanks</h1><p>Order <b>42</b> is on its way.</p>",
        "headers": {"X-Order": "42"},
        "tags": ["receipt"]
    });
    let res = send(&app, &key, &body, Some("order-42")).await;
    assert_eq!(res.status(), 202);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let mail: Value = res.json().await.unwrap();
    let id = mail["id"].as_str().unwrap().to_owned();
    assert!(location.ends_with(&format!("/api/v1/mail/{id}")));
    assert_eq!(mail["message_id"], format!("{id}@example.com"));
    // One message per recipient, each address once (to before cc before bcc).
    let messages = mail["messages"].as_array().unwrap();
    let to: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m["to"].as_str().unwrap(), m["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        to,
        [
            ("a@example.com", "to"),
            ("b@example.com", "to"),
            ("c@example.com", "cc"),
            ("d@example.com", "bcc")
        ]
    );
    // A retry with the same key is answered with the same mail, not a second one.
    let again: Value = send(&app, &key, &body, Some("order-42"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], id.as_str());

    // The bcc recipient's copy, as the relay would get it.
    let found = json_of(&app, &key, "/api/v1/outbox?to=D@example.com&wait=20").await;
    let items = found["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{found}");
    let item = &items[0];
    assert_eq!(item["mail_id"], id.as_str());
    assert_eq!(item["from"], "shop@example.com");
    assert_eq!(item["subject"], "주문 확인 — order 42");
    let raw_res = app
        .get(
            &format!("/api/v1/outbox/{}/raw", item["id"].as_str().unwrap()),
            Some(&key),
        )
        .await;
    assert_eq!(raw_res.headers()["content-type"], "message/rfc822");
    let raw = raw_res.text().await.unwrap();
    let (head, _) = raw.split_once("\r\n\r\n").expect("headers end");
    assert!(
        head.contains(&format!("Message-ID: <{id}@example.com>")),
        "{head}"
    );
    assert!(
        !head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "no Bcc header: {head}"
    );
    // (A Message-ID such as `<…3d@example.com>` contains the text, so compare whole tokens.)
    assert!(
        !head
            .split(|c: char| c.is_whitespace() || ",<>:;\"".contains(c))
            .any(|t| t == "d@example.com"),
        "a bcc recipient is not in the headers"
    );
    assert!(head.contains("X-Order: 42"));
    assert!(head.is_ascii(), "headers are encoded: {head}");
    assert!(raw.lines().all(|l| l.len() <= 998));
    let detail = json_of(
        &app,
        &key,
        &format!("/api/v1/outbox/{}", item["id"].as_str().unwrap()),
    )
    .await;
    let header = |name: &str| {
        detail["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|h| h[1].as_str().unwrap().to_owned())
    };
    assert_eq!(header("subject").as_deref(), Some("주문 확인 — order 42"));
    assert!(header("date").is_some());
    let text = detail["text"].as_str().unwrap();
    assert!(
        text.contains("Thanks") && text.contains("42") && !text.contains("<h1>"),
        "{text}"
    );
    assert!(detail["html"].as_str().unwrap().contains("<b>42</b>"));

    // Every message ends sent, with its timeline.
    eventually(Duration::from_secs(20), || async {
        json_of(&app, &key, &format!("/api/v1/mail/{id}")).await["status"] == "sent"
    })
    .await;
    let mail = json_of(&app, &key, &format!("/api/v1/mail/{id}")).await;
    for m in mail["messages"].as_array().unwrap() {
        assert_eq!(m["attempts"], 1);
        assert_eq!(m["reply"], "250 captured in the outbox");
        assert!(m["sent_at"].is_string());
        let one = json_of(
            &app,
            &key,
            &format!("/api/v1/mail/messages/{}", m["id"].as_str().unwrap()),
        )
        .await;
        let kinds: Vec<&str> = one["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["queued", "sending", "sent"]);
    }
    let outbox = json_of(
        &app,
        &key,
        &format!("/api/v1/outbox?message_id={id}@example.com"),
    )
    .await;
    assert_eq!(outbox["items"].as_array().unwrap().len(), 4);

    // The send log, filtered.
    let by_to = json_of(&app, &key, "/api/v1/mail?to=A@example.com").await;
    assert_eq!(by_to["items"].as_array().unwrap().len(), 1);
    let by_tag = json_of(&app, &key, "/api/v1/mail?tag=receipt&status=sent&limit=3").await;
    assert_eq!(by_tag["items"].as_array().unwrap().len(), 3);
    assert!(by_tag["next_cursor"].is_string());
    problem(
        app.get("/api/v1/mail?status=lost", Some(&key)).await,
        422,
        "validation_failed",
    )
    .await;

    // Clearing the outbox keeps the send log.
    let first = item["id"].as_str().unwrap();
    let del = app
        .request(
            Method::DELETE,
            &format!("/api/v1/outbox/{first}"),
            Some(&key),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    problem(
        app.get(&format!("/api/v1/outbox/{first}"), Some(&key))
            .await,
        404,
        "not_found",
    )
    .await;
    let cleared: Value = app
        .request(Method::DELETE, "/api/v1/outbox", Some(&key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["deleted"], 3);
    assert_eq!(
        json_of(&app, &key, &format!("/api/v1/mail/{id}")).await["status"],
        "sent"
    );
}

async fn bad_mail_is_refused_by_field_and_stores_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    let ok = json!({"to": "a@example.com", "subject": "hi", "text": "hello"});
    let field_of = |v: &Value| {
        v["errors"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"to": "a@example.com\r\nBcc: evil@example.com", "subject": "hi", "text": "x"}),
            "/to/0",
        ),
        (
            json!({"to": "a@example.com", "cc": ["ok@example.com", "not an address"], "subject": "hi", "text": "x"}),
            "/cc/1",
        ),
        (
            json!({"to": "a@example.com", "from": "Evil\n<e@example.com>", "subject": "hi", "text": "x"}),
            "/from",
        ),
        (json!({"subject": "hi", "text": "x"}), "/to"),
        (json!({"to": "a@example.com", "text": "x"}), "/subject"),
        (
            json!({"to": "a@example.com", "subject": "hi", "text": "x", "headers": {"Bcc": "evil@example.com"}}),
            "/headers",
        ),
        (
            json!({"to": "a@example.com", "subject": "hi", "text": "x", "headers": {"X-Ok": "a\r\nBcc: evil@example.com"}}),
            "/headers",
        ),
        (json!({"to": "a@example.com", "subject": "hi"}), "/text"),
        (
            json!({"to": "a@example.com", "subject": "hi", "text": "x", "tags": ["no spaces"]}),
            "/tags/0",
        ),
        (
            json!({"to": "a@example.com", "subject": "hi", "text": "x", "send_at": "2099-01-01T00:00:00Z"}),
            "/send_at",
        ),
    ];
    for (body, field) in cases {
        let got = problem(
            send(&app, &key, &body, None).await,
            422,
            "validation_failed",
        )
        .await;
        assert!(field_of(&got).starts_with(field), "{body} → {got}");
    }
    let tags: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    let got = problem(
        send(
            &app,
            &key,
            &json!({"to": "a@example.com", "subject": "hi", "text": "x", "tags": tags}),
            None,
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(field_of(&got), "/tags");
    problem(
        app.get("/api/v1/outbox?wait=31", Some(&key)).await,
        422,
        "validation_failed",
    )
    .await;
    let many: Vec<String> = (0..51).map(|i| format!("u{i}@example.com")).collect();
    problem(
        send(
            &app,
            &key,
            &json!({"to": many, "subject": "hi", "text": "x"}),
            None,
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    let jobs_key = app.new_key(&["jobs"]).await;
    problem(
        send(&app, &jobs_key, &ok, None).await,
        403,
        "insufficient_scope",
    )
    .await;
    let listed = json_of(&app, &key, "/api/v1/mail").await;
    assert_eq!(listed["items"], json!([]), "nothing refused was stored");
    // The same request, well-formed, is accepted.
    assert_eq!(send(&app, &key, &ok, None).await.status(), 202);
    let unknown = uuid::Uuid::now_v7();
    problem(
        app.get(&format!("/api/v1/mail/{unknown}"), Some(&key))
            .await,
        404,
        "not_found",
    )
    .await;
    let cancel = app
        .request(
            Method::POST,
            &format!("/api/v1/mail/{unknown}/cancel"),
            Some(&key),
        )
        .send()
        .await
        .unwrap();
    problem(cancel, 404, "not_found").await;
}

async fn scheduled_mail_is_cancelled_before_it_is_sent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    let at = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let res = send(&app, &key, &json!({"to": ["a@example.com", "b@example.com"], "subject": "later", "text": "x", "send_at": at}), None).await;
    assert_eq!(res.status(), 202);
    let mail: Value = res.json().await.unwrap();
    let id = mail["id"].as_str().unwrap();
    assert_eq!(mail["status"], "queued");
    let res = app
        .request(
            Method::POST,
            &format!("/api/v1/mail/{id}/cancel"),
            Some(&key),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cancelled: Value = res.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let events = json_of(
        &app,
        &key,
        &format!(
            "/api/v1/mail/messages/{}",
            cancelled["messages"][0]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        events["events"].as_array().unwrap().last().unwrap()["kind"],
        "cancelled"
    );
    // Cancelling again changes nothing.
    let again: Value = app
        .request(
            Method::POST,
            &format!("/api/v1/mail/{id}/cancel"),
            Some(&key),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["status"], "cancelled");
    let outbox = json_of(&app, &key, "/api/v1/outbox").await;
    assert_eq!(outbox["items"], json!([]));
}

async fn suppressed_addresses_are_spared(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    let suppress = |body: Value| {
        app.request(Method::POST, "/api/v1/suppressions", Some(&key))
            .json(&body)
            .send()
    };
    let res = suppress(json!({"address": "Bea <B@Example.com>", "reason": "bounce"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let entry: Value = res.json().await.unwrap();
    assert_eq!(entry["address"], "b@example.com");
    assert_eq!(entry["reason"], "bounce");
    // The first entry stays.
    let res = suppress(json!({"address": "b@example.com"})).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["reason"], "bounce");
    problem(
        suppress(json!({"address": "c@example.com", "reason": "dislike"}))
            .await
            .unwrap(),
        422,
        "validation_failed",
    )
    .await;
    problem(
        suppress(json!({"address": "not an address"}))
            .await
            .unwrap(),
        422,
        "validation_failed",
    )
    .await;
    let listed = json_of(&app, &key, "/api/v1/suppressions").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    let res = send(
        &app,
        &key,
        &json!({"to": ["a@example.com", "b@example.com"], "subject": "hi", "text": "x"}),
        None,
    )
    .await;
    assert_eq!(res.status(), 202);
    let mail: Value = res.json().await.unwrap();
    let id = mail["id"].as_str().unwrap();
    eventually(Duration::from_secs(20), || async {
        json_of(&app, &key, &format!("/api/v1/mail/{id}")).await["status"] == "mixed"
    })
    .await;
    let mail = json_of(&app, &key, &format!("/api/v1/mail/{id}")).await;
    let statuses: Vec<(&str, &str)> = mail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["to"].as_str().unwrap(), m["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [("a@example.com", "sent"), ("b@example.com", "suppressed")]
    );
    assert!(
        mail["messages"][1]["reply"]
            .as_str()
            .unwrap()
            .contains("bounce")
    );
    let outbox = json_of(&app, &key, "/api/v1/outbox").await;
    let to: Vec<&str> = outbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        to,
        ["a@example.com"],
        "nothing reached the suppressed address"
    );

    let del = |path: &str| app.request(Method::DELETE, path, Some(&key)).send();
    assert_eq!(
        del("/api/v1/suppressions/B@example.com")
            .await
            .unwrap()
            .status(),
        204
    );
    problem(
        del("/api/v1/suppressions/b@example.com").await.unwrap(),
        404,
        "not_found",
    )
    .await;
    problem(
        app.get("/api/v1/suppressions/b@example.com", Some(&key))
            .await,
        404,
        "not_found",
    )
    .await;
}

async fn an_interrupted_send_is_recorded_and_sent_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    let store = app.state.store.clone();
    let queue = carafe_core::jobs::QueueName::parse("carafe.mail").unwrap();
    store.set_queue_paused(&queue, true).await.unwrap();
    let res = send(
        &app,
        &key,
        &json!({"to": "a@example.com", "subject": "hi", "text": "x"}),
        None,
    )
    .await;
    let mail: Value = res.json().await.unwrap();
    let id: carafe_core::mail::MessageId =
        mail["messages"][0]["id"].as_str().unwrap().parse().unwrap();
    // As if an attempt had begun and its process died before it ended: the message is left
    // `sending`, and its job is claimed again.
    store
        .start_sending(id, carafe_core::time::now())
        .await
        .unwrap()
        .unwrap();
    store.set_queue_paused(&queue, false).await.unwrap();
    let path = format!("/api/v1/mail/messages/{id}");
    eventually(Duration::from_secs(20), || async {
        json_of(&app, &key, &path).await["status"] == "sent"
    })
    .await;
    let m = json_of(&app, &key, &path).await;
    let kinds: Vec<&str> = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["queued", "sending", "deferred", "sending", "sent"]);
    assert_eq!(m["events"][2]["data"]["interrupted"], true);
    assert_eq!(m["attempts"], 2);
    let outbox = json_of(&app, &key, "/api/v1/outbox?to=a@example.com").await;
    assert_eq!(
        outbox["items"].as_array().unwrap().len(),
        1,
        "captured once"
    );
}
