//! Mail out through a real SMTP relay (Debian's aiosmtpd, `scripts/services/smtp`): STARTTLS
//! with a private CA and AUTH; a temporary refusal defers the message and the next attempt
//! sends it; a permanent refusal fails it; a relay that refuses the login keeps the message
//! (deferred, nothing lost). The relay writes every message it accepts to a JSON-lines record.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, eventually};

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
    mail_goes_out_over_starttls_with_auth,
    a_temporary_refusal_defers_then_sends,
    a_permanent_refusal_fails_the_message,
    a_refused_login_keeps_the_message,
    dkim_signatures_verify_independently
);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (scripts/services/smtp)"))
}

async fn app_with_relay(backend: Backend, url: String) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.mail.smtp_url = Some(carafe::config::Secret::new(url));
        c.mail.smtp_ca_file = Some(env("CARAFE_TEST_SMTP_CA").into());
        c.mail.retry_base = carafe::config::HumanDuration(Duration::from_millis(50));
    })
    .await
}

/// A domain no other test uses, so the relay's record and its per-address counters are ours.
fn domain() -> String {
    format!("t{}.example.test", uuid::Uuid::now_v7().simple())
}

async fn send(app: &TestApp, key: &str, to: &str) -> String {
    let res = app
        .request(Method::POST, "/api/v1/mail", Some(key))
        .json(
            &json!({"from": "Shop <shop@example.com>", "to": to, "subject": "Receipt 42",
                      "html": "<p>Thanks for order <b>42</b></p>"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let mail: Value = res.json().await.unwrap();
    mail["messages"][0]["id"].as_str().unwrap().to_owned()
}

async fn message(app: &TestApp, key: &str, id: &str) -> Value {
    app.get(&format!("/api/v1/mail/messages/{id}"), Some(key))
        .await
        .json()
        .await
        .unwrap()
}

async fn ends(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    eventually(Duration::from_secs(30), || async {
        message(app, key, id).await["status"] == status
    })
    .await;
    message(app, key, id).await
}

/// The relay's records of messages to `to`.
fn received(to: &str) -> Vec<Value> {
    std::fs::read_to_string(env("CARAFE_TEST_SMTP_RECORD"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| {
            r["rcpt_tos"]
                .as_array()
                .is_some_and(|a| a.iter().any(|t| t == to))
        })
        .collect()
}

fn kinds(m: &Value) -> Vec<String> {
    m["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn mail_goes_out_over_starttls_with_auth(backend: Backend) {
    let app = app_with_relay(backend, env("CARAFE_TEST_SMTP_URL")).await;
    let key = app.new_key(&["mail"]).await;
    let to = format!("ana@{}", domain());
    let id = send(&app, &key, &to).await;
    let m = ends(&app, &key, &id, "sent").await;
    assert_eq!(m["attempts"], 1);
    assert!(m["reply"].as_str().unwrap().starts_with("250"), "{m}");
    let got = received(&to);
    assert_eq!(got.len(), 1, "the relay got it once");
    assert_eq!(got[0]["tls"], true, "over STARTTLS");
    assert_eq!(got[0]["auth_user"], "carafe");
    assert_eq!(got[0]["mail_from"], "shop@example.com");
    let data = got[0]["data"].as_str().unwrap();
    assert!(data.contains("Subject: Receipt 42"));
    assert!(data.contains("multipart/alternative"));
    // Nothing is captured when a relay is configured.
    let outbox: Value = app
        .get("/api/v1/outbox", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(outbox["items"], json!([]));
}

async fn a_temporary_refusal_defers_then_sends(backend: Backend) {
    let app = app_with_relay(backend, env("CARAFE_TEST_SMTP_URL")).await;
    let key = app.new_key(&["mail"]).await;
    // The relay answers 451 to this address the first time, then accepts it.
    let to = format!("flaky-1@{}", domain());
    let id = send(&app, &key, &to).await;
    let m = ends(&app, &key, &id, "sent").await;
    assert_eq!(m["attempts"], 2);
    assert_eq!(
        kinds(&m),
        ["queued", "sending", "deferred", "sending", "sent"]
    );
    let deferred = &m["events"][2];
    assert!(
        deferred["data"]["reply"].as_str().unwrap().contains("451"),
        "{m}"
    );
    assert_eq!(received(&to).len(), 1);
}

async fn a_permanent_refusal_fails_the_message(backend: Backend) {
    let app = app_with_relay(backend, env("CARAFE_TEST_SMTP_URL")).await;
    let key = app.new_key(&["mail"]).await;
    let to = format!("perm-fail@{}", domain());
    let id = send(&app, &key, &to).await;
    let m = ends(&app, &key, &id, "failed").await;
    assert_eq!(m["attempts"], 1, "a 5xx is not retried");
    assert!(m["reply"].as_str().unwrap().contains("550"), "{m}");
    assert!(received(&to).is_empty());
}

async fn a_refused_login_keeps_the_message(backend: Backend) {
    let url = env("CARAFE_TEST_SMTP_URL").replace("carafe-smtp-pass", "wrong-password");
    let app = app_with_relay(backend, url).await;
    let key = app.new_key(&["mail"]).await;
    let to = format!("ana@{}", domain());
    let id = send(&app, &key, &to).await;
    eventually(Duration::from_secs(30), || async {
        message(&app, &key, &id).await["attempts"].as_u64() >= Some(2)
    })
    .await;
    let m = message(&app, &key, &id).await;
    assert!(
        matches!(m["status"].as_str(), Some("deferred" | "sending")),
        "a refused login never fails the message: {m}"
    );
    let deferred = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "deferred")
        .unwrap_or_else(|| panic!("{m}"));
    assert!(
        deferred["data"]["reply"].as_str().unwrap().contains("535"),
        "the timeline says why: {m}"
    );
    assert!(received(&to).is_empty());
}

/// Verifies a received message's DKIM signature with dkimpy (Debian's python3-dkim), an
/// independent implementation, given the public key the DNS would publish.
fn dkim_verifies(message: &str) -> bool {
    let public = env("CARAFE_TEST_DKIM_KEY").replace("dkim.pem", "dkim.pub.pem");
    let script = r#"
import base64, sys, dkim
pub = open(sys.argv[1]).read()
p = "".join(l for l in pub.splitlines() if "-----" not in l)
record = ("v=DKIM1; k=rsa; p=" + p).encode()
def dns(name, timeout=5):
    return record if name == b"carafe._domainkey.example.com." else None
print(dkim.verify(sys.stdin.buffer.read(), dnsfunc=dns))
"#;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script, &public])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

async fn dkim_signatures_verify_independently(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.mail.smtp_url = Some(carafe::config::Secret::new(env("CARAFE_TEST_SMTP_URL")));
        c.mail.smtp_ca_file = Some(env("CARAFE_TEST_SMTP_CA").into());
        c.mail.dkim_key_file = Some(env("CARAFE_TEST_DKIM_KEY").into());
        c.mail.dkim_domain = Some("example.com".into());
    })
    .await;
    let key = app.new_key(&["mail"]).await;
    let to = format!("ana@{}", domain());
    let res = app
        .request(Method::POST, "/api/v1/mail", Some(&key))
        .json(
            &json!({"from": "Shop <shop@example.com>", "to": to, "cc": "Zoë <zoe@example.com>",
                      "subject": "주문 확인 — receipt", "html": "<p>Thanks for order <b>42</b></p>",
                      "headers": {"List-Unsubscribe": "<https://example.com/u/abc>",
                                  "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let mail: Value = res.json().await.unwrap();
    let id = mail["messages"][0]["id"].as_str().unwrap().to_owned();
    ends(&app, &key, &id, "sent").await;
    let got = received(&to);
    let data = got[0]["data"].as_str().unwrap();
    // The DKIM-Signature header with its folded continuation lines, and nothing after it.
    let mut lines = data
        .split("\r\n")
        .skip_while(|l| !l.to_ascii_lowercase().starts_with("dkim-signature:"));
    let mut signature = lines.next().expect("a DKIM-Signature header").to_owned();
    signature.extend(
        lines
            .take_while(|l| l.starts_with([' ', '\t']))
            .map(str::trim),
    );
    assert!(signature.contains("c=relaxed/relaxed"), "{signature}");
    assert!(
        signature.contains("d=example.com") && signature.contains("s=carafe"),
        "{signature}"
    );
    let signed = signature
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix("h="))
        .expect("an h= tag")
        .split(':')
        .map(str::trim)
        .collect::<Vec<_>>();
    for h in [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(signed.contains(&h), "{h} is signed: {signature}");
    }
    assert!(dkim_verifies(data), "dkimpy verifies the signature: {data}");
    // A changed body no longer verifies: the check is real.
    assert!(!dkim_verifies(&data.replace("42", "43")));
}
