//! Graceful shutdown: in-flight requests finish after the signal, and a request that never
//! finishes cannot hold the server past `shutdown_timeout`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, TestApp, eventually};

both_backends!(
    in_flight_requests_finish_after_the_signal,
    shutdown_is_bounded
);

const BODY: &str = r#"{"name": "slow", "scopes": ["files"]}"#;

/// Sends the request line, headers and the first half of the body, and returns the stream.
async fn start_slow_request(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/keys HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        app.admin_key,
        BODY.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&BODY.as_bytes()[..10]).await.unwrap();
    let observer = app.state.observer.clone();
    eventually(Duration::from_secs(10), || {
        let n = observer.in_flight();
        async move { n >= 1 }
    })
    .await;
    stream
}

async fn in_flight_requests_finish_after_the_signal(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let mut stream = start_slow_request(&app).await;
    app.begin_stop();
    // New connections are refused once the server stops accepting.
    let addr = app.base.trim_start_matches("http://").to_owned();
    eventually(Duration::from_secs(10), || {
        let addr = addr.clone();
        async move { TcpStream::connect(addr).await.is_err() }
    })
    .await;
    // The request that was already running completes normally.
    stream.write_all(&BODY.as_bytes()[10..]).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("\"secret\":\"ck_"), "{answer}");
    app.wait_stopped().await.unwrap();
}

async fn shutdown_is_bounded(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, |c| {
        c.shutdown_timeout = carafe::config::HumanDuration(Duration::from_millis(500));
    })
    .await;
    let _stuck = start_slow_request(&app).await;
    let started = Instant::now();
    app.begin_stop();
    app.wait_stopped().await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "stopped after {took:?}"
    );
}
