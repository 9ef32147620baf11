//! Crashes: a worker process killed with SIGKILL in the middle of a job, and the server itself
//! killed with SIGKILL while jobs run. Nothing acknowledged is lost; nothing completes twice.

use std::collections::HashSet;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{Backend, TestApp, post_json_to, problem};
use crate::process::serve;

both_backends!(
    a_worker_killed_mid_job_loses_nothing,
    a_server_killed_mid_job_loses_nothing
);

/// A pull worker in Python that claims one job with a 1 s lease, says which, and hangs.
const HANGING_WORKER: &str = r#"
import json, os, sys, urllib.request
req = urllib.request.Request(
    os.environ["CARAFE_URL"] + "/api/v1/queues/crash/claim",
    data=json.dumps({"worker": "doomed", "lease_ms": 1000}).encode(),
    headers={"Authorization": "Bearer " + os.environ["CARAFE_KEY"], "Content-Type": "application/json"})
job = json.load(urllib.request.urlopen(req))["jobs"][0]
print(json.dumps(job), flush=True)
import time
time.sleep(3600)
"#;

async fn a_worker_killed_mid_job_loses_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .new_job(json!({"queue": "crash", "backoff": {"type": "fixed", "delay_ms": 0}}))
        .await;
    let mut worker = tokio::process::Command::new("python3")
        .args(["-c", HANGING_WORKER])
        .env("CARAFE_URL", &app.base)
        .env("CARAFE_KEY", &app.admin_key)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut out = BufReader::new(worker.stdout.take().unwrap()).lines();
    let claimed: Value = serde_json::from_str(&out.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(claimed["id"].as_i64(), Some(id));
    assert_eq!(app.job(id).await["worker"], "doomed");
    worker.kill().await.unwrap(); // SIGKILL: no goodbye, no fail report.

    // Its lease runs out; the job is rescued and another worker finishes it, once.
    let rescued = app.wait_for_state(id, "available").await;
    assert!(
        rescued["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("lease expired")
    );
    let healthy = app
        .claim_jobs("crash", json!({"worker": "healthy"}))
        .await
        .remove(0);
    assert_eq!(healthy["attempt"], 2);
    let done = app
        .worker_call(
            &app.admin_key,
            id,
            "complete",
            &json!({"lease_token": healthy["lease_token"]}),
        )
        .await;
    assert_eq!(done.status(), 200);
    let zombie = app
        .worker_call(
            &app.admin_key,
            id,
            "complete",
            &json!({"lease_token": claimed["lease_token"]}),
        )
        .await;
    problem(zombie, 409, "lease_lost").await;
    let job = app.job(id).await;
    assert_eq!(
        (job["state"].as_str(), job["worker"].as_str()),
        (Some("completed"), Some("healthy"))
    );
}

async fn a_server_killed_mid_job_loses_nothing(backend: Backend) {
    let cwd = tempfile::tempdir().unwrap();
    let db = if backend.postgres() {
        Some(carafe_store_postgres::testing::fresh_database_url().await)
    } else {
        None
    };
    let mut env = vec![("CARAFE_SECRET_KEY", crate::helpers::SECRET)];
    if let Some(url) = &db {
        env.push(("CARAFE_DATABASE_URL", url.as_str()));
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut server = serve(cwd.path(), &env).await;
    let key = std::fs::read_to_string(cwd.path().join("carafe-data/admin-key"))
        .unwrap()
        .trim()
        .to_owned();

    // 50 acknowledged jobs; 10 claimed (short leases), 5 of those completed.
    let mut ids = HashSet::new();
    for i in 0..50 {
        let res = client
            .post(server.url("/api/v1/jobs"))
            .bearer_auth(&key)
            .json(&json!({"queue": "durable", "args": {"i": i}, "backoff": {"type": "fixed", "delay_ms": 0}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        ids.insert(res.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    let claim = json!({"worker": "before-crash", "max": 10, "lease_ms": 1000});
    let res: Value = post_json_to(
        &client,
        &server.url("/api/v1/queues/durable/claim"),
        &key,
        &claim,
    )
    .await;
    let claimed = res["jobs"].as_array().unwrap().clone();
    assert_eq!(claimed.len(), 10);
    let items: Vec<_> = claimed[..5]
        .iter()
        .map(|j| json!({"id": j["id"], "lease_token": j["lease_token"]}))
        .collect();
    let res: Value = post_json_to(
        &client,
        &server.url("/api/v1/jobs/complete"),
        &key,
        &json!({"items": items}),
    )
    .await;
    assert!(
        res["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "completed")
    );

    server.child.kill().await.unwrap(); // SIGKILL

    let server = serve(cwd.path(), &env).await;
    let list = |state: &'static str| {
        let (client, key, url) = (
            client.clone(),
            key.clone(),
            server.url(&format!(
                "/api/v1/jobs?queue=durable&state={state}&limit=500"
            )),
        );
        async move {
            let body: Value = client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_i64().unwrap())
                .collect::<HashSet<_>>()
        }
    };
    let completed = list("completed").await;
    assert_eq!(
        completed.len(),
        5,
        "completions acknowledged before the crash survive it"
    );
    // The 5 that were running when the server died are rescued when their leases expire.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while list("running").await.len() + list("retryable").await.len() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the interrupted jobs are rescued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Every acknowledged job is there; draining the queue completes each exactly once.
    let mut done: Vec<i64> = completed.iter().copied().collect();
    loop {
        let claim = json!({"worker": "after-crash", "max": 100});
        let res: Value = post_json_to(
            &client,
            &server.url("/api/v1/queues/durable/claim"),
            &key,
            &claim,
        )
        .await;
        let jobs = res["jobs"].as_array().unwrap().clone();
        if jobs.is_empty() {
            break;
        }
        let items: Vec<_> = jobs
            .iter()
            .map(|j| json!({"id": j["id"], "lease_token": j["lease_token"]}))
            .collect();
        let res: Value = post_json_to(
            &client,
            &server.url("/api/v1/jobs/complete"),
            &key,
            &json!({"items": items}),
        )
        .await;
        for r in res["results"].as_array().unwrap() {
            assert_eq!(r["status"], "completed");
            done.push(r["id"].as_i64().unwrap());
        }
    }
    let unique: HashSet<_> = done.iter().copied().collect();
    assert_eq!(done.len(), 50, "no job ran twice");
    assert_eq!(unique, ids, "no acknowledged job was lost");
}
