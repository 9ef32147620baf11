//! Campaigns when things go wrong: the server killed with SIGKILL mid-campaign (after a
//! restart it carries on, and nobody gets two copies), and the relay down mid-campaign
//! (messages are deferred, nothing is lost, all are sent once it is back).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::crashes::Fresh;
use crate::helpers::{Backend, TestApp, json_of, post_json_to};
use crate::mail_campaigns::{create, poll_campaign};

both_backends!(a_campaign_killed_mid_send_sends_nobody_twice);

macro_rules! smtp_tests {
    ($($name:ident),* $(,)?) => {
        mod smtp_sqlite {
            $(
                #[tokio::test]
                #[ignore = "needs CARAFE_TEST_SMTP_URL"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod smtp_postgres {
            $(
                #[tokio::test]
                #[ignore = "needs CARAFE_TEST_SMTP_URL and CARAFE_TEST_POSTGRES_URL"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

smtp_tests!(
    a_relay_down_mid_campaign_loses_nothing,
    failed_messages_are_sent_again_on_request
);

/// `GET url` with `key`, which must answer 200; its JSON body.
async fn get_json(client: &reqwest::Client, url: &str, key: &str) -> Value {
    let res = client.get(url).bearer_auth(key).send().await.unwrap();
    assert_eq!(res.status(), 200, "GET {url}");
    res.json().await.unwrap()
}

async fn a_campaign_killed_mid_send_sends_nobody_twice(backend: Backend) {
    // A send cut off by the kill is retried a second after its lease runs out.
    let (fresh, mut server) =
        Fresh::new_with(backend, vec![("CARAFE_MAIL__RETRY_BASE", "1s")]).await;
    let (client, key) = (fresh.client.clone(), fresh.key.clone());
    let res = client
        .put(server.url("/api/v1/templates/news"))
        .bearer_auth(&key)
        .json(&json!({"subject": "News for {{ n }}", "text": "Hello {{ n }}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let recipients: Vec<Value> = (0..300)
        .map(|i| json!({"email": format!("k{i}@example.com"), "data": {"n": i}}))
        .collect();
    // 100 a second: the process is killed while it is sending.
    let c = post_json_to(
        &client,
        &server.url("/api/v1/campaigns"),
        &key,
        &json!({"name": "Killed", "template": {"name": "news"}, "tags": ["killed"],
                "recipients": recipients, "rate": 100, "start": true}),
    )
    .await;
    let id = c["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/campaigns/{id}");
    loop {
        let v = get_json(&client, &server.url(&path), &key).await;
        let sent = v["counts"]["sent"].as_u64().unwrap();
        assert!(sent < 300, "finished before it could be killed: {v}");
        if sent >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().await.unwrap(); // SIGKILL, sends in flight

    let server = fresh.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_json(&client, &server.url(&path), &key).await;
        if v["state"] == "completed" {
            assert_eq!(v["counts"]["sent"], 300, "{v}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not completed: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every recipient has exactly one copy.
    let mut copies: HashMap<String, u32> = HashMap::new();
    let mut url = server.url("/api/v1/outbox?tag=killed&limit=500");
    loop {
        let page = get_json(&client, &url, &key).await;
        for item in page["items"].as_array().unwrap() {
            *copies
                .entry(item["to"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => url = server.url(&format!("/api/v1/outbox?tag=killed&limit=500&cursor={c}")),
            None => break,
        }
    }
    assert_eq!(copies.len(), 300);
    assert!(copies.values().all(|n| *n == 1), "nobody twice");
}

/// A free port on 127.0.0.1 (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn a_relay_down_mid_campaign_loses_nothing(backend: Backend) {
    let ca =
        std::env::var("CARAFE_TEST_SMTP_CA").expect("CARAFE_TEST_SMTP_CA (scripts/services/smtp)");
    let state = std::path::Path::new(&ca).parent().unwrap().to_owned();
    // A relay of our own, on ports nobody listens on yet.
    let (tls_port, plain_port) = (free_port(), free_port());
    let app = TestApp::spawn_with(backend, |c| {
        c.mail.smtp_url = Some(carafe::config::Secret::new(format!(
            "smtp://carafe:carafe-smtp-pass@localhost:{tls_port}"
        )));
        c.mail.smtp_ca_file = Some(ca.clone().into());
        c.mail.retry_base = carafe::config::HumanDuration(Duration::from_millis(100));
    })
    .await;
    let key = app.new_key(&["mail"]).await;
    let res = app
        .request(reqwest::Method::PUT, "/api/v1/templates/notice", Some(&key))
        .json(&json!({"subject": "Notice {{ n }}", "text": "Hello {{ n }}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let recipients: Vec<Value> = (0..30)
        .map(|i| json!({"email": format!("down{i}@example.test"), "data": {"n": i}}))
        .collect();
    let c = create(
        &app,
        &key,
        json!({"name": "Relay down", "template": {"name": "notice"}, "recipients": recipients,
               "start": true}),
    )
    .await;
    let id = c["id"].as_str().unwrap().to_owned();
    // Every message is tried and deferred while the relay is down.
    let down = poll_campaign(&app, &key, &id, |v| v["counts"]["deferred"] == 30).await;
    assert_eq!(down["counts"]["sent"], 0);
    let listed = json_of(&app, &key, &format!("/api/v1/mail?campaign={id}&limit=1")).await;
    assert!(listed["items"][0]["reply"].as_str().is_some(), "{listed}");

    // The relay comes up: every message goes out, once.
    let record = tempfile::NamedTempFile::new().unwrap();
    let _relay = tokio::process::Command::new("/usr/bin/python3")
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../scripts/services/smtp-server.py"),
        )
        .arg(&state)
        .env("CARAFE_SMTP_PORT", tls_port.to_string())
        .env("CARAFE_SMTP_PLAIN_PORT", plain_port.to_string())
        .env("CARAFE_SMTP_RECORD", record.path())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the SMTP server starts");
    let done = poll_campaign(&app, &key, &id, |v| v["state"] == "completed").await;
    assert_eq!(done["counts"]["sent"], 30, "{done}");
    let mut copies: HashMap<String, u32> = HashMap::new();
    for line in std::fs::read_to_string(record.path()).unwrap().lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        for to in entry["rcpt_tos"].as_array().unwrap() {
            *copies.entry(to.as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(copies.len(), 30, "{copies:?}");
    assert!(copies.values().all(|n| *n == 1), "nobody twice: {copies:?}");
}

async fn failed_messages_are_sent_again_on_request(backend: Backend) {
    let url = std::env::var("CARAFE_TEST_SMTP_URL").expect("CARAFE_TEST_SMTP_URL");
    let ca = std::env::var("CARAFE_TEST_SMTP_CA").expect("CARAFE_TEST_SMTP_CA");
    let app = TestApp::spawn_with(backend, |c| {
        c.mail.smtp_url = Some(carafe::config::Secret::new(url));
        c.mail.smtp_ca_file = Some(ca.into());
    })
    .await;
    let key = app.new_key(&["mail"]).await;
    let res = app
        .request(reqwest::Method::PUT, "/api/v1/templates/notice", Some(&key))
        .json(&json!({"subject": "Notice", "text": "Hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // The relay refuses perm-fail@ for good (550).
    let domain = format!("t{}.example.test", uuid::Uuid::now_v7().simple());
    let c = create(
        &app,
        &key,
        json!({"name": "Some fail", "template": {"name": "notice"}, "start": true,
               "recipients": [{"email": format!("ok@{domain}")}, {"email": format!("perm-fail@{domain}")}]}),
    )
    .await;
    let id = c["id"].as_str().unwrap().to_owned();
    let done = poll_campaign(&app, &key, &id, |v| v["state"] == "completed").await;
    assert_eq!(
        (
            done["counts"]["sent"].as_u64(),
            done["counts"]["failed"].as_u64()
        ),
        (Some(1), Some(1))
    );

    let res = crate::helpers::post_json(
        &app,
        &key,
        &format!("/api/v1/campaigns/{id}/resend-failed"),
        &json!({}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let resent: Value = res.json().await.unwrap();
    assert_eq!(resent["requeued"], 1, "{resent}");
    // Tried again (and refused again): the timeline shows the requeue and a second attempt.
    let again = poll_campaign(&app, &key, &id, |v| v["state"] == "completed").await;
    assert_eq!(again["counts"]["failed"], 1);
    let failed = json_of(
        &app,
        &key,
        &format!("/api/v1/mail?campaign={id}&status=failed"),
    )
    .await;
    let message = failed["items"][0]["id"].as_str().unwrap();
    let detail = json_of(&app, &key, &format!("/api/v1/mail/messages/{message}")).await;
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"requeued"), "{kinds:?}");
    assert_eq!(detail["attempts"], 2, "{detail}");
}
