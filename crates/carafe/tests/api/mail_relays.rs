//! Several relays (the real aiosmtpd server of `scripts/services/smtp`, on its STARTTLS and
//! plain ports): a mail or campaign picks one by name; transactional mail and a campaign sent
//! through one relay share its rate; a throttling reply (`454`) slows the relay down, which
//! `GET /api/v1/mail/relays` shows; an unknown relay is refused.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, eventually, json_of, post_json, problem};
use crate::mail_campaigns::{create, put_template, wait_state};

macro_rules! relay_tests {
    ($($name:ident),* $(,)?) => {
        mod relays_sqlite {
            $(
                #[tokio::test]
                #[ignore = "needs CARAFE_TEST_SMTP_URL"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod relays_postgres {
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

relay_tests!(
    mail_and_campaigns_through_one_relay_share_its_rate,
    a_throttling_reply_slows_the_relay_down
);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (scripts/services/smtp)"))
}

/// The relay's rate and burst in these tests.
const RATE: f64 = 10.0;
const BURST: u32 = 4;

/// `default` over STARTTLS without a rate; `bulk` on the plain port at `RATE`.
async fn app(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.mail.smtp_url = Some(carafe::config::Secret::new(env("CARAFE_TEST_SMTP_URL")));
        c.mail.smtp_ca_file = Some(env("CARAFE_TEST_SMTP_CA").into());
        c.mail.retry_base = carafe::config::HumanDuration(Duration::from_millis(50));
        let bulk = format!("{}?tls=none", env("CARAFE_TEST_SMTP_PLAIN_URL"));
        let relay = toml::from_str::<carafe::mail::relays::RelaySettings>(&format!(
            "url = {bulk:?}\nrate = {RATE:.1}\nburst = {BURST}\nconcurrency = 8\n"
        ))
        .unwrap();
        c.mail.relays.insert("bulk".into(), relay);
    })
    .await
}

fn domain() -> String {
    format!("t{}.example.test", uuid::Uuid::now_v7().simple())
}

async fn relays(app: &TestApp, key: &str) -> Vec<Value> {
    json_of(app, key, "/api/v1/mail/relays").await["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn named<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter().find(|r| r["name"] == name).unwrap()
}

async fn mail_and_campaigns_through_one_relay_share_its_rate(backend: Backend) {
    let app = app(backend).await;
    let key = app.new_key(&["mail"]).await;
    let list = relays(&app, &key).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let default = named(&list, "default");
    assert_eq!(
        (
            &default["transport"],
            &default["queue"],
            &default["rate_per_second"]
        ),
        (&json!("smtp"), &json!("carafe.mail"), &Value::Null)
    );
    let bulk = named(&list, "bulk");
    assert_eq!(
        (&bulk["queue"], &bulk["rate_per_second"], &bulk["burst"]),
        (&json!("carafe.mail.bulk"), &json!(RATE), &json!(BURST))
    );
    assert!(
        !serde_json::to_string(&list)
            .unwrap()
            .contains("carafe-smtp-pass"),
        "no credentials are shown"
    );

    // Nothing goes through a relay that is not configured.
    let res = post_json(
        &app,
        &key,
        "/api/v1/mail",
        &json!({"to": "a@example.com", "subject": "s", "text": "t", "relay": "nope"}),
    )
    .await;
    let p = problem(res, 422, "validation_failed").await;
    assert_eq!(p["errors"][0]["field"], "/relay", "{p}");

    // 12 transactional messages and a campaign of 12 through `bulk`, at once: 24 messages at
    // 10/s after a burst of 4 take at least 2 s, whichever queue they come from.
    let d = domain();
    put_template(
        &app,
        &key,
        "relay-news",
        json!({"subject": "News", "text": "Hello {{ email }}"}),
    )
    .await;
    let started = Instant::now();
    let to: Vec<String> = (0..12).map(|i| format!("t{i}@{d}")).collect();
    let res = post_json(
        &app,
        &key,
        "/api/v1/mail",
        &json!({"to": to, "subject": "Receipt", "text": "Thanks", "relay": "bulk"}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let recipients: Vec<Value> = (0..12)
        .map(|i| json!({"email": format!("c{i}@{d}")}))
        .collect();
    let c = create(
        &app,
        &key,
        json!({"name": "News", "template": {"name": "relay-news"}, "from": "news@example.com",
               "recipients": recipients, "relay": "bulk", "start": true}),
    )
    .await;
    assert_eq!(c["relay"], "bulk");
    let id = c["id"].as_str().unwrap();
    let ours = || {
        std::fs::read_to_string(env("CARAFE_TEST_SMTP_RECORD"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&d))
            .count()
    };
    eventually(Duration::from_secs(30), || async { ours() >= 24 }).await;
    let took = started.elapsed();
    let floor = (24 - BURST) as f64 / RATE;
    assert!(
        took.as_secs_f64() >= floor * 0.95,
        "24 messages in {took:?}: faster than the relay's rate allows"
    );
    wait_state(&app, &key, id, "completed").await;
    let bulk = named(&relays(&app, &key).await, "bulk").clone();
    assert!(
        bulk["sent_this_hour"].as_u64().unwrap() >= 24,
        "{bulk}: both queues charged the relay"
    );
    assert_eq!(ours(), 24, "each message reached the relay once");
}

async fn a_throttling_reply_slows_the_relay_down(backend: Backend) {
    let app = app(backend).await;
    let key = app.new_key(&["mail"]).await;
    let res = post_json(
        &app,
        &key,
        "/api/v1/mail",
        &json!({"to": format!("throttle@{}", domain()), "subject": "s", "text": "t",
                "relay": "bulk"}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let mail: Value = res.json().await.unwrap();
    let message = mail["messages"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/mail/messages/{message}");
    eventually(Duration::from_secs(30), || async {
        json_of(&app, &key, &path).await["status"] == "deferred"
    })
    .await;
    let view = json_of(&app, &key, &path).await;
    let deferred = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "deferred")
        .unwrap_or_else(|| panic!("{view}"));
    assert_eq!(deferred["data"]["relay"], "bulk", "{deferred}");
    let rate_now = deferred["data"]["relay_rate_now"]
        .as_f64()
        .unwrap_or_else(|| panic!("{deferred}"));
    assert!(rate_now <= RATE / 2.0 + 0.5, "{deferred}: halved");
    let bulk = named(&relays(&app, &key).await, "bulk").clone();
    assert!(bulk["slowed_at"].is_string(), "{bulk}");
    let current = bulk["current_rate_per_second"].as_f64().unwrap();
    assert!(
        current < RATE,
        "{bulk}: below the rate set while it recovers"
    );
    let default = named(&relays(&app, &key).await, "default").clone();
    assert!(
        default["slowed_at"].is_null(),
        "other relays are not slowed"
    );
    let res = app
        .request(
            Method::POST,
            &format!("/api/v1/mail/{}/cancel", mail["id"].as_str().unwrap()),
            Some(&key),
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
}
