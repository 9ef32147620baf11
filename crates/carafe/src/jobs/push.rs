//! Push delivery, for applications without a long-running worker (PHP, serverless): a job with
//! a `target` URL is POSTed there, signed, on the same lease protocol as pull workers.
//!
//! - 2xx completes the job (a JSON body is its result); 202 means "accepted, I will report":
//!   the app calls complete or fail with the lease token from the body before the lease ends
//!   (one lease from its answer; heartbeats extend it).
//! - 408, 429, 5xx, a timeout or a connection error retry with backoff (`Retry-After` wins).
//! - Any other answer discards the job: the app refused it.
//!
//! Requests carry `Carafe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! under `push.secret`, so the app can reject forgeries and replays. A cancelled job's
//! request in flight is aborted. Per-queue limits apply, as the claim enforces them. The
//! request may take up to the job's timeout; its lease (the queue's `lease_ms`, else
//! `jobs.lease`) is renewed while it is in flight, so a crashed instance's deliveries are
//! retried one lease later, not one timeout later.
//!
//! Only addresses the target policy allows (`targets.rs`) are ever connected to: IP literals
//! are judged before sending, names inside the client's resolver, on the addresses it is
//! about to use. A refused target discards the job with the same message whatever listens
//! there. Proxies are not used, so the check applies to the real destination.

use std::sync::Arc;
use std::time::Duration;

use carafe_core::jobs::{Claim, ClaimedJob, Completion, Failure, Fenced, Heartbeat, RetryRequest};
use carafe_core::time::now;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Jobs;
use super::targets::{NotAllowed, ResolveError, TargetPolicy};

/// Most jobs claimed per queue per round.
const BATCH: usize = 100;
/// How often an in-flight delivery checks whether its job was cancelled.
const CANCEL_CHECK: Duration = Duration::from_secs(2);

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[derive(Clone)]
pub struct Dispatcher {
    jobs: Arc<Jobs>,
    client: reqwest::Client,
    secret: Arc<Vec<u8>>,
    concurrency: usize,
    worker: String,
}

/// Resolves targets' names, refusing a name whole if any address is not allowed.
struct GuardedResolver(Arc<TargetPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            match policy.resolve(name.as_str()).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                // Boxed as itself, so `refused` finds it in the error's source chain.
                Err(ResolveError::NotAllowed(e)) => Err(e.into()),
                Err(ResolveError::Lookup(e)) => Err(e.into()),
            }
        })
    }
}

/// Whether a request failed because the target's name resolved to refused addresses.
fn refused(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<NotAllowed>() {
            return true;
        }
        source = e.source();
    }
    false
}

impl Dispatcher {
    pub fn new(jobs: Arc<Jobs>, secret: &str, concurrency: usize, worker: String) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("carafe/", env!("CARGO_PKG_VERSION")))
            // A redirect would resend the signed job elsewhere; the target is final.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf, past the address check.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(jobs.targets().clone())))
            .build()
            .expect("an HTTP client");
        Dispatcher {
            jobs,
            client,
            secret: Arc::new(secret.as_bytes().to_vec()),
            concurrency,
            worker,
        }
    }

    /// Delivers due push jobs until `stop`, then lets deliveries in flight finish for up to
    /// `drain` (after that they are dropped; their leases expire and they are retried).
    pub async fn run(self, stop: CancellationToken, drain: Duration) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut running = JoinSet::new();
        let mut wakeups = self.jobs.bus().subscribe();
        let poll = self.jobs.settings().poll_interval.0;
        while !stop.is_cancelled() {
            while running.try_join_next().is_some() {}
            if permits.available_permits() == 0 {
                tokio::select! {
                    _ = running.join_next() => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
            let started = self.claim_round(&permits, &mut running, &stop).await;
            if started == 0 {
                tokio::select! {
                    _ = wakeups.wait_until(|t| t.starts_with("queue:"), poll) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
        let drained = tokio::time::timeout(drain, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("dropping push deliveries still in flight at shutdown");
            running.shutdown().await;
        }
    }

    /// Claims due push jobs from every queue that has some, as capacity allows, and starts
    /// delivering them. Returns how many started.
    async fn claim_round(
        &self,
        permits: &Arc<Semaphore>,
        running: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) -> usize {
        let queues = match self.jobs.store().push_queues(now()).await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list queues with push jobs");
                return 0;
            }
        };
        let mut started = 0;
        for queue in queues {
            let free = permits.available_permits().min(BATCH);
            if free == 0 {
                break;
            }
            let claimed = match self
                .jobs
                .claim(
                    Claim {
                        queue: &queue,
                        worker: &self.worker,
                        max: free as u32,
                        lease: self.jobs.lease(None),
                        now: now(),
                        push: true,
                    },
                    Duration::ZERO,
                    stop,
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, %queue, "claiming push jobs failed");
                    continue;
                }
            };
            for job in claimed {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore open");
                let this = self.clone();
                running.spawn(async move {
                    this.deliver(job).await;
                    drop(permit);
                });
                started += 1;
            }
        }
        started
    }

    async fn deliver(&self, job: ClaimedJob) {
        let Some(target) = job.target.clone() else {
            return;
        };
        let body = serde_json::to_vec(&json!({
            "id": job.id.0,
            "queue": job.queue.as_str(),
            "args": job.args,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
            "lease_token": job.lease_token,
            "lease_expires_at": job.lease_expires_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "checkpoint": job.checkpoint,
            "owner": job.owner,
        }))
        .expect("serializes");
        let outcome = match reqwest::Url::parse(&target) {
            // Names are checked by the resolver, on the addresses about to be used.
            Ok(url) if self.jobs.targets().check_literal(&url).is_ok() => {
                self.send(&job, url, body).await
            }
            // A refused IP literal (or a URL that never passed enqueue): nothing is sent.
            _ => Outcome::Fail(NotAllowed.to_string(), RetryRequest::Never),
        };
        match outcome {
            Outcome::Complete(result) => {
                let done = Completion {
                    id: job.id,
                    lease_token: job.lease_token.clone(),
                    result,
                    outside: false,
                };
                if let Err(e) = self.jobs.complete(vec![done]).await {
                    tracing::warn!(error = %e, job = job.id.0, "could not complete a delivered job; it will be retried");
                }
            }
            Outcome::Accepted => {
                // The app reports itself: it has one whole lease from now (and heartbeats).
                let hb = Heartbeat {
                    id: job.id,
                    lease_token: job.lease_token.clone(),
                    now: now(),
                    renew: Some(self.jobs.lease(None)),
                    progress: None,
                    checkpoint: None,
                };
                if let Err(e) = self.jobs.heartbeat(hb).await {
                    tracing::debug!(error = %e, job = job.id.0, "could not renew an accepted delivery's lease");
                }
            }
            Outcome::Fail(message, retry) => {
                let failure = Failure {
                    id: job.id,
                    lease_token: job.lease_token.clone(),
                    message,
                    retry,
                    now: now(),
                };
                if let Err(e) = self.jobs.fail(failure, Some(&job.queue)).await {
                    tracing::warn!(error = %e, job = job.id.0, "could not record a failed delivery; it will be retried");
                }
            }
        }
    }

    /// POSTs the signed job to `url`, aborting if the job is cancelled meanwhile.
    async fn send(&self, job: &ClaimedJob, url: reqwest::Url, body: Vec<u8>) -> Outcome {
        let signed = signature(&self.secret, now().unix_timestamp(), &body);
        let request = self
            .client
            .post(url)
            .timeout(job.timeout)
            .header("content-type", "application/json")
            .header("carafe-job-id", job.id.0.to_string())
            .header("carafe-queue", job.queue.as_str())
            .header("carafe-attempt", job.attempt.to_string())
            .header("carafe-lease-token", job.lease_token.as_str())
            .header("carafe-signature", signed)
            .body(body)
            .send();
        let cancelled = CancellationToken::new();
        let watcher = tokio::spawn(watch_cancel(
            self.jobs.clone(),
            job.clone(),
            cancelled.clone(),
        ));
        let outcome = tokio::select! {
            answer = request => classify(answer, job.timeout, self.jobs.settings().max_args_bytes).await,
            () = cancelled.cancelled() => Outcome::Fail("delivery aborted: the job was cancelled or lost its lease".into(), RetryRequest::Default),
        };
        watcher.abort();
        outcome
    }
}

enum Outcome {
    Complete(Value),
    /// 202: the app reports the result itself.
    Accepted,
    Fail(String, RetryRequest),
}

async fn classify(
    answer: reqwest::Result<reqwest::Response>,
    timeout: Duration,
    max_body: usize,
) -> Outcome {
    let response = match answer {
        Ok(r) => r,
        Err(e) if refused(&e) => return Outcome::Fail(NotAllowed.to_string(), RetryRequest::Never),
        Err(e) if e.is_timeout() => {
            return Outcome::Fail(
                format!(
                    "the target did not answer within {}",
                    humantime::format_duration(timeout)
                ),
                RetryRequest::Default,
            );
        }
        Err(e) if e.is_connect() => {
            return Outcome::Fail(
                "could not connect to the target".into(),
                RetryRequest::Default,
            );
        }
        Err(_) => {
            return Outcome::Fail(
                "the request to the target failed".into(),
                RetryRequest::Default,
            );
        }
    };
    let status = response.status();
    if status == reqwest::StatusCode::ACCEPTED {
        return Outcome::Accepted;
    }
    if status.is_success() {
        return Outcome::Complete(read_result(response, max_body).await);
    }
    let message = format!("the target answered {status}");
    if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
        let retry =
            retry_after(response.headers()).map_or(RetryRequest::Default, RetryRequest::After);
        Outcome::Fail(message, retry)
    } else {
        Outcome::Fail(message, RetryRequest::Never)
    }
}

/// The body as the job's result: JSON as is, other text as a string, nothing as null.
/// A body over `max` bytes is not kept (the job still completes).
async fn read_result(mut response: reqwest::Response, max: usize) -> Value {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= max => body.extend_from_slice(&chunk),
            Ok(Some(_)) => {
                tracing::warn!(
                    "a push target's answer was larger than jobs.max_args_bytes; not kept"
                );
                return Value::Null;
            }
            Ok(None) => break,
            Err(_) => return Value::Null,
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Cancels `cancelled` when the job is asked to stop or its lease is lost.
async fn watch_cancel(jobs: Arc<Jobs>, job: ClaimedJob, cancelled: CancellationToken) {
    // Each check also renews the lease, so it runs at least three times per lease.
    let every = CANCEL_CHECK
        .min(job.lease / 3)
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let hb = Heartbeat {
            id: job.id,
            lease_token: job.lease_token.clone(),
            now: now(),
            renew: Some(jobs.lease(None)),
            progress: None,
            checkpoint: None,
        };
        match jobs.heartbeat(hb).await {
            Ok(Fenced::Done(ack)) if !ack.cancel_requested => {}
            Ok(_) => {
                cancelled.cancel();
                return;
            }
            Err(e) => tracing::debug!(error = %e, "cannot check a delivery's job"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_time_and_body() {
        let a = signature(b"secret", 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1=") && a.len() == "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature(b"secret", 1_700_000_001, b"{}"));
        assert_ne!(a, signature(b"secret", 1_700_000_000, b"{ }"));
        assert_ne!(a, signature(b"other", 1_700_000_000, b"{}"));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        h.insert(reqwest::header::RETRY_AFTER, soon.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(25),
            "{d:?}"
        );
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
