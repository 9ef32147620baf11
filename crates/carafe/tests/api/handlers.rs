//! In-process job handlers: results, retry and abort, progress and checkpoints, timeouts and
//! cancellation of a running handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use carafe::jobs::runner::{Handlers, JobContext, JobError, JobHandler};
use carafe_core::jobs::Progress;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

both_backends!(
    handlers_complete_retry_abort_and_report,
    handlers_are_stopped_by_timeout_and_cancel
);

/// Behaves as `args.mode` says.
struct Scripted {
    calls: Arc<AtomicU32>,
}

#[async_trait]
impl JobHandler for Scripted {
    async fn run(&self, ctx: JobContext) -> Result<Value, JobError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match ctx.args()["mode"].as_str().unwrap_or("") {
            "echo" => Ok(ctx.args().clone()),
            "flaky" if ctx.attempt() == 1 => {
                ctx.checkpoint(json!({"step": 1})).await?;
                Err(JobError::Retry {
                    message: "first try fails".into(),
                    after: Some(Duration::ZERO),
                })
            }
            "flaky" => Ok(json!({"resumed_from": ctx.saved_checkpoint().cloned()})),
            "progress" => {
                for i in 1..=3 {
                    ctx.progress(Progress {
                        current: i,
                        total: Some(3),
                        stage: None,
                        message: None,
                    })
                    .await?;
                }
                Ok(json!("done"))
            }
            "abort" => Err(JobError::abort("the input can never work")),
            "stubborn" => {
                // Ignores its cancellation token: only the hard stop ends it.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(json!(null))
            }
            "polite" => {
                ctx.cancellation().cancelled().await;
                Err(JobError::retry("stopped on request"))
            }
            other => Err(JobError::abort(format!("unknown mode {other}"))),
        }
    }
}

async fn handlers_complete_retry_abort_and_report(backend: Backend) {
    let calls = Arc::new(AtomicU32::new(0));
    let handlers = Handlers::new().add(
        "inproc",
        4,
        Scripted {
            calls: calls.clone(),
        },
    );
    let app = TestApp::spawn_full(backend, handlers, |_| {}).await;

    let echo = app
        .new_job(json!({"queue": "inproc", "args": {"mode": "echo", "x": 1}}))
        .await;
    let job = app.wait_for_state(echo, "completed").await;
    assert_eq!(job["result"], json!({"mode": "echo", "x": 1}));

    let flaky = app
        .new_job(json!({"queue": "inproc", "args": {"mode": "flaky"}}))
        .await;
    let job = app.wait_for_state(flaky, "completed").await;
    assert_eq!(job["attempt"], 2);
    assert_eq!(
        job["result"],
        json!({"resumed_from": {"step": 1}}),
        "the checkpoint survives the failed attempt"
    );
    assert_eq!(job["errors"][0]["message"], "first try fails");

    let abort = app
        .new_job(json!({"queue": "inproc", "args": {"mode": "abort"}}))
        .await;
    let job = app.wait_for_state(abort, "discarded").await;
    assert_eq!(
        (
            job["attempt"].as_i64(),
            job["errors"][0]["message"].as_str()
        ),
        (Some(1), Some("the input can never work"))
    );

    let progress = app
        .new_job(json!({"queue": "inproc", "args": {"mode": "progress"}}))
        .await;
    let job = app.wait_for_state(progress, "completed").await;
    assert_eq!(job["progress"], json!({"current": 3, "total": 3}));
    assert!(calls.load(Ordering::SeqCst) >= 5);
}

async fn handlers_are_stopped_by_timeout_and_cancel(backend: Backend) {
    let calls = Arc::new(AtomicU32::new(0));
    let handlers = Handlers::new().add(
        "slow",
        2,
        Scripted {
            calls: calls.clone(),
        },
    );
    let app = TestApp::spawn_full(backend, handlers, |_| {}).await;

    let polite = app
        .new_job(json!({"queue": "slow", "args": {"mode": "polite"}}))
        .await;
    app.wait_for_state(polite, "running").await;
    app.cancel_job(&app.admin_key, polite).await;
    let job = app.wait_for_state(polite, "cancelled").await;
    assert_eq!(job["errors"][0]["message"], "stopped on request");

    // A 1 s timeout: the soft stop is ignored, so the hard stop ends the attempt.
    let stubborn = app
        .new_job(json!({"queue": "slow", "args": {"mode": "stubborn"}, "timeout_ms": 1000, "max_attempts": 1}))
        .await;
    let job = app.wait_for_state(stubborn, "discarded").await;
    assert!(
        job["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{job}"
    );
}
