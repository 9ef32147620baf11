//! Mail benchmarks, run by `scripts/bench/mail` (release build). Each mode prints one JSON
//! line of figures; the script prints them beside the database's raw commit rate.
//!
//!   bench_mail smtp --db URL --clients C --messages N   C SMTP clients, one connection each,
//!                   sending N small messages in all, one command at a time (as smtplib,
//!                   Flask-Mail and Django do); every 250 means the mail is stored with its jobs
//!                   (`--accept-only`: with the delivery queue paused, the accept path alone)

use std::time::{Duration, Instant};

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

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let db = fresh_schema(&arg("--db").unwrap_or_default()).await;
    let out = match mode.as_str() {
        "smtp" => smtp(&db, num("--clients", 4), num("--messages", 10_000)).await,
        other => panic!("unknown mode `{other}`"),
    };
    println!("{out}");
}
