//! Small writes sent at the same time share a commit (group commit), and each is still judged
//! on its own: a completion, heartbeat or failure with a wrong lease fails alone, a job
//! completed twice at once completes once, and concurrent enqueues with one unique key create
//! one job.

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, problem};

both_backends!(
    concurrent_completions_are_each_fenced_on_their_own,
    concurrent_heartbeats_and_failures_are_each_fenced_on_their_own,
    concurrent_enqueues_with_one_unique_key_create_one_job,
);

async fn concurrent_completions_are_each_fenced_on_their_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"jobs": (0..40).map(|i| json!({"queue": "many", "args": {"i": i}})).collect::<Vec<_>>()});
    assert_eq!(app.enqueue_batch(&app.admin_key, &body).await.status(), 201);
    let jobs = app
        .claim_jobs("many", json!({"worker": "w", "max": 40}))
        .await;
    assert_eq!(jobs.len(), 40);
    // Every fourth sends a lease that is not its own; the first job is completed twice.
    let mut calls = Vec::new();
    for (n, job) in jobs.iter().enumerate() {
        let token = if n % 4 == 3 {
            json!("0123456789abcdef0123456789abcdef")
        } else {
            job["lease_token"].clone()
        };
        calls.push((job["id"].as_i64().unwrap(), token));
    }
    calls.push(calls[0].clone());
    let bodies: Vec<Value> = calls
        .iter()
        .map(|(id, token)| json!({"lease_token": token, "result": {"id": id}}))
        .collect();
    let answers = join_all(
        calls
            .iter()
            .zip(&bodies)
            .map(|((id, _), body)| app.worker_call(&app.admin_key, *id, "complete", body)),
    )
    .await;
    let mut first_job = Vec::new();
    for (n, res) in answers.into_iter().enumerate() {
        let id = calls[n].0;
        if id == calls[0].0 {
            first_job.push(res.status().as_u16());
        } else if n % 4 == 3 {
            problem(res, 409, "lease_lost").await;
            assert_eq!(app.job(id).await["state"], "running", "job {id}");
        } else {
            assert_eq!(res.status(), 200, "job {id}");
            let job: Value = res.json().await.unwrap();
            assert_eq!(
                (job["state"].as_str(), job["result"]["id"].as_i64()),
                (Some("completed"), Some(id))
            );
        }
    }
    first_job.sort();
    assert_eq!(
        first_job,
        vec![200, 409],
        "completed once, the second told its lease is gone"
    );
}

async fn concurrent_enqueues_with_one_unique_key_create_one_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"queue": "reports", "unique_key": "nightly"});
    let answers = join_all((0..20).map(|_| app.enqueue(&app.admin_key, &body))).await;
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for res in answers {
        match res.status().as_u16() {
            201 => created += 1,
            200 => {}
            other => panic!("status {other}"),
        }
        ids.insert(res.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    assert_eq!(
        (created, ids.len()),
        (1, 1),
        "one job, returned to every caller"
    );
}

async fn concurrent_heartbeats_and_failures_are_each_fenced_on_their_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"jobs": (0..30).map(|i| json!({"queue": "beats", "args": {"i": i}})).collect::<Vec<_>>()});
    assert_eq!(app.enqueue_batch(&app.admin_key, &body).await.status(), 201);
    let jobs = app
        .claim_jobs("beats", json!({"worker": "w", "max": 30}))
        .await;
    assert_eq!(jobs.len(), 30);
    let wrong = json!("0123456789abcdef0123456789abcdef");
    // Every third job gets a lease that is not its own.
    let token = |n: usize| {
        if n % 3 == 2 {
            wrong.clone()
        } else {
            jobs[n]["lease_token"].clone()
        }
    };
    let id = |n: usize| jobs[n]["id"].as_i64().unwrap();
    let beats: Vec<Value> = (0..30)
        .map(|n| json!({"lease_token": token(n), "progress": {"current": n, "total": 30}}))
        .collect();
    let answers =
        join_all((0..30).map(|n| app.worker_call(&app.admin_key, id(n), "heartbeat", &beats[n])))
            .await;
    for (n, res) in answers.into_iter().enumerate() {
        if n % 3 == 2 {
            problem(res, 409, "lease_lost").await;
            assert_eq!(
                app.job(id(n)).await["progress"],
                Value::Null,
                "job {}",
                id(n)
            );
        } else {
            assert_eq!(res.status(), 200, "job {}", id(n));
            assert_eq!(
                app.job(id(n)).await["progress"]["current"],
                n,
                "job {}",
                id(n)
            );
        }
    }
    // Then each fails without a retry, at once.
    let fails: Vec<Value> = (0..30)
        .map(|n| json!({"lease_token": token(n), "error": format!("broke {n}"), "retry": false}))
        .collect();
    let answers =
        join_all((0..30).map(|n| app.worker_call(&app.admin_key, id(n), "fail", &fails[n]))).await;
    for (n, res) in answers.into_iter().enumerate() {
        let job = id(n);
        if n % 3 == 2 {
            problem(res, 409, "lease_lost").await;
            assert_eq!(app.job(job).await["state"], "running", "job {job}");
        } else {
            assert_eq!(res.status(), 200, "job {job}");
            let got = app.job(job).await;
            assert_eq!(got["state"], "discarded", "job {job}");
            assert_eq!(
                got["errors"][0]["message"],
                format!("broke {n}"),
                "job {job}"
            );
        }
    }
}
