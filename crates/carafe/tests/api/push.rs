//! Push delivery against a real HTTP app: signed requests, completion by 2xx, 202 then a
//! report, retries on 5xx, 429, timeouts and refused connections, discard on other 4xx, and
//! cancellation of a delivery in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

both_backends!(
    push_delivery_follows_the_answers,
    a_cancelled_delivery_is_aborted
);

pub const PUSH_SECRET: &str = "push-secret-push-secret-push-secret!";

#[derive(Clone, Default)]
pub struct Receiver {
    pub calls: Arc<Mutex<HashMap<i64, u32>>>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

/// The receiving application: checks every signature, then answers as the path says.
async fn receive(
    State(r): State<Receiver>,
    Path(mode): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let signature = headers["carafe-signature"].to_str().unwrap();
    let t: i64 = signature
        .split(',')
        .next()
        .unwrap()
        .strip_prefix("t=")
        .unwrap()
        .parse()
        .unwrap();
    let expected = carafe::jobs::push::signature(PUSH_SECRET.as_bytes(), t, body.as_bytes());
    if signature != expected || (time::OffsetDateTime::now_utc().unix_timestamp() - t).abs() > 300 {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let job: Value = serde_json::from_str(&body).unwrap();
    let id = job["id"].as_i64().unwrap();
    assert_eq!(headers["carafe-job-id"], id.to_string().as_str());
    assert_eq!(
        headers["carafe-lease-token"],
        job["lease_token"].as_str().unwrap()
    );
    let call = {
        let mut calls = r.calls.lock().unwrap();
        let n = calls.entry(id).or_default();
        *n += 1;
        *n
    };
    r.bodies.lock().unwrap().push(job.clone());
    match (mode.as_str(), call) {
        ("ok", _) => axum::Json(json!({"handled": id})).into_response(),
        ("text", _) => "plain words".into_response(),
        ("flaky", 1) => (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response(),
        ("busy", 1) => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")]).into_response(),
        ("slow", 1) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late".into_response()
        }
        ("flaky" | "busy" | "slow", _) => {
            axum::Json(json!({"attempt": job["attempt"]})).into_response()
        }
        ("accept", _) => StatusCode::ACCEPTED.into_response(),
        ("gone", _) => StatusCode::NOT_FOUND.into_response(),
        ("hang", _) => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            "too late".into_response()
        }
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

pub async fn start_receiver() -> (String, Receiver) {
    start_receiver_on("127.0.0.1:0").await
}

/// A receiving application listening on `addr` (`[::1]:0` for IPv6 loopback).
pub async fn start_receiver_on(addr: &str) -> (String, Receiver) {
    let receiver = Receiver::default();
    let router = axum::Router::new()
        .route("/hooks/{mode}", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (base, receiver)
}

/// Push delivery on, to public addresses only (the default policy).
pub fn push_on(c: &mut carafe::Config) {
    c.push.secret = Some(carafe::config::Secret::new(PUSH_SECRET.into()));
}

/// Push delivery on, and open to the loopback receivers these tests run.
pub fn push_to_loopback(c: &mut carafe::Config) {
    push_on(c);
    c.push.allow_hosts = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
}

async fn push_app(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, push_to_loopback).await
}

pub fn job(target: String, extra: Value) -> Value {
    let mut body =
        json!({"queue": "hooks", "target": target, "backoff": {"type": "fixed", "delay_ms": 0}});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn push_delivery_follows_the_answers(backend: Backend) {
    let app = push_app(backend).await;
    let (base, receiver) = start_receiver().await;
    let hook = |mode: &str| format!("{base}/hooks/{mode}");

    let ok = app
        .new_job(job(hook("ok"), json!({"args": {"n": 1}})))
        .await;
    let text = app.new_job(job(hook("text"), json!({}))).await;
    let flaky = app.new_job(job(hook("flaky"), json!({}))).await;
    let busy = app.new_job(job(hook("busy"), json!({}))).await;
    let slow = app
        .new_job(job(hook("slow"), json!({"timeout_ms": 1000})))
        .await;
    let gone = app.new_job(job(hook("gone"), json!({}))).await;
    let down = app
        .new_job(job(
            "http://127.0.0.1:1/nobody".into(),
            json!({"max_attempts": 2}),
        ))
        .await;
    let accept = app.new_job(job(hook("accept"), json!({}))).await;

    let done = app.wait_for_state(ok, "completed").await;
    assert_eq!(done["result"], json!({"handled": ok}));
    assert_eq!(done["target"], hook("ok"));
    assert_eq!(
        app.wait_for_state(text, "completed").await["result"],
        "plain words"
    );

    let done = app.wait_for_state(flaky, "completed").await;
    assert_eq!(
        (done["attempt"].as_i64(), &done["result"]),
        (Some(2), &json!({"attempt": 2}))
    );
    assert_eq!(
        done["errors"][0]["message"],
        "the target answered 500 Internal Server Error"
    );
    assert_eq!(
        app.wait_for_state(busy, "completed").await["attempt"],
        2,
        "429 with Retry-After: 0"
    );
    let done = app.wait_for_state(slow, "completed").await;
    assert!(
        done["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1s"),
        "{done}"
    );

    let discarded = app.wait_for_state(gone, "discarded").await;
    assert_eq!(
        (
            discarded["attempt"].as_i64(),
            discarded["errors"][0]["message"].as_str()
        ),
        (Some(1), Some("the target answered 404 Not Found")),
        "other 4xx are not retried"
    );
    let discarded = app.wait_for_state(down, "discarded").await;
    let messages: Vec<_> = discarded["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["could not connect to the target"; 2]);

    // 202: the job stays running until the app reports with the token it was sent.
    let body = loop {
        let found = receiver
            .bodies
            .lock()
            .unwrap()
            .iter()
            .find(|b| b["id"] == accept)
            .cloned();
        if let Some(b) = found {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(app.job(accept).await["state"], "running");
    assert_eq!(body["queue"], "hooks");
    let res = app
        .worker_call(
            &app.admin_key,
            accept,
            "complete",
            &json!({"lease_token": body["lease_token"], "result": "later"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.job(accept).await["result"], "later");
    assert_eq!(
        receiver.calls.lock().unwrap()[&ok],
        1,
        "a completed job is delivered once"
    );
}

async fn a_cancelled_delivery_is_aborted(backend: Backend) {
    let app = push_app(backend).await;
    let (base, receiver) = start_receiver().await;
    let id = app
        .new_job(job(
            format!("{base}/hooks/hang"),
            json!({"timeout_ms": 60_000}),
        ))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !receiver.calls.lock().unwrap().contains_key(&id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery starts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let res = app.cancel_job(&app.admin_key, id).await;
    assert_eq!(res.json::<Value>().await.unwrap()["cancel_requested"], true);
    let job = app.wait_for_state(id, "cancelled").await;
    assert!(
        job["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("aborted"),
        "{job}"
    );
}
