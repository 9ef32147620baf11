//! The reference servers of `scripts/bench/files`' many-uploads section, run in the same bench
//! as Carafe and sent the same multipart bodies by the same clients (release build):
//!
//!   bench_sink bare    --listen ADDR             reads each request body and throws it away
//!   bench_sink durable --listen ADDR --dir DIR   hashes each body with SHA-256 as it streams,
//!                                                writes it to a new file in DIR and fsyncs
//!                                                the file before answering
//!
//! `durable` is the least any server must do to accept an upload for good — the hash, the copy
//! and the durable write — with nothing else: no parsing, no database, no checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Bytes gathered before each write to the file (as Carafe's local store writes).
const WRITE_BUFFER: usize = 512 * 1024;

#[derive(Clone)]
struct Sink {
    dir: Option<Arc<PathBuf>>,
    next: Arc<AtomicU64>,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

async fn bare(body: Body) -> StatusCode {
    let mut body = body;
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return StatusCode::BAD_REQUEST;
        }
    }
    StatusCode::CREATED
}

async fn durable(State(sink): State<Sink>, body: Body) -> Result<String, StatusCode> {
    let dir = sink.dir.as_ref().expect("durable has a dir");
    let n = sink.next.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("upload-{n}"));
    let file = tokio::fs::File::create_new(&path)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut hash = Sha256::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| StatusCode::BAD_REQUEST)?;
        if let Ok(data) = frame.into_data() {
            hash.update(&data);
            out.write_all(&data)
                .await
                .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        }
    }
    out.flush()
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    out.into_inner()
        .sync_all()
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(hex::encode(hash.finalize()))
}

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let listen = arg("--listen").expect("--listen ADDR");
    let sink = Sink {
        dir: arg("--dir").map(|d| Arc::new(PathBuf::from(d))),
        next: Arc::new(AtomicU64::new(0)),
    };
    let app = match mode.as_str() {
        "bare" => Router::new().fallback(post(bare)),
        "durable" => Router::new().fallback(post(durable)),
        other => panic!("unknown mode `{other}`"),
    }
    .with_state(sink);
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
