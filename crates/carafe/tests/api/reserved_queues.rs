//! Queues named `carafe.*` carry Carafe's own work. No API caller claims, reports on,
//! cancels or reconfigures them; admins may read, pause, resume and retry; a key with the
//! capability's scope may read its jobs; everyone else gets 403 `reserved_queue` (or does
//! not see them in listings).

use std::time::Duration;

use carafe_core::jobs::{Claim, NewJob, QueueName};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Backend, TestApp, problem};

both_backends!(
    reserved_jobs_cannot_be_worked_over_the_api,
    reserved_queues_are_steered_only_by_admins,
    reserved_jobs_are_read_by_admins_and_their_capability,
);

/// A queue no in-process handler takes, so its jobs stay where the test puts them.
const RESERVED: &str = "carafe.test";

/// Enqueues a job on a reserved queue the way Carafe's own capabilities do (in process).
async fn reserved_job(app: &TestApp, queue: &str) -> i64 {
    let new = NewJob {
        queue: QueueName::parse(queue).unwrap(),
        args: json!({"internal": true}),
        priority: 5,
        max_attempts: 3,
        backoff: None,
        timeout: Duration::from_secs(60),
        scheduled_at: carafe_core::time::now(),
        unique: None,
        owner: None,
        target: None,
        created_at: carafe_core::time::now(),
    };
    let inserted = app.state.jobs.enqueue(vec![new]).await.unwrap();
    inserted[0].job().id.0
}

/// Claims the job in process, as Carafe's runner would, and returns its lease token.
async fn claim_in_process(app: &TestApp) -> (i64, String) {
    let queue = QueueName::parse(RESERVED).unwrap();
    let claimed = app
        .state
        .jobs
        .claim(
            Claim {
                queue: &queue,
                worker: "carafe",
                max: 1,
                lease: app.state.jobs.lease(None),
                now: carafe_core::time::now(),
                push: false,
            },
            Duration::ZERO,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    (claimed[0].id.0, claimed[0].lease_token.to_string())
}

async fn reserved_jobs_cannot_be_worked_over_the_api(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let jobs_key = app.new_key(&["jobs"]).await;
    let waiting = reserved_job(&app, RESERVED).await;
    for key in [&jobs_key, &app.admin_key] {
        let res = app
            .claim(key, RESERVED, &json!({"worker": "w", "max": 10}))
            .await;
        let p = problem(res, 403, "reserved_queue").await;
        assert_eq!(p["queue"], RESERVED);
    }
    assert_eq!(app.job(waiting).await["state"], "available", "not claimed");

    // Even holding a valid lease token (had it leaked), nobody reports over HTTP.
    let (id, token) = claim_in_process(&app).await;
    assert_eq!(id, waiting);
    for key in [&jobs_key, &app.admin_key] {
        for (action, body) in [
            ("heartbeat", json!({"lease_token": token})),
            (
                "progress",
                json!({"lease_token": token, "progress": {"current": 1}}),
            ),
            ("complete", json!({"lease_token": token, "result": "fake"})),
            (
                "fail",
                json!({"lease_token": token, "error": "x", "retry": false}),
            ),
        ] {
            let res = app.worker_call(key, id, action, &body).await;
            problem(res, 403, "reserved_queue").await;
        }
        let res = app
            .complete_batch(key, &json!({"items": [{"id": id, "lease_token": token}]}))
            .await;
        problem(res, 403, "reserved_queue").await;
    }
    let job = app.job(id).await;
    assert_eq!(job["state"], "running", "untouched: {job}");
    assert!(job["progress"].is_null() && job["result"].is_null());

    // A batch mixing an ordinary job with a reserved one is refused whole.
    let ordinary = app.new_job(json!({"queue": "emails"})).await;
    let mine = app
        .claim_jobs("emails", json!({"worker": "w", "max": 1}))
        .await
        .remove(0);
    let res = app
        .complete_batch(
            &jobs_key,
            &json!({"items": [
                {"id": ordinary, "lease_token": mine["lease_token"]},
                {"id": id, "lease_token": token}]}),
        )
        .await;
    problem(res, 403, "reserved_queue").await;
    assert_eq!(app.job(ordinary).await["state"], "running");
    // Cancelling is refused too, for admins as well.
    for key in [&jobs_key, &app.admin_key] {
        let res = app.cancel_job(key, id).await;
        problem(res, 403, "reserved_queue").await;
    }
    assert_eq!(app.job(id).await["cancel_requested"], false);
}

async fn reserved_queues_are_steered_only_by_admins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let jobs_key = app.new_key(&["jobs"]).await;
    let id = reserved_job(&app, RESERVED).await;
    for action in ["pause", "resume"] {
        let res = app.queue_action(&jobs_key, RESERVED, action).await;
        problem(res, 403, "reserved_queue").await;
    }
    let res = app.queue_action(&app.admin_key, RESERVED, "pause").await;
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["paused"], true);
    let res = app.queue_action(&app.admin_key, RESERVED, "resume").await;
    assert_eq!(res.status(), 200);
    // Nobody reconfigures a reserved queue over the API.
    for key in [&jobs_key, &app.admin_key] {
        let res = app
            .request(
                reqwest::Method::PUT,
                &format!("/api/v1/queues/{RESERVED}"),
                Some(key),
            )
            .json(&json!({"concurrency": 1}))
            .send()
            .await
            .unwrap();
        problem(res, 403, "reserved_queue").await;
    }
    // Retrying: admins only. The job is waiting, so a retry makes it run at once.
    let res = app.retry_job(&jobs_key, id).await;
    problem(res, 403, "reserved_queue").await;
    let res = app.retry_job(&app.admin_key, id).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    // Enqueueing is refused to everyone (a field problem, as for any invalid queue name).
    for key in [&jobs_key, &app.admin_key] {
        let res = app.enqueue(key, &json!({"queue": RESERVED})).await;
        let p = problem(res, 422, "validation_failed").await;
        assert_eq!(p["errors"][0]["field"], "/queue");
    }
}

async fn reserved_jobs_are_read_by_admins_and_their_capability(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let jobs_key = app.new_key(&["jobs"]).await;
    let files_jobs_key = app.new_key(&["jobs", "files"]).await;
    let other = reserved_job(&app, RESERVED).await;
    // A file's processing job runs on `carafe.files`.
    let res = app
        .request(
            reqwest::Method::POST,
            "/api/v1/files?name=notes.txt&wait=10",
            Some(&app.admin_key),
        )
        .body("some notes")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let file: Value = res.json().await.unwrap();
    let processing = file["job_id"].as_i64().unwrap();
    let ordinary = app.new_job(json!({"queue": "emails"})).await;

    // One job and its events.
    for id in [other, processing] {
        problem(app.get_job(&jobs_key, id).await, 403, "reserved_queue").await;
        let res = app
            .get(&format!("/api/v1/jobs/{id}/events"), Some(&jobs_key))
            .await;
        problem(res, 403, "reserved_queue").await;
        assert_eq!(app.get_job(&app.admin_key, id).await.status(), 200);
    }
    let res = app.get_job(&files_jobs_key, processing).await;
    assert_eq!(res.status(), 200, "the files capability reads its own jobs");
    problem(
        app.get_job(&files_jobs_key, other).await,
        403,
        "reserved_queue",
    )
    .await;

    // Listings leave Carafe's jobs out unless the caller is an admin.
    let ids = |page: Value| -> Vec<i64> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_i64().unwrap())
            .collect()
    };
    let listed: Value = app.list_jobs(&jobs_key, "").await.json().await.unwrap();
    assert_eq!(ids(listed), [ordinary]);
    let listed: Value = app
        .list_jobs(&app.admin_key, "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(listed).len(), 3);
    let res = app
        .list_jobs(&jobs_key, &format!("?queue={RESERVED}"))
        .await;
    problem(res, 403, "reserved_queue").await;
    let res = app.list_jobs(&files_jobs_key, "?queue=carafe.files").await;
    assert_eq!(res.status(), 200);
    assert_eq!(ids(res.json().await.unwrap()), [processing]);

    let names = |list: Value| -> Vec<String> {
        let mut names: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let seen = names(app.queues(&jobs_key).await.json().await.unwrap());
    assert_eq!(seen, ["emails"]);
    let seen = names(app.queues(&files_jobs_key).await.json().await.unwrap());
    assert_eq!(seen, ["carafe.files", "emails"]);
    let seen = names(app.queues(&app.admin_key).await.json().await.unwrap());
    assert_eq!(seen, ["carafe.files", RESERVED, "emails"]);
}
