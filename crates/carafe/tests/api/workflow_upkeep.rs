//! Workflows over time, as the maintenance leader keeps them: retention never takes a step of
//! a running workflow (a chord's callback still gets every result) and takes a finished one
//! whole; the sweep of running workflows passes over one it cannot advance; and a sweep that
//! fails does not keep finished jobs from being pruned.

use std::time::Duration;

use carafe::config::HumanDuration;
use carafe::jobs::maintenance;
use carafe_core::time::now;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, eventually};

both_backends!(
    retention_keeps_the_steps_of_a_running_workflow,
    a_failing_workflow_sweep_does_not_stop_pruning,
);

/// Keeps finished jobs and workflows for 1 ms only.
async fn short_retention(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.jobs.retention_completed = HumanDuration(Duration::from_millis(1));
        c.jobs.retention_discarded = HumanDuration(Duration::from_millis(1));
    })
    .await
}

/// Waits until the 1 ms retention of whatever finished before this call has passed.
async fn past_retention() {
    let finished = now();
    eventually(Duration::from_secs(5), || async move {
        now() - finished > Duration::from_millis(5)
    })
    .await;
}

async fn complete(app: &TestApp, job: &Value, result: Value) {
    let body = json!({"lease_token": job["lease_token"], "result": result});
    let res = app
        .worker_call(
            &app.admin_key,
            job["id"].as_i64().unwrap(),
            "complete",
            &body,
        )
        .await;
    assert_eq!(res.status(), 200);
}

async fn status(app: &TestApp, path: &str) -> u16 {
    app.get(path, Some(&app.admin_key)).await.status().as_u16()
}

async fn retention_keeps_the_steps_of_a_running_workflow(backend: Backend) {
    let app = short_retention(backend).await;
    let res = app
        .post_json(
            "/api/v1/workflows",
            Some(&app.admin_key),
            &json!({"group": [{"queue": "tile"}, {"queue": "tile"}], "then": {"queue": "stitch"}}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let wf: Value = res.json().await.unwrap();
    let wf_path = format!("/api/v1/workflows/{}", wf["id"]);
    let members = app
        .claim_jobs("tile", json!({"worker": "w", "max": 2}))
        .await;
    assert_eq!(members.len(), 2);
    complete(&app, &members[0], json!("first")).await;

    // The first member is long past its retention while the other still runs.
    past_retention().await;
    maintenance::prune(&app.state.jobs).await.unwrap();
    let first = members[0]["id"].as_i64().unwrap();
    assert_eq!(
        status(&app, &format!("/api/v1/jobs/{first}")).await,
        200,
        "a step of a running workflow is kept"
    );

    complete(&app, &members[1], json!("second")).await;
    let callback = app
        .claim_jobs("stitch", json!({"worker": "w"}))
        .await
        .remove(0);
    let results = callback["args"]["results"].as_array().unwrap().clone();
    let mut sorted: Vec<_> = results.iter().filter_map(Value::as_str).collect();
    sorted.sort_unstable();
    assert_eq!(sorted, ["first", "second"], "every member's result");
    complete(&app, &callback, json!("stitched")).await;
    let res = app.get(&wf_path, Some(&app.admin_key)).await;
    let finished: Value = res.json().await.unwrap();
    assert_eq!(finished["state"], "completed");

    // Once the workflow is past its retention, it goes with every step.
    past_retention().await;
    maintenance::prune(&app.state.jobs).await.unwrap();
    assert_eq!(status(&app, &wf_path).await, 404);
    for step in finished["steps"].as_array().unwrap() {
        let path = format!("/api/v1/jobs/{}", step["id"]);
        assert_eq!(status(&app, &path).await, 404, "{step}");
    }
}

/// Runs one statement on the app's database behind its back.
async fn raw_sql(app: &TestApp, sql: String) {
    let sql = sqlx::AssertSqlSafe(sql);
    match &app.state.config.database_url {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url.expose()).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        None => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(app.state.config.sqlite_path())
                .busy_timeout(Duration::from_secs(5));
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    }
}

/// Starts a chain whose first step is then marked completed behind Carafe's back, as a version
/// that advanced workflows in a second transaction could leave it; returns the chain. With
/// `damaged`, the waiting step's row is made unreadable first, so the chain is never seen
/// stalled and advanceable (the server's own sweep runs too).
async fn stuck_chain(app: &TestApp, queue: &str, damaged: bool) -> Value {
    let res = app
        .post_json(
            "/api/v1/workflows",
            Some(&app.admin_key),
            &json!({"chain": [{"queue": queue}, {"queue": format!("{queue}-next")}]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let wf: Value = res.json().await.unwrap();
    let first = &wf["steps"][0]["id"];
    if damaged {
        let next = &wf["steps"][1]["id"];
        let sql = format!("UPDATE jobs SET backoff = '\"sideways\"' WHERE id = {next}");
        raw_sql(app, sql).await;
    }
    let sql = format!(
        "UPDATE jobs SET state = 'completed', finalized_at = created_at WHERE id = {first}"
    );
    raw_sql(app, sql).await;
    wf
}

/// A finished job past its retention; returns its path.
async fn finished_job(app: &TestApp) -> String {
    let done = app.new_job(json!({"queue": "plain"})).await;
    let job = app
        .claim_jobs("plain", json!({"worker": "w"}))
        .await
        .remove(0);
    complete(app, &job, json!(null)).await;
    past_retention().await;
    format!("/api/v1/jobs/{done}")
}

async fn a_failing_workflow_sweep_does_not_stop_pruning(backend: Backend) {
    let app = short_retention(backend).await;
    // Two stuck workflows; the older one's waiting step cannot be read (a damaged row).
    let damaged = stuck_chain(&app, "damaged", true).await;
    let healthy = stuck_chain(&app, "healthy", false).await;
    let done = finished_job(&app).await;

    // The server's own upkeep may sweep at the same time and advance the healthy one first;
    // either way, every sweep fails on the damaged workflow (it is swept first, being older)
    // and only a sweep that passes over it can have advanced the healthy one.
    let round = maintenance::upkeep(&app.state.jobs).await;
    let swept = round.swept.unwrap();
    assert_eq!(swept.failed, 1, "the damaged workflow cannot be advanced");
    assert!(swept.started <= 1, "{swept:?}");
    let next = healthy["steps"][1]["id"].as_i64().unwrap();
    assert_eq!(app.job(next).await["state"], "available");
    assert!(round.pruned.is_ok(), "{:?}", round.pruned);
    assert_eq!(status(&app, &done).await, 404, "pruning ran all the same");

    // A page of workflows that cannot be read fails the whole sweep; pruning still runs.
    // (PostgreSQL's CHECK constraints keep a workflow row from being damaged this way.)
    if backend.postgres() {
        return;
    }
    let sql = format!(
        "UPDATE workflows SET kind = 'spiral' WHERE id = {}",
        damaged["id"]
    );
    raw_sql(&app, sql).await;
    let done = finished_job(&app).await;
    let round = maintenance::upkeep(&app.state.jobs).await;
    assert!(round.swept.is_err(), "{:?}", round.swept);
    assert!(round.pruned.is_ok(), "{:?}", round.pruned);
    assert_eq!(status(&app, &done).await, 404, "pruning ran all the same");
}
