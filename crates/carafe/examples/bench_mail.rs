//! Mail benchmarks, run by `scripts/bench/mail` (release build). Each mode prints one JSON
//! line of figures; the script prints them beside the database's raw commit rate.
//!
//!   bench_mail smtp --db URL --clients C --messages N   C SMTP clients, one connection each,
//!                   sending N small messages in all, one command at a time (as smtplib,
//!                   Flask-Mail and Django do); every 250 means the mail is stored with its jobs
//!                   (`--accept-only`: with the delivery queue paused, the accept path alone)
//!   bench_mail campaign --db URL --messages N [--relay URL]   a campaign of N personalised
//!                   messages: without a relay, the time from `start` until every message is
//!                   rendered and stored with its job (its queue paused at once); with one, until
//!                   every message is sent through it; with memory at start and at its peak
//!   bench_mail campaign-rate --db URL --messages N --rate R --instances I --relay URL   a
//!                   campaign of N at R messages/s, sent by I servers on one database: the
//!                   achieved rate, whole and steady (10th to 90th percentile of messages);
//!                   with `--on relay`, R is the relay's rate (`mail.smtp_rate`) instead
//!   bench_mail sink --url smtp://user:pass@host:port --conns C --messages N   the relay's own
//!                   accept rate: C plain connections, one command at a time

use std::time::{Duration, Instant};

// The allocator `carafe serve` uses, so the figures are the shipped binary's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use base64::Engine as _;
use carafe::App;
use carafe::config::{Config, HumanDuration, Secret};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
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

/// A fresh PostgreSQL schema for this run, so every run starts empty.
async fn fresh_schema(db: &str) -> String {
    use sqlx::Executor;
    if db.is_empty() {
        return String::new();
    }
    let schema = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let pool = sqlx::PgPool::connect(db).await.expect("PostgreSQL");
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .unwrap();
    pool.close().await;
    let sep = if db.contains('?') { '&' } else { '?' };
    format!("{db}{sep}options=-c%20search_path%3D{schema}")
}

/// Reads one reply (all its lines); its code.
async fn reply(r: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.expect("a reply");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line[..3].parse().expect("a code");
        }
    }
}

async fn command(r: &mut BufReader<TcpStream>, text: &str) -> u16 {
    r.get_mut().write_all(text.as_bytes()).await.unwrap();
    reply(r).await
}

/// One client: connects, logs in, sends `n` messages; how many were accepted.
async fn client(addr: std::net::SocketAddr, key: String, id: usize, n: usize) -> usize {
    let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
    assert_eq!(reply(&mut r).await, 220);
    assert_eq!(command(&mut r, "EHLO bench.client\r\n").await, 250);
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0bench\0{key}"));
    assert_eq!(
        command(&mut r, &format!("AUTH PLAIN {plain}\r\n")).await,
        235
    );
    let mut ok = 0;
    for i in 0..n {
        assert_eq!(
            command(&mut r, "MAIL FROM:<app@example.com>\r\n").await,
            250
        );
        let to = format!("user{id}-{i}@example.com");
        assert_eq!(command(&mut r, &format!("RCPT TO:<{to}>\r\n")).await, 250);
        assert_eq!(command(&mut r, "DATA\r\n").await, 354);
        let body = format!(
            "From: App <app@example.com>\r\nTo: {to}\r\nSubject: Your code {i}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nYour sign-in code is {i:06}.\r\n.\r\n"
        );
        if command(&mut r, &body).await == 250 {
            ok += 1;
        }
    }
    command(&mut r, "QUIT\r\n").await;
    ok
}

async fn smtp(db: &str, clients: usize, messages: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        database_url: (!db.is_empty()).then(|| Secret::new(db.to_owned())),
        secret_key: Some(Secret::new("bench-secret-bench-secret-bench-secret".into())),
        database_max_connections: 16,
        log_level: "warn".into(),
        shutdown_timeout: HumanDuration(Duration::from_secs(5)),
        mail: carafe::mail::Settings {
            smtp_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        ..Config::default()
    };
    let app = App::build(config).await.expect("app");
    let key = std::fs::read_to_string(app.admin_key_file().expect("fresh database"))
        .unwrap()
        .trim()
        .to_owned();
    let addr = app.smtp_addr().expect("the SMTP listener");
    if std::env::args().any(|a| a == "--accept-only") {
        // Delivery paused: the accept path alone.
        let queue = carafe_core::jobs::QueueName::parse(carafe::mail::QUEUE).unwrap();
        app.state().jobs.set_paused(&queue, true).await.unwrap();
    }
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(app.run_until(async move { s.cancelled().await }));
    let per = messages / clients;
    let t = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| tokio::spawn(client(addr, key.clone(), c, per)))
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    stop.cancel();
    json!({"mode": "smtp", "clients": clients, "messages": per * clients, "accepted": accepted,
           "per_s": accepted as f64 / secs})
}

/// The raw reference: `conns` plain SMTP connections to the sink at `addr` (AUTH as
/// `user`/`pass`), one command at a time, sending `n` small messages in all; messages/s.
async fn sink_rate(addr: &str, user: &str, pass: &str, conns: usize, n: usize) -> f64 {
    let per = n / conns;
    let t = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let (addr, user, pass) = (addr.to_owned(), user.to_owned(), pass.to_owned());
            tokio::spawn(async move {
                let mut r = BufReader::new(TcpStream::connect(&addr).await.unwrap());
                assert_eq!(reply(&mut r).await, 220);
                assert_eq!(command(&mut r, "EHLO bench.client\r\n").await, 250);
                let plain =
                    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
                assert_eq!(
                    command(&mut r, &format!("AUTH PLAIN {plain}\r\n")).await,
                    235
                );
                for i in 0..per {
                    let to = format!("raw{c}-{i}@bench.example");
                    assert_eq!(
                        command(&mut r, "MAIL FROM:<shop@bench.example>\r\n").await,
                        250
                    );
                    assert_eq!(command(&mut r, &format!("RCPT TO:<{to}>\r\n")).await, 250);
                    assert_eq!(command(&mut r, "DATA\r\n").await, 354);
                    let body = format!(
                        "From: Shop <shop@bench.example>\r\nTo: {to}\r\nSubject: Spring, {i}\r\n\
                         Content-Type: text/plain; charset=utf-8\r\n\r\nHello {i}.\r\n.\r\n"
                    );
                    assert_eq!(command(&mut r, &body).await, 250);
                }
                command(&mut r, "QUIT\r\n").await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (per * conns) as f64 / t.elapsed().as_secs_f64()
}

/// This process's resident memory now and at its peak, in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// A campaign of `n` personalised messages (recipients inline, a template with a layout-free
/// subject and HTML). `relay`: sent through it (`smtp://…?tls=none`), timed from `start` until
/// every message is sent; none: the campaign's queue is paused at once and the time is until
/// every message is rendered and stored with its job (render + enqueue).
async fn campaign(db: &str, n: usize, relay: Option<String>) -> Value {
    campaign_on(db, n, relay, None, 1, false).await
}

/// An instance's configuration: the database `db`, data in `dir`, mail out through `relay`
/// at `relay_rate` messages/s (all instances together).
fn instance(
    db: &str,
    dir: &std::path::Path,
    relay: Option<&String>,
    relay_rate: Option<f64>,
) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        database_url: (!db.is_empty()).then(|| Secret::new(db.to_owned())),
        secret_key: Some(Secret::new("bench-secret-bench-secret-bench-secret".into())),
        database_max_connections: 16,
        log_level: "warn".into(),
        shutdown_timeout: HumanDuration(Duration::from_secs(5)),
        mail: carafe::mail::Settings {
            smtp_url: relay.cloned().map(Secret::new),
            smtp_rate: relay_rate,
            ..Default::default()
        },
        ..Config::default()
    }
}

/// `campaign`, with the campaign's `rate` (messages/s) and `instances` servers on the same
/// database (each with its own pool, job runners and relay connections; only the database is
/// shared). Besides the whole run's rate, the steady rate: from the 10th to the 90th
/// percentile of messages sent (without the start's burst and the last stragglers).
async fn campaign_on(
    db: &str,
    n: usize,
    relay: Option<String>,
    rate: Option<u32>,
    instances: usize,
    on_relay: bool,
) -> Value {
    let relay_rate = rate.filter(|_| on_relay).map(f64::from);
    let rate = rate.filter(|_| !on_relay);
    let dir = tempfile::tempdir().unwrap();
    let app = App::build(instance(db, dir.path(), relay.as_ref(), relay_rate))
        .await
        .expect("app");
    let mut others = Vec::new();
    for _ in 1..instances {
        let dir = tempfile::tempdir().unwrap();
        let other = App::build(instance(db, dir.path(), relay.as_ref(), relay_rate))
            .await
            .expect("another instance");
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(other.run_until(async move { s.cancelled().await }));
        others.push((dir, stop));
    }
    let state = app.state().clone();
    let app_key_file = app.admin_key_file().expect("fresh database").to_owned();
    let base = format!("http://{}", app.local_addr());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(app.run_until(async move { s.cancelled().await }));
    let mail = state.mail.clone();
    let key = std::fs::read_to_string(app_key_file)
        .unwrap()
        .trim()
        .to_owned();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = http
        .put(format!("{base}/api/v1/templates/spring"))
        .bearer_auth(&key)
        .json(&json!({
            "subject": "{{ name }}, spring is here",
            "html": "<p>Hello {{ name }},</p><p>Your offer: <b>{{ offer }}</b> until {{ until }}.</p>"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let recipients: Vec<Value> = (0..n)
        .map(|i| {
            json!({"email": format!("c{i}@bench.example"),
                        "data": {"name": format!("User {i}"), "offer": format!("{}% off", i % 50)}})
        })
        .collect();
    let res = http
        .post(format!("{base}/api/v1/campaigns"))
        .bearer_auth(&key)
        .json(
            &json!({"name": "bench", "from": "Shop <shop@bench.example>", "tags": ["bench"],
                      "template": {"name": "spring", "data": {"until": "Friday"}},
                      "recipients": recipients, "rate": rate}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let id: carafe_core::campaigns::CampaignId = created["id"].as_str().unwrap().parse().unwrap();
    let queue = carafe_core::jobs::QueueName::parse(&carafe::mail::campaign_queue(id)).unwrap();
    let (rss_before, _) = memory_mib();
    let t = Instant::now();
    let res = http
        .post(format!("{base}/api/v1/campaigns/{id}/start"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    if relay.is_none() {
        state.jobs.set_paused(&queue, true).await.unwrap();
    }
    let mut peak = rss_before;
    let (mut first, mut last) = (None, None);
    loop {
        let v = mail.campaign(id).await.unwrap();
        peak = peak.max(memory_mib().0);
        let sent = v.counts.status(carafe_core::mail::MessageStatus::Sent) as usize;
        if first.is_none() && sent * 10 >= n {
            first = Some((t.elapsed().as_secs_f64(), sent));
        }
        if last.is_none() && sent * 10 >= n * 9 {
            last = Some((t.elapsed().as_secs_f64(), sent));
        }
        let done = match relay {
            None => v.counts.messages() as usize >= n,
            Some(_) => {
                v.counts.status(carafe_core::mail::MessageStatus::Sent) as usize
                    + v.counts.status(carafe_core::mail::MessageStatus::Failed) as usize
                    >= n
            }
        };
        if done {
            break;
        }
        // Polled as a dashboard would, not recounted for every message sent.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let v = mail.campaign(id).await.unwrap();
    stop.cancel();
    for (_, stop) in &others {
        stop.cancel();
    }
    // On PostgreSQL, how many sends each instance claimed (the claim events name the worker).
    let by_instance: Vec<i64> = if db.is_empty() {
        Vec::new()
    } else {
        let pool = sqlx::PgPool::connect(db).await.expect("PostgreSQL");
        let sql = "SELECT count(*) FROM job_events e JOIN jobs j ON j.id = e.job_id \
                   WHERE j.queue = $1 AND e.kind = 'state' AND e.data->>'state' = 'running' \
                   GROUP BY e.data->>'worker' ORDER BY 1 DESC";
        let counts = sqlx::query_scalar(sql)
            .bind(queue.as_str())
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        counts
    };
    let steady = match (first, last) {
        (Some((t1, s1)), Some((t2, s2))) if t2 > t1 => (s2 - s1) as f64 / (t2 - t1),
        _ => 0.0,
    };
    json!({"mode": "campaign", "messages": n, "per_s": n as f64 / secs,
           "steady_per_s": steady, "rate": rate, "instances": instances,
           "claims_by_instance": by_instance,
           "sent": v.counts.status(carafe_core::mail::MessageStatus::Sent),
           "failed": v.counts.status(carafe_core::mail::MessageStatus::Failed),
           "rss_before_mib": rss_before, "rss_peak_mib": peak})
}

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let db = fresh_schema(&arg("--db").unwrap_or_default()).await;
    let out = match mode.as_str() {
        "smtp" => smtp(&db, num("--clients", 4), num("--messages", 10_000)).await,
        "campaign" => campaign(&db, num("--messages", 10_000), arg("--relay")).await,
        "campaign-rate" => {
            let rate = num("--rate", 100) as u32;
            let (n, instances) = (num("--messages", 3_000), num("--instances", 2));
            let on_relay = arg("--on").as_deref() == Some("relay");
            campaign_on(&db, n, arg("--relay"), Some(rate), instances, on_relay).await
        }
        "sink" => {
            let url = url::Url::parse(&arg("--url").expect("--url of the sink")).unwrap();
            let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(25));
            let n = num("--messages", 10_000);
            let rate = sink_rate(
                &addr,
                url.username(),
                url.password().unwrap_or(""),
                num("--conns", 4),
                n,
            )
            .await;
            json!({"mode": "sink", "messages": n, "per_s": rate})
        }
        other => panic!("unknown mode `{other}`"),
    };
    println!("{out}");
}
