//! One lease setting for every way a job is run: a claim or heartbeat that names no lease
//! gets the queue's `lease_ms`, else `jobs.lease` — pull workers, in-process handlers and
//! push deliveries alike — and the in-process runner and the push dispatcher renew it at that
//! pace while the job runs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use carafe::config::HumanDuration;
use carafe::jobs::runner::{Handlers, JobContext, JobError, JobHandler};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::helpers::{Backend, TestApp, problem};

both_backends!(
    claims_and_heartbeats_take_the_queue_lease,
    in_process_handlers_renew_the_queue_lease,
);

fn at(job: &Value, field: &str) -> OffsetDateTime {
    OffsetDateTime::parse(
        job[field].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// The lease left on `job`, read at about `now`.
fn lease_left(job: &Value, field: &str) -> Duration {
    (at(job, field) - OffsetDateTime::now_utc()).unsigned_abs()
}

async fn set_queue(app: &TestApp, queue: &str, body: Value) -> reqwest::Response {
    app.request(
        reqwest::Method::PUT,
        &format!("/api/v1/queues/{queue}"),
        Some(&app.admin_key),
    )
    .json(&body)
    .send()
    .await
    .unwrap()
}

async fn claims_and_heartbeats_take_the_queue_lease(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.jobs.lease = HumanDuration(Duration::from_secs(600));
    })
    .await;
    for _ in 0..3 {
        app.new_job(json!({"queue": "renders"})).await;
    }
    // Without a queue setting, `jobs.lease`.
    let job = app
        .claim_jobs("renders", json!({"worker": "w"}))
        .await
        .remove(0);
    let left = lease_left(&job, "lease_expires_at");
    assert!(
        left > Duration::from_secs(590) && left <= Duration::from_secs(600),
        "{left:?}"
    );
    // The queue's lease_ms, for claims and for heartbeats that name none.
    let res = set_queue(&app, "renders", json!({"lease_ms": 5000})).await;
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["lease_ms"], 5000);
    let job = app
        .claim_jobs("renders", json!({"worker": "w"}))
        .await
        .remove(0);
    assert!(lease_left(&job, "lease_expires_at") <= Duration::from_secs(5));
    let res = app
        .worker_call(
            &app.admin_key,
            job["id"].as_i64().unwrap(),
            "heartbeat",
            &json!({"lease_token": job["lease_token"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let ack: Value = res.json().await.unwrap();
    let left = lease_left(&ack, "lease_expires_at");
    assert!(
        left > Duration::from_secs(3) && left <= Duration::from_secs(5),
        "{left:?}"
    );
    // What the worker asks for wins.
    let job = app
        .claim_jobs("renders", json!({"worker": "w", "lease_ms": 90_000}))
        .await
        .remove(0);
    assert!(lease_left(&job, "lease_expires_at") > Duration::from_secs(80));
    // Limits are checked; null clears the setting.
    for bad in [0, 999, 86_400_001] {
        let res = set_queue(&app, "renders", json!({"lease_ms": bad})).await;
        let p = problem(res, 422, "validation_failed").await;
        assert_eq!(p["errors"][0]["field"], "/lease_ms");
    }
    let res = set_queue(&app, "renders", json!({"lease_ms": null})).await;
    let view: Value = res.json().await.unwrap();
    assert!(view["lease_ms"].is_null());
}

/// Holds every job until released.
struct Held(Arc<Notify>);

#[async_trait]
impl JobHandler for Held {
    async fn run(&self, _ctx: JobContext) -> Result<Value, JobError> {
        self.0.notified().await;
        Ok(json!("released"))
    }
}

async fn in_process_handlers_renew_the_queue_lease(backend: Backend) {
    let release = Arc::new(Notify::new());
    let handlers = Handlers::new().add("held", 1, Held(release.clone()));
    let app = TestApp::spawn_full(backend, handlers, |_| {}).await;
    let res = set_queue(&app, "held", json!({"lease_ms": 1500})).await;
    assert_eq!(res.status(), 200);
    let id = app.new_job(json!({"queue": "held"})).await;
    let running = app.wait_for_state(id, "running").await;
    let first = at(&running, "lease_expires_at");
    assert!(
        first - at(&running, "attempted_at") <= time::Duration::milliseconds(1500),
        "the queue's lease, not the default: {running}"
    );
    // Run well past that first lease: the runner renews it at the queue's pace, so the job is
    // never rescued and keeps its first attempt.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let job = app.job(id).await;
        assert_eq!(job["state"], "running", "{job}");
        assert_eq!(job["attempt"], 1, "{job}");
        if OffsetDateTime::now_utc() > first + time::Duration::seconds(2) {
            assert!(at(&job, "lease_expires_at") > first, "renewed: {job}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    release.notify_one();
    let done = app.wait_for_state(id, "completed").await;
    assert_eq!(
        (done["attempt"].as_i64(), &done["result"]),
        (Some(1), &json!("released"))
    );
}
