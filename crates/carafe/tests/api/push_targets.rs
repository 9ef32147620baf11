//! Push targets may reach public addresses only, unless the operator allows more: private,
//! loopback, link-local and mapped addresses are refused at every enqueue endpoint, accepted
//! and delivered once allowlisted, and refused again at delivery — without connecting, with
//! the same message whether anything listens there or not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, problem};
use crate::push::{job, push_on, push_to_loopback, start_receiver, start_receiver_on};

both_backends!(
    non_public_targets_are_refused_at_every_enqueue,
    allowlisted_targets_are_accepted_and_delivered,
    a_target_refused_at_delivery_is_discarded_without_connecting,
);

const REFUSAL: &str =
    "the target is not allowed: it resolves to a non-public address (see push.allow_hosts)";

/// Targets that reach this machine, its cloud metadata service or a private network. `port`
/// is a port a receiver listens on.
fn internal_targets(port: u16) -> Vec<String> {
    vec![
        format!("http://127.0.0.1:{port}/hooks/ok"),
        format!("http://[::1]:{port}/hooks/ok"),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://10.0.0.1/hooks/ok".into(),
        format!("http://[::ffff:127.0.0.1]:{port}/hooks/ok"),
        format!("http://localhost:{port}/hooks/ok"),
    ]
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().unwrap().parse().unwrap()
}

async fn refused(res: reqwest::Response, fields: &[&str]) {
    let body = problem(res, 422, "target_not_allowed").await;
    let errors = body["errors"].as_array().unwrap();
    let named: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(named, fields, "{body}");
    assert!(errors.iter().all(|e| e["message"] == REFUSAL), "{body}");
}

async fn put_schedule(app: &TestApp, name: &str, body: &Value) -> reqwest::Response {
    app.request(
        Method::PUT,
        &format!("/api/v1/schedules/{name}"),
        Some(&app.admin_key),
    )
    .json(body)
    .send()
    .await
    .unwrap()
}

async fn non_public_targets_are_refused_at_every_enqueue(backend: Backend) {
    let app = TestApp::spawn_with(backend, push_on).await;
    let (base, receiver) = start_receiver().await;
    for target in internal_targets(port_of(&base)) {
        let res = app
            .enqueue(&app.admin_key, &job(target.clone(), json!({})))
            .await;
        refused(res, &["/target"]).await;
    }

    let batch = json!({"jobs": [
        {"queue": "hooks", "target": "https://8.8.8.8/hooks"},
        {"queue": "hooks", "target": format!("{base}/hooks/ok")},
        {"queue": "hooks"},
        {"queue": "hooks", "target": "http://10.0.0.1/"},
    ]});
    let res = app.enqueue_batch(&app.admin_key, &batch).await;
    refused(res, &["/jobs/1/target", "/jobs/3/target"]).await;

    let chord = json!({
        "group": [{"queue": "hooks"}, {"queue": "hooks", "target": "http://[::1]/"}],
        "then": {"queue": "hooks", "target": "http://169.254.169.254/"},
    });
    let res = app
        .post_json("/api/v1/workflows", Some(&app.admin_key), &chord)
        .await;
    refused(res, &["/group/1/target", "/then/target"]).await;
    let chain = json!({"chain": [{"queue": "hooks", "target": format!("http://localhost:{}/", port_of(&base))}]});
    let res = app
        .post_json("/api/v1/workflows", Some(&app.admin_key), &chain)
        .await;
    refused(res, &["/chain/0/target"]).await;

    let schedule = json!({"cron": "* * * * *", "job": {"queue": "hooks", "target": "http://[::ffff:10.0.0.1]/"}});
    refused(
        put_schedule(&app, "probe", &schedule).await,
        &["/job/target"],
    )
    .await;

    let listed: Value = app
        .list_jobs(&app.admin_key, "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]), "nothing was enqueued");
    let schedules = app
        .get("/api/v1/schedules", Some(&app.admin_key))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(schedules["items"], json!([]));
    assert!(receiver.calls.lock().unwrap().is_empty());
}

async fn allowlisted_targets_are_accepted_and_delivered(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        push_to_loopback(c);
        c.push.allow_hosts.extend([
            "169.254.169.254".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
    })
    .await;
    let (base, receiver) = start_receiver().await;
    let (base6, receiver6) = start_receiver_on("[::1]:0").await;
    let port = port_of(&base);
    let mut delivered = Vec::new();
    for (target, ipv6) in [
        (format!("{base}/hooks/ok"), false),
        (format!("{base6}/hooks/ok"), true),
        (format!("http://[::ffff:127.0.0.1]:{port}/hooks/ok"), false),
        (format!("http://localhost:{port}/hooks/ok"), false),
    ] {
        delivered.push((app.new_job(job(target, json!({}))).await, ipv6));
    }
    // Nothing listens at these: accepted, and parked for an hour.
    for target in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
    ] {
        let parked = app
            .new_job(job(target.into(), json!({"delay_ms": 3_600_000})))
            .await;
        assert_eq!(app.job(parked).await["state"], "scheduled");
    }
    let batch = json!({"jobs": [{"queue": "hooks", "target": format!("{base}/hooks/ok")}]});
    let res = app.enqueue_batch(&app.admin_key, &batch).await;
    assert_eq!(res.status(), 201);
    let answer: Value = res.json().await.unwrap();
    delivered.push((answer["items"][0]["job"]["id"].as_i64().unwrap(), false));
    let chain = json!({"chain": [{"queue": "hooks", "target": format!("http://localhost:{port}/hooks/ok")}]});
    let res = app
        .post_json("/api/v1/workflows", Some(&app.admin_key), &chain)
        .await;
    assert_eq!(res.status(), 201);
    let wf: Value = res.json().await.unwrap();
    delivered.push((wf["steps"][0]["id"].as_i64().unwrap(), false));
    let schedule =
        json!({"cron": "0 0 1 1 *", "job": {"queue": "hooks", "target": "http://10.0.0.1/"}});
    assert_eq!(
        put_schedule(&app, "internal", &schedule).await.status(),
        201
    );

    for (id, ipv6) in delivered {
        let done = app.wait_for_state(id, "completed").await;
        assert_eq!(done["result"], json!({"handled": id}));
        let seen = if ipv6 { &receiver6 } else { &receiver };
        assert_eq!(seen.calls.lock().unwrap().get(&id), Some(&1));
    }
}

/// A TCP listener that counts the connections it accepts (and answers none of them).
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(socket);
        }
    });
    (port, accepted)
}

async fn a_target_refused_at_delivery_is_discarded_without_connecting(backend: Backend) {
    let (port, accepted) = counting_listener().await;
    // Enqueued while the operator allowed loopback; held in a paused queue until the restart.
    let mut first = TestApp::spawn_with(backend, push_to_loopback).await;
    let res = first.queue_action(&first.admin_key, "hooks", "pause").await;
    assert_eq!(res.status(), 200);
    let mut ids = Vec::new();
    for target in [
        format!("http://localhost:{port}/hooks/ok"),
        "http://localhost:1/hooks/ok".to_owned(),
        format!("http://127.0.0.1:{port}/hooks/ok"),
        "http://127.0.0.1:1/hooks/ok".to_owned(),
    ] {
        ids.push(
            first
                .new_job(job(target, json!({"timeout_ms": 2000})))
                .await,
        );
    }
    first.begin_stop();
    first.wait_stopped().await.unwrap();

    // The same database, now without the allowlist: the name resolves to loopback at delivery.
    let app = first
        .restarted(|c| {
            push_on(c);
            c.push.allow_hosts.clear();
        })
        .await;
    let res = app.queue_action(&app.admin_key, "hooks", "resume").await;
    assert_eq!(res.status(), 200);
    for id in ids {
        let job = app.wait_for_state(id, "discarded").await;
        assert_eq!(job["attempt"], 1, "{job}");
        let messages: Vec<&str> = job["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap())
            .collect();
        assert_eq!(messages, [REFUSAL], "open and closed ports read the same");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "Carafe never connected to a refused address"
    );
}
