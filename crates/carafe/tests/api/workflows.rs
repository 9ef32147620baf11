//! Workflows over HTTP: a chain passing results along, a chord calling back once with every
//! result, a failed step stopping the rest, and validation.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, problem};

both_backends!(
    a_chain_runs_step_by_step,
    a_chord_calls_back_with_every_result,
    a_failed_step_fails_the_workflow,
    bad_workflows_are_422_with_the_field,
);

async fn create(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/api/v1/workflows", Some(&app.admin_key), &body)
        .await
}

async fn workflow(app: &TestApp, id: i64) -> Value {
    let res = app
        .get(&format!("/api/v1/workflows/{id}"), Some(&app.admin_key))
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn states(wf: &Value) -> Vec<String> {
    wf["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_owned())
        .collect()
}

/// Claims one job of `queue` and completes it with `result`; returns the claimed job.
async fn work(app: &TestApp, queue: &str, result: Value) -> Value {
    let job = app
        .claim_jobs(queue, json!({"worker": "w"}))
        .await
        .remove(0);
    let id = job["id"].as_i64().unwrap();
    let res = app
        .worker_call(
            &app.admin_key,
            id,
            "complete",
            &json!({"lease_token": job["lease_token"], "result": result}),
        )
        .await;
    assert_eq!(res.status(), 200);
    job
}

async fn a_chain_runs_step_by_step(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = create(&app, json!({"chain": [
        {"queue": "extract", "args": {"file": 9}}, {"queue": "transform"}, {"queue": "load", "args": {"table": "t"}}
    ]}))
    .await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let wf: Value = res.json().await.unwrap();
    let id = wf["id"].as_i64().unwrap();
    assert!(location.ends_with(&format!("/api/v1/workflows/{id}")));
    assert_eq!(
        (wf["kind"].as_str(), wf["state"].as_str()),
        (Some("chain"), Some("running"))
    );
    assert_eq!(states(&wf), ["available", "pending", "pending"]);
    assert_eq!(wf["steps"][1]["workflow_id"], id);
    assert_eq!(wf["steps"][2]["workflow_step"], 2);
    assert!(
        app.claim_jobs("transform", json!({"worker": "w"}))
            .await
            .is_empty(),
        "pending steps wait"
    );
    let pending = wf["steps"][1]["id"].as_i64().unwrap();
    problem(
        app.retry_job(&app.admin_key, pending).await,
        409,
        "job_pending",
    )
    .await;

    let first = work(&app, "extract", json!({"rows": 3})).await;
    assert_eq!(first["args"], json!({"file": 9}));
    let second = work(&app, "transform", json!("transformed")).await;
    assert_eq!(
        second["args"],
        json!({"previous": {"rows": 3}}),
        "each step gets the previous result"
    );
    let third = work(&app, "load", json!(null)).await;
    assert_eq!(
        third["args"],
        json!({"table": "t", "previous": "transformed"})
    );

    let wf = workflow(&app, id).await;
    assert_eq!(wf["state"], "completed");
    assert_eq!(states(&wf), ["completed", "completed", "completed"]);
    assert!(wf["finalized_at"].is_string());
    problem(
        app.get("/api/v1/workflows/999999", Some(&app.admin_key))
            .await,
        404,
        "not_found",
    )
    .await;
}

async fn a_chord_calls_back_with_every_result(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let members: Vec<_> = (0..3)
        .map(|i| json!({"queue": "resize", "args": {"size": i}}))
        .collect();
    let res = create(&app, json!({"group": members, "then": {"queue": "zip"}})).await;
    let wf: Value = res.json().await.unwrap();
    assert_eq!(wf["kind"], "chord");
    assert_eq!(
        states(&wf),
        ["available", "available", "available", "pending"]
    );
    // Three workers take the members at once and finish in reverse order.
    let claimed = app
        .claim_jobs("resize", json!({"worker": "w", "max": 3}))
        .await;
    assert_eq!(claimed.len(), 3);
    for job in claimed.iter().rev() {
        let size = job["args"]["size"].as_i64().unwrap();
        let body = json!({"lease_token": job["lease_token"], "result": format!("{size}.webp")});
        app.worker_call(
            &app.admin_key,
            job["id"].as_i64().unwrap(),
            "complete",
            &body,
        )
        .await;
        if size > 0 {
            assert!(
                app.claim_jobs("zip", json!({"worker": "w"}))
                    .await
                    .is_empty(),
                "not before every member"
            );
        }
    }
    let callback = app
        .claim_jobs("zip", json!({"worker": "w", "max": 10}))
        .await;
    assert_eq!(callback.len(), 1, "the callback runs once");
    assert_eq!(
        callback[0]["args"]["results"],
        json!(["0.webp", "1.webp", "2.webp"]),
        "in step order"
    );
    app.worker_call(
        &app.admin_key,
        callback[0]["id"].as_i64().unwrap(),
        "complete",
        &json!({"lease_token": callback[0]["lease_token"]}),
    )
    .await;
    assert_eq!(
        workflow(&app, wf["id"].as_i64().unwrap()).await["state"],
        "completed"
    );
}

async fn a_failed_step_fails_the_workflow(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = create(
        &app,
        json!({"chain": [{"queue": "charge"}, {"queue": "ship"}, {"queue": "mail"}]}),
    )
    .await;
    let wf: Value = res.json().await.unwrap();
    let job = app
        .claim_jobs("charge", json!({"worker": "w"}))
        .await
        .remove(0);
    let body = json!({"lease_token": job["lease_token"], "error": "card declined", "retry": false});
    app.worker_call(&app.admin_key, job["id"].as_i64().unwrap(), "fail", &body)
        .await;
    let wf = workflow(&app, wf["id"].as_i64().unwrap()).await;
    assert_eq!(wf["state"], "failed");
    assert_eq!(
        states(&wf),
        ["discarded", "cancelled", "cancelled"],
        "the rest never runs"
    );
    assert!(
        app.claim_jobs("ship", json!({"worker": "w"}))
            .await
            .is_empty()
    );

    // Cancelling a group member cancels the workflow and asks the running member to stop.
    let res = create(&app, json!({"group": [{"queue": "a"}, {"queue": "b"}]})).await;
    let wf: Value = res.json().await.unwrap();
    let running = app.claim_jobs("a", json!({"worker": "w"})).await.remove(0);
    app.cancel_job(&app.admin_key, wf["steps"][1]["id"].as_i64().unwrap())
        .await;
    let wf = workflow(&app, wf["id"].as_i64().unwrap()).await;
    assert_eq!(wf["state"], "cancelled");
    assert_eq!(
        app.job(running["id"].as_i64().unwrap()).await["cancel_requested"],
        true
    );
}

async fn bad_workflows_are_422_with_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let too_many: Vec<_> = (0..101).map(|_| json!({"queue": "q"})).collect();
    let cases = [
        (json!({"chain": []}), "/chain"),
        (json!({"chain": too_many}), "/chain"),
        (
            json!({"chain": [{"queue": "q"}], "group": [{"queue": "q"}]}),
            "/group",
        ),
        (
            json!({"chain": [{"queue": "q"}], "then": {"queue": "q"}}),
            "/then",
        ),
        (json!({}), "/"),
        (
            json!({"chain": [{"queue": "q", "unique_key": "k"}]}),
            "/chain/0/unique_key",
        ),
        (
            json!({"chain": [{"queue": "q"}, {"queue": "q", "delay_ms": 5}]}),
            "/chain/1/delay_ms",
        ),
        (
            json!({"group": [{"queue": "q"}, {"queue": "Bad Queue"}]}),
            "/group/1/queue",
        ),
        (
            json!({"group": [{"queue": "q"}], "then": {"queue": "q", "priority": 99}}),
            "/then/priority",
        ),
    ];
    for (body, field) in cases {
        let p = problem(create(&app, body.clone()).await, 422, "validation_failed").await;
        assert_eq!(p["errors"][0]["field"], field, "{body}: {p}");
    }
    let user = app.user_token("u", &["jobs"]).await;
    let res = app
        .request(Method::POST, "/api/v1/workflows", Some(&user))
        .json(&json!({"chain": [{"queue": "q"}]}))
        .send()
        .await
        .unwrap();
    problem(res, 403, "api_key_required").await;
}
