//! The pull-worker protocol over HTTP: claim (long-poll), heartbeat, progress, complete,
//! fail, batch completion, lease fencing and rescue — including several instances and
//! workers racing over one queue.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, post_json_to, problem};

both_backends!(
    a_worker_claims_reports_and_completes,
    claims_are_validated,
    a_waiting_claim_wakes_when_work_arrives,
    failures_retry_then_discard,
    batch_completion_answers_per_item,
    expired_leases_are_rescued_and_fenced,
);

fn token(job: &Value) -> String {
    job["lease_token"].as_str().unwrap().to_owned()
}

async fn a_worker_claims_reports_and_completes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .new_job(json!({"queue": "thumbs", "args": {"file": 7}}))
        .await;
    let claimed = app
        .claim_jobs(
            "thumbs",
            json!({"worker": "py-1", "max": 10, "lease_ms": 30_000}),
        )
        .await;
    assert_eq!(claimed.len(), 1);
    let job = &claimed[0];
    assert_eq!(
        (job["id"].as_i64(), job["attempt"].as_i64()),
        (Some(id), Some(1))
    );
    assert_eq!(job["args"], json!({"file": 7}));
    assert_eq!(token(job).len(), 32);
    let seen = app.job(id).await;
    assert_eq!(
        (seen["state"].as_str(), seen["worker"].as_str()),
        (Some("running"), Some("py-1"))
    );
    assert!(
        seen.get("lease_token").is_none(),
        "only the worker sees its lease token"
    );

    let hb = app
        .worker_call(&app.admin_key, id, "heartbeat", &json!({
            "lease_token": token(job), "lease_ms": 120_000,
            "progress": {"current": 1, "total": 4, "stage": "resize"}, "checkpoint": {"done": [1]}
        }))
        .await;
    assert_eq!(hb.status(), 200);
    let hb: Value = hb.json().await.unwrap();
    assert_eq!(hb["cancel_requested"], false);
    let res = app
        .worker_call(
            &app.admin_key,
            id,
            "progress",
            &json!({"lease_token": token(job), "progress": {"current": 3, "total": 4}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let seen = app.job(id).await;
    assert_eq!(seen["progress"], json!({"current": 3, "total": 4}));
    assert_eq!(seen["checkpoint"], json!({"done": [1]}));
    assert_eq!(
        seen["lease_expires_at"], hb["lease_expires_at"],
        "progress does not move the lease"
    );

    let done = app
        .worker_call(
            &app.admin_key,
            id,
            "complete",
            &json!({"lease_token": token(job), "result": {"url": "/t/7.webp"}}),
        )
        .await;
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    assert_eq!(
        (done["state"].as_str(), &done["result"]),
        (Some("completed"), &json!({"url": "/t/7.webp"}))
    );

    let again = app
        .worker_call(
            &app.admin_key,
            id,
            "complete",
            &json!({"lease_token": token(job)}),
        )
        .await;
    problem(again, 409, "lease_lost").await;
    let wrong = app
        .worker_call(
            &app.admin_key,
            id,
            "heartbeat",
            &json!({"lease_token": "0".repeat(32)}),
        )
        .await;
    problem(wrong, 409, "lease_lost").await;
    let missing = app
        .worker_call(
            &app.admin_key,
            999_999,
            "heartbeat",
            &json!({"lease_token": "x"}),
        )
        .await;
    problem(missing, 404, "not_found").await;
    let bad_progress = app
        .worker_call(
            &app.admin_key,
            id,
            "progress",
            &json!({"lease_token": "x", "progress": {"current": 5, "total": 2}}),
        )
        .await;
    problem(bad_progress, 422, "validation_failed").await;
}

async fn claims_are_validated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        (json!({"worker": "w", "max": 0}), "/max"),
        (json!({"worker": "w", "max": 100_000}), "/max"),
        (json!({"worker": "w", "wait_ms": 600_000}), "/wait_ms"),
        (json!({"worker": "w", "wait_ms": -1}), "/wait_ms"),
        (json!({"worker": "w", "lease_ms": 10}), "/lease_ms"),
        (json!({"worker": ""}), "/worker"),
        (json!({"max": 1}), "/"),
    ];
    for (body, field) in cases {
        let p = problem(
            app.claim(&app.admin_key, "q", &body).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(p["errors"][0]["field"], field, "{body}: {p}");
    }
    let p = problem(
        app.claim(&app.admin_key, "Bad%20Queue", &json!({"worker": "w"}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "queue");
    // An empty queue answers at once with no jobs.
    assert!(
        app.claim_jobs("empty", json!({"worker": "w"}))
            .await
            .is_empty()
    );
}

async fn a_waiting_claim_wakes_when_work_arrives(backend: Backend) {
    // A long poll interval: only a wake-up can answer the claim quickly.
    let app = TestApp::spawn_with(backend, |c| {
        c.jobs.poll_interval = carafe::config::HumanDuration(Duration::from_secs(30));
    })
    .await;
    let started = Instant::now();
    let empty = app
        .claim_jobs("idle", json!({"worker": "w", "wait_ms": 300}))
        .await;
    assert!(empty.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");

    let client = app.client.clone();
    let url = app.url("/api/v1/queues/wake/claim");
    let key = app.admin_key.clone();
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let res = client
            .post(url)
            .bearer_auth(key)
            .json(&json!({"worker": "w", "wait_ms": 20_000}))
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        (body, started.elapsed())
    });
    // Give the waiter time to be waiting: its request is in flight once in_flight counts it.
    let observer = app.state.observer.clone();
    crate::helpers::eventually(Duration::from_secs(10), || {
        let n = observer.in_flight();
        async move { n >= 1 }
    })
    .await;
    let id = app.new_job(json!({"queue": "wake"})).await;
    let (body, waited) = waiter.await.unwrap();
    assert_eq!(body["jobs"][0]["id"].as_i64(), Some(id));
    assert!(
        waited < Duration::from_secs(10),
        "woken by the enqueue, not a poll: {waited:?}"
    );
}

async fn failures_retry_then_discard(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .new_job(json!({"queue": "flaky", "max_attempts": 2, "backoff": {"type": "fixed", "delay_ms": 0}}))
        .await;
    let first = app
        .claim_jobs("flaky", json!({"worker": "w"}))
        .await
        .remove(0);
    let res: Value = app
        .worker_call(
            &app.admin_key,
            id,
            "fail",
            &json!({"lease_token": token(&first), "error": "SMTP 451 try later"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["state"], "retryable");
    assert!(res["retry_at"].is_string());
    let second = app
        .claim_jobs("flaky", json!({"worker": "w"}))
        .await
        .remove(0);
    assert_eq!(second["attempt"], 2);
    let res: Value = app
        .worker_call(
            &app.admin_key,
            id,
            "fail",
            &json!({"lease_token": token(&second), "error": "still failing"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["state"], "discarded");
    let job = app.job(id).await;
    let messages: Vec<_> = job["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["SMTP 451 try later", "still failing"]);
    assert_eq!(job["errors"][1]["attempt"], 2);

    // retry: false discards at once; retry_in_ms sets the delay.
    let k = app.new_job(json!({"queue": "flaky2"})).await;
    let c = app
        .claim_jobs("flaky2", json!({"worker": "w"}))
        .await
        .remove(0);
    let res: Value = app
        .worker_call(
            &app.admin_key,
            k,
            "fail",
            &json!({"lease_token": token(&c), "error": "bad input", "retry": false}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["state"], "discarded");
    let m = app.new_job(json!({"queue": "flaky3"})).await;
    let c = app
        .claim_jobs("flaky3", json!({"worker": "w"}))
        .await
        .remove(0);
    let res: Value = app
        .worker_call(
            &app.admin_key,
            m,
            "fail",
            &json!({"lease_token": token(&c), "error": "429", "retry_in_ms": 3_600_000}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["state"], "retryable");
    assert_eq!(app.job(m).await["state"], "retryable");
    let res = app
        .worker_call(
            &app.admin_key,
            m,
            "fail",
            &json!({"lease_token": token(&c), "error": "x", "retry": false, "retry_in_ms": 5}),
        )
        .await;
    problem(res, 422, "validation_failed").await;
}

async fn batch_completion_answers_per_item(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let jobs: Vec<_> = (0..3)
        .map(|i| json!({"queue": "b", "args": {"i": i}}))
        .collect();
    app.enqueue_batch(&app.admin_key, &json!({"jobs": jobs}))
        .await;
    let claimed = app.claim_jobs("b", json!({"worker": "w", "max": 3})).await;
    assert_eq!(claimed.len(), 3);
    let items = json!({"items": [
        {"id": claimed[0]["id"], "lease_token": token(&claimed[0]), "result": {"ok": 1}},
        {"id": claimed[1]["id"], "lease_token": "stale"},
        {"id": 999_999, "lease_token": "x"},
        {"id": claimed[2]["id"], "lease_token": token(&claimed[2])},
    ]});
    let res: Value = app
        .complete_batch(&app.admin_key, &items)
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<_> = res["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["completed", "lease_lost", "not_found", "completed"]
    );
    assert_eq!(
        app.job(claimed[0]["id"].as_i64().unwrap()).await["result"],
        json!({"ok": 1})
    );
    assert_eq!(
        app.job(claimed[1]["id"].as_i64().unwrap()).await["state"],
        "running"
    );
    problem(
        app.complete_batch(&app.admin_key, &json!({"items": []}))
            .await,
        422,
        "validation_failed",
    )
    .await;
}

async fn expired_leases_are_rescued_and_fenced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .new_job(json!({"queue": "lost", "backoff": {"type": "fixed", "delay_ms": 0}}))
        .await;
    let zombie = app
        .claim_jobs("lost", json!({"worker": "dies", "lease_ms": 1000}))
        .await
        .remove(0);
    // The worker never reports; maintenance rescues the job when its lease expires.
    let job = app.wait_for_state(id, "available").await;
    assert!(
        job["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("lease expired"),
        "{job}"
    );
    let fresh = app
        .claim_jobs("lost", json!({"worker": "healthy"}))
        .await
        .remove(0);
    assert_eq!(fresh["attempt"], 2);
    let late = app
        .worker_call(
            &app.admin_key,
            id,
            "complete",
            &json!({"lease_token": token(&zombie)}),
        )
        .await;
    problem(late, 409, "lease_lost").await;
    let ok = app
        .worker_call(
            &app.admin_key,
            id,
            "complete",
            &json!({"lease_token": token(&fresh)}),
        )
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(app.job(id).await["state"], "completed");
}

/// Two instances on one PostgreSQL, eight pull workers over HTTP: every job completes exactly
/// once, and no completion with a stale lease is accepted.
#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn two_instances_and_eight_workers_complete_every_job_once() {
    const JOBS: usize = 10_000;
    let a = TestApp::spawn(Backend::Postgres).await;
    let b = a.sibling(Default::default()).await;
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(1000) {
        let jobs: Vec<_> = chunk
            .iter()
            .map(|i| json!({"queue": "many", "args": {"i": i}}))
            .collect();
        assert_eq!(
            a.enqueue_batch(&a.admin_key, &json!({"jobs": jobs}))
                .await
                .status(),
            201
        );
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let (client, key) = (a.client.clone(), a.admin_key.clone());
        let base = if w % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let res: Value = post_json_to(
                    &client,
                    &format!("{base}/api/v1/queues/many/claim"),
                    &key,
                    &json!({"worker": format!("w{w}"), "max": 100, "lease_ms": 60_000}),
                )
                .await;
                let jobs = res["jobs"].as_array().unwrap().clone();
                if jobs.is_empty() {
                    return done;
                }
                let items: Vec<_> = jobs
                    .iter()
                    .map(|j| json!({"id": j["id"], "lease_token": j["lease_token"]}))
                    .collect();
                let res: Value = post_json_to(
                    &client,
                    &format!("{base}/api/v1/jobs/complete"),
                    &key,
                    &json!({"items": items}),
                )
                .await;
                for r in res["results"].as_array().unwrap() {
                    assert_eq!(r["status"], "completed");
                    done.push(r["id"].as_i64().unwrap());
                }
                // A replay of the same completions is refused: the leases are spent.
                if done.len() % 1000 < 100 {
                    let again: Value = post_json_to(
                        &client,
                        &format!("{base}/api/v1/jobs/complete"),
                        &key,
                        &json!({"items": items}),
                    )
                    .await;
                    assert!(
                        again["results"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|r| r["status"] == "lease_lost")
                    );
                }
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (JOBS, JOBS));
    let stats: Value = a.queues(&a.admin_key).await.json().await.unwrap();
    let q = stats["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "many")
        .unwrap()
        .clone();
    assert_eq!(q["counts"]["completed"], JOBS as u64);
}

/// The README's Python worker (standard library only) drains a queue against a real server.
#[tokio::test]
async fn the_example_python_worker_drains_a_queue() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let jobs: Vec<_> = (0..20)
        .map(|i| json!({"queue": "py", "args": {"n": i}}))
        .collect();
    app.enqueue_batch(&app.admin_key, &json!({"jobs": jobs}))
        .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pull_worker.py");
    let out = tokio::process::Command::new("python3")
        .args([script, "py", "--exit-when-idle"])
        .env("CARAFE_URL", &app.base)
        .env("CARAFE_KEY", &app.admin_key)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = app
        .list_jobs(&app.admin_key, "?queue=py&state=completed&limit=100")
        .await
        .json()
        .await
        .unwrap();
    let done = list["items"].as_array().unwrap();
    assert_eq!(done.len(), 20);
    assert!(
        done.iter()
            .all(|j| j["result"]["echo"]["n"].is_i64() && j["progress"]["stage"] == "working")
    );
}
