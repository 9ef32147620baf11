//! Crashes: a worker process killed with SIGKILL in the middle of a job, and the server itself
//! killed with SIGKILL while jobs run, or while many workers complete jobs one request each
//! (their completions sharing commits). Nothing acknowledged is lost; nothing completes twice.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{Backend, TestApp, post_json_to, problem};
use crate::process::{Served, serve};

both_backends!(
    a_worker_killed_mid_job_loses_nothing,
    a_server_killed_mid_job_loses_nothing,
    a_server_killed_in_a_burst_of_completions_keeps_every_acknowledged_one,
);

/// What it takes to run `carafe serve` on a fresh database (SQLite in its own directory, or a
/// new PostgreSQL database) and start it again; `new` starts the first process.
pub(crate) struct Fresh {
    cwd: tempfile::TempDir,
    db: Option<String>,
    /// More environment for every start (settings a test needs).
    extra: Vec<(&'static str, &'static str)>,
    pub key: String,
    pub client: reqwest::Client,
}

impl Fresh {
    pub async fn new(backend: Backend) -> (Fresh, Served) {
        Self::new_with(backend, Vec::new()).await
    }

    /// `new`, with more environment for every start.
    pub async fn new_with(
        backend: Backend,
        extra: Vec<(&'static str, &'static str)>,
    ) -> (Fresh, Served) {
        let cwd = tempfile::tempdir().unwrap();
        let db = if backend.postgres() {
            Some(carafe_store_postgres::testing::fresh_database_url().await)
        } else {
            None
        };
        let server = serve(cwd.path(), &Self::env(&db, &extra)).await;
        let key = std::fs::read_to_string(cwd.path().join("carafe-data/admin-key"))
            .unwrap()
            .trim()
            .to_owned();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        (
            Fresh {
                cwd,
                db,
                extra,
                key,
                client,
            },
            server,
        )
    }

    fn env<'a>(
        db: &'a Option<String>,
        extra: &[(&'static str, &'static str)],
    ) -> Vec<(&'static str, &'a str)> {
        let mut env = vec![("CARAFE_SECRET_KEY", crate::helpers::SECRET)];
        if let Some(url) = db {
            env.push(("CARAFE_DATABASE_URL", url.as_str()));
        }
        env.extend(extra.iter().copied());
        env
    }

    /// The same server started again (after the first was killed).
    pub async fn restart(&self) -> Served {
        serve(self.cwd.path(), &Self::env(&self.db, &self.extra)).await
    }
}

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
    let (fresh, mut server) = Fresh::new(backend).await;
    let (client, key) = (fresh.client.clone(), fresh.key.clone());

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

    let server = fresh.restart().await;
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

/// Workers completing jobs at once, one request per job.
const BURST_WORKERS: usize = 16;

async fn a_server_killed_in_a_burst_of_completions_keeps_every_acknowledged_one(backend: Backend) {
    let (fresh, mut server) = Fresh::new(backend).await;
    let (client, key) = (fresh.client.clone(), fresh.key.clone());
    let jobs: Vec<Value> = (0..1600)
        .map(|i| json!({"queue": "burst", "args": {"i": i}}))
        .collect();
    for chunk in jobs.chunks(800) {
        let res = client
            .post(server.url("/api/v1/jobs/batch"))
            .bearer_auth(&key)
            .json(&json!({"jobs": chunk}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    // Everything claimed, with leases far longer than the test.
    let mut claimed = Vec::new();
    while claimed.len() < 1600 {
        let claim = json!({"worker": "burst", "max": 1000, "lease_ms": 3_600_000});
        let url = server.url("/api/v1/queues/burst/claim");
        let res: Value = post_json_to(&client, &url, &key, &claim).await;
        claimed.extend(res["jobs"].as_array().unwrap().iter().cloned());
    }

    // 16 workers complete one job per request; the server dies under them.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (progress, mut seen) = tokio::sync::watch::channel(0_usize);
    let mut workers = tokio::task::JoinSet::new();
    for share in claimed.chunks(claimed.len() / BURST_WORKERS) {
        let (client, key, base) = (client.clone(), key.clone(), server.url(""));
        let (share, acked, progress) = (share.to_vec(), acked.clone(), progress.clone());
        workers.spawn(async move {
            for job in share {
                let url = format!("{base}/api/v1/jobs/{}/complete", job["id"]);
                let body = json!({"lease_token": job["lease_token"]});
                let Ok(res) = client.post(url).bearer_auth(&key).json(&body).send().await else {
                    return; // the server is gone
                };
                if res.status() != 200 {
                    return;
                }
                let mut acked = acked.lock().unwrap();
                acked.push(job["id"].as_i64().unwrap());
                progress.send_replace(acked.len());
            }
        });
    }
    seen.wait_for(|n| *n >= 400).await.unwrap();
    let metrics = client
        .get(server.url("/metrics"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    server.child.kill().await.unwrap(); // SIGKILL, completions in flight
    while workers.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() < 1600, "the server died before the burst ended");

    // The burst shared commits: fewer transactions than completions.
    let figure = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("queue=\"jobs.complete\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let (items, batches) = (
        figure("carafe_group_commit_items_sum"),
        figure("carafe_group_commit_items_count"),
    );
    assert!(
        items >= 400.0 && batches < items,
        "{batches} commits for {items} completions"
    );

    // Every acknowledged completion survived; the rest are still running, none lost.
    let server = fresh.restart().await;
    let mut completed = 0;
    for id in &claimed {
        let id = id["id"].as_i64().unwrap();
        let res = client
            .get(server.url(&format!("/api/v1/jobs/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let job: Value = res.json().await.unwrap();
        match job["state"].as_str().unwrap() {
            "completed" => completed += 1,
            "running" => assert!(!acked.contains(&id), "acknowledged job {id} was lost"),
            other => panic!("job {id} is {other}"),
        }
    }
    assert!(completed >= acked.len(), "{completed} < {}", acked.len());
}
