//! Job engine benchmarks, run by `scripts/bench/jobs` (release build). Each mode prints one
//! JSON line of figures; the script prints them beside the database's raw commit rate.
//!
//!   bench_jobs commit-rate  --db URL                  raw single-row commits/s
//!   bench_jobs inproc       --db URL --jobs N          enqueue (batches) → in-process no-op → done
//!   bench_jobs pull         --db URL --jobs N --workers W [--loops L] [--per-job]
//!                           … with W worker processes over HTTP, each running L claim loops;
//!                           each loop claims up to 100 (wait_ms 1000) and completes them in
//!                           one batch request, or with --per-job one request per job
//!   bench_jobs post         --db URL --conns C --seconds S   single POST /api/v1/jobs (wrk)
//!   bench_jobs latency      --db URL --samples N       enqueue → waiting claim returns
//!   bench_jobs depth        --db URL --queued N        claim+complete rate with N jobs queued
//!   bench_jobs pull-worker  --url URL --key KEY [--loops L] [--per-job]   (internal)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use carafe::config::{Config, HumanDuration, Secret};
use carafe::jobs::runner::{Handlers, JobContext, JobError, JobHandler};
use carafe::{App, jobs};
use carafe_core::jobs::{Claim, Completion, JobState, NewJob, QueueName};
use carafe_core::time::now;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(name: &str, default: usize) -> usize {
    arg(name).map_or(default, |v| v.parse().expect("a number"))
}

fn config(db: &str, dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        database_url: (!db.is_empty()).then(|| Secret::new(db.to_owned())),
        secret_key: Some(Secret::new("bench-secret-bench-secret-bench-secret".into())),
        database_max_connections: 16,
        log_level: "warn".into(),
        shutdown_timeout: HumanDuration(Duration::from_secs(5)),
        ..Config::default()
    }
}

fn new_job(queue: &QueueName, i: usize) -> NewJob {
    let at = now();
    NewJob {
        queue: queue.clone(),
        args: json!({"i": i}),
        priority: 5,
        max_attempts: 25,
        backoff: None,
        timeout: Duration::from_secs(60),
        scheduled_at: at,
        unique: None,
        owner: None,
        target: None,
        created_at: at,
    }
}

struct Noop(Arc<AtomicUsize>);

#[async_trait]
impl JobHandler for Noop {
    async fn run(&self, _ctx: JobContext) -> Result<Value, JobError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Value::Null)
    }
}

/// A fresh PostgreSQL schema for this run, so every run starts empty.
async fn fresh_schema(db: &str) -> String {
    use sqlx::Executor;
    if db.is_empty() {
        return String::new();
    }
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let pool = sqlx::PgPool::connect(db)
        .await
        .expect("connect to PostgreSQL");
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .unwrap();
    pool.close().await;
    let sep = if db.contains('?') { '&' } else { '?' };
    format!("{db}{sep}options=-c%20search_path%3D{schema}")
}

async fn start(
    db: &str,
    dir: &std::path::Path,
    handlers: Handlers,
) -> (
    carafe::api::state::AppState,
    String,
    String,
    CancellationToken,
) {
    let db = fresh_schema(db).await;
    let app = App::build_with(config(&db, dir), handlers)
        .await
        .expect("app");
    let key = std::fs::read_to_string(app.admin_key_file().expect("fresh database"))
        .unwrap()
        .trim()
        .to_owned();
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(app.run_until(async move { s.cancelled().await }));
    (state, base, key, stop)
}

async fn enqueue_all(jobs: &jobs::Jobs, queue: &QueueName, n: usize) {
    for start in (0..n).step_by(1000) {
        let batch = (start..(start + 1000).min(n))
            .map(|i| new_job(queue, i))
            .collect();
        jobs.enqueue(batch).await.expect("enqueue");
    }
}

async fn wait_done(done: &AtomicUsize, n: usize, jobs: &jobs::Jobs, queue: &str) {
    while done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Handlers finished; wait for their batched completions to commit.
    wait_completed(jobs, queue, n).await;
}

/// Waits until `n` jobs of `queue` are completed in the database (seen within 50 ms).
async fn wait_completed(jobs: &jobs::Jobs, queue: &str, n: usize) {
    loop {
        let stats = jobs.store().queue_stats(now()).await.unwrap();
        let completed = stats
            .iter()
            .find(|s| s.queue == queue)
            .and_then(|s| s.counts.iter().find(|(st, _)| *st == JobState::Completed))
            .map_or(0, |(_, n)| *n);
        if completed as usize >= n {
            return;
        }
        // Counting scans the table: looking too often would take CPU from the server.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn inproc(db: &str, n: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let handlers = Handlers::new().add("bench", 1000, Noop(done.clone()));
    let (state, _, _, stop) = start(db, dir.path(), handlers).await;
    let queue = QueueName::parse("bench").unwrap();
    let t = Instant::now();
    enqueue_all(&state.jobs, &queue, n).await;
    let enqueued = t.elapsed();
    wait_done(&done, n, &state.jobs, "bench").await;
    let total = t.elapsed();
    stop.cancel();
    json!({"mode": "inproc", "jobs": n, "seconds": total.as_secs_f64(),
           "jobs_per_s": n as f64 / total.as_secs_f64(),
           "enqueue_per_s": n as f64 / enqueued.as_secs_f64()})
}

/// How pull workers complete what they claimed.
#[derive(Clone, Copy)]
enum Completing {
    /// One `POST /jobs/complete` for the whole claim.
    Batch,
    /// One `POST /jobs/{id}/complete` per job, as Celery, RQ and Sidekiq workers do.
    PerJob,
}

async fn pull(db: &str, n: usize, workers: usize, loops: usize, how: Completing) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (state, base, key, stop) = start(db, dir.path(), Handlers::new()).await;
    let queue = QueueName::parse("pull").unwrap();
    let exe = std::env::current_exe().unwrap();
    let t = Instant::now();
    let mut children = Vec::new();
    let loops_arg = loops.to_string();
    // Each worker prints how many jobs it has completed (acknowledged) after every claim.
    let (tally, mut counts) = tokio::sync::mpsc::unbounded_channel::<usize>();
    for _ in 0..workers {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args([
            "pull-worker",
            "--url",
            &base,
            "--key",
            &key,
            "--loops",
            &loops_arg,
        ])
        .stdout(std::process::Stdio::piped());
        if matches!(how, Completing::PerJob) {
            cmd.arg("--per-job");
        }
        let mut child = cmd.spawn().expect("worker process");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let tally = tally.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tally.send(line.parse().expect("a count"));
            }
        });
        children.push(child);
    }
    enqueue_all(&state.jobs, &queue, n).await;
    let mut done = 0;
    while done < n {
        done += counts.recv().await.expect("workers run");
    }
    let total = t.elapsed();
    for mut c in children {
        let _ = c.kill().await;
    }
    stop.cancel();
    json!({"mode": "pull", "workers": workers, "loops": loops, "jobs": n,
           "seconds": total.as_secs_f64(), "jobs_per_s": n as f64 / total.as_secs_f64()})
}

/// One pull worker process: `loops` loops, each claiming up to 100 (long-poll, 1 s) and
/// completing them as `how` says.
async fn pull_worker(url: &str, key: &str, loops: usize, how: Completing) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for l in 0..loops {
        let (client, url, key) = (client.clone(), url.to_owned(), key.to_owned());
        tasks.spawn(async move { claim_loop(&client, &url, &key, l, how).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn claim_loop(client: &reqwest::Client, url: &str, key: &str, l: usize, how: Completing) {
    let worker = format!("bench-{}-{l}", std::process::id());
    loop {
        let res: Value = client
            .post(format!("{url}/api/v1/queues/pull/claim"))
            .bearer_auth(key)
            .json(&json!({"worker": worker, "max": 100, "wait_ms": 1000}))
            .send()
            .await
            .expect("claim")
            .json()
            .await
            .expect("claim body");
        let jobs = res["jobs"].as_array().cloned().unwrap_or_default();
        if jobs.is_empty() {
            continue;
        }
        match how {
            Completing::Batch => {
                let items: Vec<_> = jobs
                    .iter()
                    .map(|j| json!({"id": j["id"], "lease_token": j["lease_token"]}))
                    .collect();
                let res = client
                    .post(format!("{url}/api/v1/jobs/complete"))
                    .bearer_auth(key)
                    .json(&json!({"items": items}))
                    .send()
                    .await
                    .expect("complete");
                assert!(res.status().is_success(), "{}", res.status());
            }
            Completing::PerJob => {
                for j in &jobs {
                    let res = client
                        .post(format!("{url}/api/v1/jobs/{}/complete", j["id"]))
                        .bearer_auth(key)
                        .json(&json!({"lease_token": j["lease_token"]}))
                        .send()
                        .await
                        .expect("complete");
                    assert!(res.status().is_success(), "{}", res.status());
                    res.bytes().await.expect("complete body");
                }
            }
        }
        println!("{}", jobs.len());
    }
}

/// wrk's script for `post`: one small job per request, and a JSON summary at the end.
const POST_LUA: &str = r#"
wrk.method = "POST"
wrk.body = '{"queue":"posted","args":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('JSON {"requests":%d,"non2xx":%d,"errors":%d,"p50_ms":%.3f,"p99_ms":%.3f}\n',
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"#;

/// Single `POST /api/v1/jobs` requests from wrk (`conns` connections, 2 threads) for `secs`.
async fn post(db: &str, conns: usize, secs: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (state, base, key, stop) = start(db, dir.path(), Handlers::new()).await;
    let script = dir.path().join("post.lua");
    std::fs::write(&script, POST_LUA.replace("KEY", &key)).unwrap();
    let out = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{conns}"), &format!("-d{secs}s"), "-s"])
        .arg(&script)
        .arg(format!("{base}/api/v1/jobs"))
        .output()
        .await
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("JSON "))
        .unwrap_or_else(|| panic!("wrk printed no summary: {text}"));
    let figures: Value = serde_json::from_str(line).expect("wrk summary");
    let stats = state.jobs.queue_stats(now()).await.unwrap();
    let stored: u64 = stats
        .iter()
        .filter(|s| s.queue == "posted")
        .flat_map(|s| s.counts.iter().map(|(_, n)| *n))
        .sum();
    stop.cancel();
    let requests = figures["requests"].as_f64().unwrap();
    json!({"mode": "post", "conns": conns, "seconds": secs, "requests": requests,
           "stored": stored, "non2xx": figures["non2xx"], "errors": figures["errors"],
           "per_s": requests / secs as f64, "p50_ms": figures["p50_ms"], "p99_ms": figures["p99_ms"]})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(db: &str, samples: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (_state, base, key, stop) = start(db, dir.path(), Handlers::new()).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut took = Vec::with_capacity(samples);
    for i in 0..samples {
        let (c, b, k) = (client.clone(), base.clone(), key.clone());
        let waiter = tokio::spawn(async move {
            let res: Value = c
                .post(format!("{b}/api/v1/queues/lat/claim"))
                .bearer_auth(&k)
                .json(&json!({"worker": "lat", "wait_ms": 10_000}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (Instant::now(), res)
        });
        // Let the claim reach its wait (it answers empty at once otherwise nothing to time).
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        let res = client
            .post(format!("{base}/api/v1/jobs"))
            .bearer_auth(&key)
            .json(&json!({"queue": "lat", "args": {"i": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let (claimed_at, body) = waiter.await.unwrap();
        let job = &body["jobs"][0];
        assert!(job.is_object(), "the waiting claim got the job");
        took.push(claimed_at.duration_since(sent).as_secs_f64() * 1000.0);
        client
            .post(format!("{base}/api/v1/jobs/{}/complete", job["id"]))
            .bearer_auth(&key)
            .json(&json!({"lease_token": job["lease_token"]}))
            .send()
            .await
            .unwrap();
    }
    stop.cancel();
    took.sort_by(|a, b| a.total_cmp(b));
    json!({"mode": "latency", "samples": samples, "p50_ms": percentile(&took, 0.5),
           "p99_ms": percentile(&took, 0.99), "max_ms": took.last()})
}

/// Claims and completes `sample` jobs from the head of a queue holding `queued` jobs.
async fn depth(db: &str, queued: usize, sample: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (state, _, _, stop) = start(db, dir.path(), Handlers::new()).await;
    let queue = QueueName::parse("deep").unwrap();
    enqueue_all(&state.jobs, &queue, queued).await;
    let store = state.jobs.store().clone();
    let t = Instant::now();
    let mut done = 0;
    while done < sample {
        let claimed = store
            .claim_jobs(Claim {
                queue: &queue,
                worker: "depth",
                max: 100,
                lease: state.jobs.lease(None),
                now: now(),
                push: false,
            })
            .await
            .unwrap();
        let items: Vec<_> = claimed
            .into_iter()
            .map(|c| Completion {
                id: c.id,
                lease_token: c.lease_token,
                result: Value::Null,
                outside: false,
            })
            .collect();
        done += items.len();
        store.complete_jobs(&items, now()).await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    stop.cancel();
    json!({"mode": "depth", "queued": queued, "sample": sample, "jobs_per_s": sample as f64 / secs})
}

/// Single-row INSERT commits per second: the database's own limit on this disk.
async fn commit_rate(db: &str) -> Value {
    use sqlx::Executor;
    let dir = tempfile::tempdir().unwrap();
    let secs = 3.0;
    let n = if db.is_empty() {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("raw.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        pool.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .await
            .unwrap();
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed().as_secs_f64() < secs {
            sqlx::query("INSERT INTO t (v) VALUES ('x')")
                .execute(&pool)
                .await
                .unwrap();
            n += 1;
        }
        n
    } else {
        let pool = sqlx::PgPool::connect(db).await.unwrap();
        pool.execute("CREATE TEMP TABLE IF NOT EXISTS t (id bigserial PRIMARY KEY, v text)")
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, v text)")
            .await
            .unwrap();
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed().as_secs_f64() < secs {
            sqlx::query("INSERT INTO bench_commit (v) VALUES ('x')")
                .execute(&mut *conn)
                .await
                .unwrap();
            n += 1;
        }
        conn.execute("DROP TABLE bench_commit").await.unwrap();
        n
    };
    json!({"mode": "commit-rate", "commits_per_s": n as f64 / secs})
}

fn completing() -> Completing {
    if std::env::args().any(|a| a == "--per-job") {
        Completing::PerJob
    } else {
        Completing::Batch
    }
}

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let db = arg("--db").unwrap_or_default();
    let out = match mode.as_str() {
        "commit-rate" => commit_rate(&db).await,
        "inproc" => inproc(&db, num("--jobs", 100_000)).await,
        "pull" => {
            let how = completing();
            let (jobs, workers, loops) = (
                num("--jobs", 20_000),
                num("--workers", 4),
                num("--loops", 1),
            );
            pull(&db, jobs, workers, loops, how).await
        }
        "post" => post(&db, num("--conns", 64), num("--seconds", 5)).await,
        "latency" => latency(&db, num("--samples", 500)).await,
        "depth" => depth(&db, num("--queued", 1000), num("--sample", 5000)).await,
        "pull-worker" => {
            let (url, key) = (arg("--url").unwrap(), arg("--key").unwrap());
            pull_worker(&url, &key, num("--loops", 1), completing()).await;
            return;
        }
        other => panic!("unknown mode `{other}`"),
    };
    println!("{out}");
}
