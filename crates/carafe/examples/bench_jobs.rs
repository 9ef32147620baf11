//! Job engine benchmarks, run by `scripts/bench/jobs` (release build). Each mode prints one
//! JSON line of figures; the script prints them beside the database's raw commit rate.
//!
//!   bench_jobs commit-rate  --db URL                  raw single-row commits/s
//!   bench_jobs inproc       --db URL --jobs N          enqueue (batches) → in-process no-op → done
//!   bench_jobs pull         --db URL --jobs N --workers W   … with W worker processes over HTTP
//!   bench_jobs latency      --db URL --samples N       enqueue → waiting claim returns
//!   bench_jobs depth        --db URL --queued N        claim+complete rate with N jobs queued
//!   bench_jobs pull-worker  --url URL --key KEY        (internal: one pull worker process)

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

/// Waits until `n` jobs of `queue` are completed in the database.
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
        tokio::time::sleep(Duration::from_millis(2)).await;
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

async fn pull(db: &str, n: usize, workers: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (state, base, key, stop) = start(db, dir.path(), Handlers::new()).await;
    let queue = QueueName::parse("pull").unwrap();
    let exe = std::env::current_exe().unwrap();
    let t = Instant::now();
    let mut children = Vec::new();
    for _ in 0..workers {
        children.push(
            tokio::process::Command::new(&exe)
                .args(["pull-worker", "--url", &base, "--key", &key])
                .spawn()
                .expect("worker process"),
        );
    }
    enqueue_all(&state.jobs, &queue, n).await;
    wait_completed(&state.jobs, "pull", n).await;
    let total = t.elapsed();
    for mut c in children {
        let _ = c.kill().await;
    }
    stop.cancel();
    json!({"mode": "pull", "workers": workers, "jobs": n, "seconds": total.as_secs_f64(),
           "jobs_per_s": n as f64 / total.as_secs_f64()})
}

/// One pull worker: claim up to 100 (long-poll), complete them in one batch request.
async fn pull_worker(url: &str, key: &str) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    loop {
        let res: Value = client
            .post(format!("{url}/api/v1/queues/pull/claim"))
            .bearer_auth(key)
            .json(&json!({"worker": format!("bench-{}", std::process::id()), "max": 100, "wait_ms": 5000}))
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
        let items: Vec<_> = jobs
            .iter()
            .map(|j| json!({"id": j["id"], "lease_token": j["lease_token"]}))
            .collect();
        client
            .post(format!("{url}/api/v1/jobs/complete"))
            .bearer_auth(key)
            .json(&json!({"items": items}))
            .send()
            .await
            .expect("complete");
    }
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

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let db = arg("--db").unwrap_or_default();
    let out = match mode.as_str() {
        "commit-rate" => commit_rate(&db).await,
        "inproc" => inproc(&db, num("--jobs", 100_000)).await,
        "pull" => pull(&db, num("--jobs", 100_000), num("--workers", 4)).await,
        "latency" => latency(&db, num("--samples", 500)).await,
        "depth" => depth(&db, num("--queued", 1000), num("--sample", 5000)).await,
        "pull-worker" => {
            pull_worker(&arg("--url").unwrap(), &arg("--key").unwrap()).await;
            return;
        }
        other => panic!("unknown mode `{other}`"),
    };
    println!("{out}");
}
