//! Enqueueing, reading, listing, cancelling and retrying jobs over HTTP, and who may do what.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, problem};

both_backends!(
    enqueued_jobs_are_readable_and_listed,
    bad_enqueues_are_422_with_the_field,
    unique_keys_return_the_live_job,
    batches_are_all_or_nothing_and_bounded,
    enqueue_honours_idempotency_keys,
    cancel_waiting_and_running_jobs,
    retry_revives_a_discarded_job,
    end_users_see_only_their_own_jobs,
    queues_report_counts_and_pause,
    queue_limits_cap_claims,
);

async fn enqueued_jobs_are_readable_and_listed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .enqueue(&app.admin_key, &json!({"queue": "mail", "args": {"to": "a@example.com"}, "priority": 2, "max_attempts": 3}))
        .await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = res.json().await.unwrap();
    let id = job["id"].as_i64().unwrap();
    assert_eq!(location, app.url(&format!("/api/v1/jobs/{id}")));
    assert_eq!(job["state"], "available");
    assert_eq!(job["args"], json!({"to": "a@example.com"}));
    assert_eq!(
        (
            job["priority"].as_i64(),
            job["attempt"].as_i64(),
            job["max_attempts"].as_i64()
        ),
        (Some(2), Some(0), Some(3))
    );
    assert_eq!(job["errors"], json!([]));
    assert_eq!(app.job(id).await, job);

    let later = app
        .new_job(json!({"queue": "mail", "delay_ms": 3_600_000}))
        .await;
    assert_eq!(app.job(later).await["state"], "scheduled");
    app.new_job(json!({"queue": "other"})).await;

    let list: Value = app
        .list_jobs(&app.admin_key, "?queue=mail")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![later, id], "newest first, this queue only");
    let list: Value = app
        .list_jobs(&app.admin_key, "?state=scheduled")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    problem(
        app.list_jobs(&app.admin_key, "?state=done").await,
        400,
        "invalid_query",
    )
    .await;
    problem(
        app.list_jobs(&app.admin_key, "?queue=Bad!").await,
        400,
        "invalid_query",
    )
    .await;
    problem(app.get_job(&app.admin_key, 999_999).await, 404, "not_found").await;
    problem(
        app.get("/api/v1/jobs/abc", Some(&app.admin_key)).await,
        404,
        "not_found",
    )
    .await;
}

async fn bad_enqueues_are_422_with_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        (json!({"queue": "Has Spaces"}), "/queue"),
        (json!({"queue": "carafe.files"}), "/queue"),
        (json!({"queue": "q", "args": [1]}), "/args"),
        (
            json!({"queue": "q", "args": {"pad": "x".repeat(70_000)}}),
            "/args",
        ),
        (json!({"queue": "q", "delay_ms": -5}), "/delay_ms"),
        (
            json!({"queue": "q", "delay_ms": 99_999_999_999_i64}),
            "/delay_ms",
        ),
        (json!({"queue": "q", "run_at": "next tuesday"}), "/run_at"),
        (json!({"queue": "q", "priority": 42}), "/priority"),
        (json!({"queue": "q", "max_attempts": 0}), "/max_attempts"),
        (
            json!({"queue": "q", "backoff": {"type": "exponential", "base_ms": 0, "max_ms": 1}}),
            "/backoff",
        ),
        (
            json!({"queue": "q", "target": "https://example.com"}),
            "/target",
        ),
    ];
    for (body, field) in cases {
        let p = problem(
            app.enqueue(&app.admin_key, &body).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(p["errors"][0]["field"], field, "{body}: {p}");
    }
    let user = app.user_token("u1", &["jobs"]).await;
    problem(
        app.enqueue(&user, &json!({"queue": "q"})).await,
        403,
        "api_key_required",
    )
    .await;
    let files = app.new_key(&["files"]).await;
    problem(
        app.enqueue(&files, &json!({"queue": "q"})).await,
        403,
        "insufficient_scope",
    )
    .await;
}

async fn unique_keys_return_the_live_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"queue": "reports", "unique_key": "daily-2026-11-22"});
    let first = app.enqueue(&app.admin_key, &body).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = app.enqueue(&app.admin_key, &body).await;
    assert_eq!(again.status(), 200, "the existing job, not a second one");
    assert!(again.headers().contains_key("location"));
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let list: Value = app
        .list_jobs(&app.admin_key, "?queue=reports")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

async fn batches_are_all_or_nothing_and_bounded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let jobs: Vec<_> = (0..3)
        .map(|i| json!({"queue": "bulk", "args": {"i": i}}))
        .collect();
    let mut with_dup = jobs.clone();
    with_dup.push(json!({"queue": "bulk", "unique_key": "u"}));
    with_dup.push(json!({"queue": "bulk", "unique_key": "u"}));
    let res = app
        .enqueue_batch(&app.admin_key, &json!({"jobs": with_dup}))
        .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let items = body["items"].as_array().unwrap();
    let created: Vec<_> = items
        .iter()
        .map(|i| i["created"].as_bool().unwrap())
        .collect();
    assert_eq!(created, [true, true, true, true, false]);
    assert_eq!(items[4]["job"]["id"], items[3]["job"]["id"]);
    assert_eq!(items[1]["job"]["args"], json!({"i": 1}));

    // One bad job refuses the whole batch, naming it.
    let mut bad = jobs.clone();
    bad.push(json!({"queue": "bulk", "priority": 99}));
    let p = problem(
        app.enqueue_batch(&app.admin_key, &json!({"jobs": bad}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/jobs/3/priority");
    let list: Value = app
        .list_jobs(&app.admin_key, "?queue=bulk")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        4,
        "nothing of the refused batch went in"
    );

    let too_many: Vec<_> = (0..1001).map(|_| json!({"queue": "bulk"})).collect();
    let p = problem(
        app.enqueue_batch(&app.admin_key, &json!({"jobs": too_many}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/jobs");
    problem(
        app.enqueue_batch(&app.admin_key, &json!({"jobs": []}))
            .await,
        422,
        "validation_failed",
    )
    .await;
}

async fn enqueue_honours_idempotency_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let send = || {
        app.request(Method::POST, "/api/v1/jobs", Some(&app.admin_key))
            .header("idempotency-key", "order-7-receipt")
            .json(&json!({"queue": "mail", "args": {"order": 7}}))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let res = send().await.unwrap();
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    let second: Value = res.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    let list: Value = app
        .list_jobs(&app.admin_key, "?queue=mail")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

async fn cancel_waiting_and_running_jobs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let waiting = app.new_job(json!({"queue": "c", "delay_ms": 60_000})).await;
    let res = app.cancel_job(&app.admin_key, waiting).await;
    assert_eq!(res.status(), 200);
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["state"], "cancelled");
    assert!(job["finalized_at"].is_string());
    // Cancelling again is harmless.
    assert_eq!(app.cancel_job(&app.admin_key, waiting).await.status(), 200);

    let running = app.new_job(json!({"queue": "c"})).await;
    let claimed = app.claim_jobs("c", json!({"worker": "w"})).await;
    let token = claimed[0]["lease_token"].as_str().unwrap().to_owned();
    let job: Value = app
        .cancel_job(&app.admin_key, running)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (job["state"].as_str(), job["cancel_requested"].as_bool()),
        (Some("running"), Some(true))
    );
    let hb: Value = app
        .worker_call(
            &app.admin_key,
            running,
            "heartbeat",
            &json!({"lease_token": token}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        hb["cancel_requested"], true,
        "the worker learns of it on its next heartbeat"
    );
    let fail: Value = app
        .worker_call(
            &app.admin_key,
            running,
            "fail",
            &json!({"lease_token": token, "error": "stopped on request"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fail["state"], "cancelled");
    let res = app
        .worker_call(
            &app.admin_key,
            running,
            "heartbeat",
            &json!({"lease_token": token}),
        )
        .await;
    problem(res, 409, "lease_lost").await;

    let done = app.new_job(json!({"queue": "d"})).await;
    let claimed = app.claim_jobs("d", json!({"worker": "w"})).await;
    let token = claimed[0]["lease_token"].as_str().unwrap();
    app.worker_call(
        &app.admin_key,
        done,
        "complete",
        &json!({"lease_token": token}),
    )
    .await;
    problem(
        app.cancel_job(&app.admin_key, done).await,
        409,
        "job_finished",
    )
    .await;
}

async fn retry_revives_a_discarded_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.new_job(json!({"queue": "r", "max_attempts": 1})).await;
    let token = app.claim_jobs("r", json!({"worker": "w"})).await[0]["lease_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .worker_call(
            &app.admin_key,
            id,
            "fail",
            &json!({"lease_token": token, "error": "boom"}),
        )
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "discarded");
    let job: Value = app
        .retry_job(&app.admin_key, id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "available");
    assert_eq!(job["errors"][0]["message"], "boom", "the history is kept");
    let claimed = app.claim_jobs("r", json!({"worker": "w"})).await;
    assert_eq!(
        (claimed[0]["id"].as_i64(), claimed[0]["attempt"].as_i64()),
        (Some(id), Some(2))
    );
    problem(app.retry_job(&app.admin_key, id).await, 409, "job_running").await;
    problem(
        app.retry_job(&app.admin_key, 999_999).await,
        404,
        "not_found",
    )
    .await;
}

async fn end_users_see_only_their_own_jobs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mine = app
        .new_job(json!({"queue": "export", "owner": "alice"}))
        .await;
    let theirs = app
        .new_job(json!({"queue": "export", "owner": "bob"}))
        .await;
    let alice = app.user_token("alice", &["jobs"]).await;
    assert_eq!(app.get_job(&alice, mine).await.status(), 200);
    problem(app.get_job(&alice, theirs).await, 404, "not_found").await;
    let list: Value = app
        .list_jobs(&alice, "?owner=bob")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![mine], "a user's list is always their own");
    problem(app.cancel_job(&alice, theirs).await, 404, "not_found").await;
    assert_eq!(
        app.cancel_job(&alice, mine).await.status(),
        200,
        "users may cancel their own jobs"
    );
    problem(app.retry_job(&alice, mine).await, 403, "api_key_required").await;
    problem(
        app.claim(&alice, "export", &json!({"worker": "x"})).await,
        403,
        "api_key_required",
    )
    .await;
    let no_scope = app.user_token("alice", &["files"]).await;
    problem(
        app.get_job(&no_scope, mine).await,
        403,
        "insufficient_scope",
    )
    .await;
}

async fn queues_report_counts_and_pause(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for _ in 0..3 {
        app.new_job(json!({"queue": "stats"})).await;
    }
    app.new_job(json!({"queue": "stats", "delay_ms": 60_000}))
        .await;
    let claimed = app.claim_jobs("stats", json!({"worker": "w"})).await;
    let token = claimed[0]["lease_token"].as_str().unwrap();
    app.worker_call(
        &app.admin_key,
        claimed[0]["id"].as_i64().unwrap(),
        "complete",
        &json!({"lease_token": token}),
    )
    .await;
    let body: Value = app.queues(&app.admin_key).await.json().await.unwrap();
    let q = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "stats")
        .unwrap()
        .clone();
    assert_eq!(q["counts"]["available"], 2);
    assert_eq!(q["counts"]["scheduled"], 1);
    assert_eq!(q["counts"]["completed"], 1);
    assert_eq!(q["counts"]["discarded"], 0);
    assert_eq!(q["completed_last_minute"], 1);
    assert!(q["oldest_available_age_ms"].as_u64().is_some());
    assert_eq!(q["paused"], false);

    let paused: Value = app
        .queue_action(&app.admin_key, "stats", "pause")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    assert!(
        app.claim_jobs("stats", json!({"worker": "w", "max": 10}))
            .await
            .is_empty()
    );
    app.queue_action(&app.admin_key, "stats", "resume").await;
    assert_eq!(
        app.claim_jobs("stats", json!({"worker": "w", "max": 10}))
            .await
            .len(),
        2
    );
    problem(
        app.queue_action(&app.admin_key, "Bad Name", "pause").await,
        404,
        "not_found",
    )
    .await;
}

async fn queue_limits_cap_claims(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let jobs: Vec<_> = (0..10).map(|_| json!({"queue": "smtp"})).collect();
    app.enqueue_batch(&app.admin_key, &json!({"jobs": jobs}))
        .await;
    let res = app
        .request(Method::PUT, "/api/v1/queues/smtp", Some(&app.admin_key))
        .json(&json!({"concurrency": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.unwrap();
    assert_eq!(
        (
            view["concurrency"].as_u64(),
            view["rate_per_second"].is_null()
        ),
        (Some(2), true)
    );
    assert_eq!(
        app.claim_jobs("smtp", json!({"worker": "a", "max": 10}))
            .await
            .len(),
        2
    );
    assert!(
        app.claim_jobs("smtp", json!({"worker": "b", "max": 10}))
            .await
            .is_empty(),
        "the limit holds across workers"
    );

    let res = app
        .request(Method::PUT, "/api/v1/queues/smtp", Some(&app.admin_key))
        .json(&json!({"concurrency": null, "rate_per_second": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["rate_per_second"], 3.0);
    assert_eq!(
        app.claim_jobs("smtp", json!({"worker": "a", "max": 10}))
            .await
            .len(),
        3,
        "a one-second burst"
    );
    for (body, field) in [
        (json!({"concurrency": 0}), "/concurrency"),
        (json!({"rate_per_second": -1}), "/rate_per_second"),
        (json!({"burst": 1}), "/burst"),
    ] {
        let res = app
            .request(Method::PUT, "/api/v1/queues/smtp", Some(&app.admin_key))
            .json(&body)
            .send()
            .await
            .unwrap();
        let p = problem(res, 422, "validation_failed").await;
        assert_eq!(p["errors"][0]["field"], field);
    }
}

/// Retention, as the maintenance leader applies it: finished jobs past their retention go,
/// waiting ones stay; and the queue figures reach /metrics.
#[tokio::test]
async fn retention_prunes_finished_jobs_and_metrics_show_queues() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.jobs.retention_completed =
            carafe::config::HumanDuration(std::time::Duration::from_millis(1));
    })
    .await;
    let done = app.new_job(json!({"queue": "kept-short"})).await;
    let waiting = app
        .new_job(json!({"queue": "kept-short", "delay_ms": 60_000}))
        .await;
    let job = app
        .claim_jobs("kept-short", json!({"worker": "w"}))
        .await
        .remove(0);
    app.worker_call(
        &app.admin_key,
        done,
        "complete",
        &json!({"lease_token": job["lease_token"]}),
    )
    .await;
    let text = app
        .metrics(Some(&app.admin_key))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("carafe_jobs{queue=\"kept-short\",state=\"completed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("carafe_jobs_claim_latency_seconds_count"),
        "claim latency histogram"
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await; // past the 1 ms retention
    let pruned = carafe::jobs::maintenance::prune(&app.state.jobs)
        .await
        .unwrap();
    // The maintenance leader's first upkeep (at start-up, the same `prune`) may have come
    // after the completion on a slow machine and removed the job already: either way it is
    // gone, nothing else is, and the waiting job is kept.
    assert!(pruned.jobs <= 1, "{pruned:?}");
    problem(app.get_job(&app.admin_key, done).await, 404, "not_found").await;
    assert_eq!(app.get_job(&app.admin_key, waiting).await.status(), 200);
}
