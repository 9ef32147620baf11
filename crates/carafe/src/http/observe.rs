//! Request metrics and the access log. Every request is counted by route template, method and
//! status, timed into a histogram, and logged once (API routes at `info`, probes at `debug`,
//! so health checks do not drown the log). Prometheus text is rendered on `/metrics`.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

const DURATION: &str = "carafe_http_request_duration_seconds";
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder (the `metrics` facade allows one per process).
static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

fn recorder() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DURATION.into()), &BUCKETS)
                .expect("buckets are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

#[derive(Clone)]
pub struct Observer {
    handle: PrometheusHandle,
    in_flight: Arc<AtomicI64>,
}

impl Default for Observer {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer {
    pub fn new() -> Self {
        Observer {
            handle: recorder(),
            in_flight: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Requests being handled by this server right now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub async fn render(&self, state: &AppState) -> String {
        let at = carafe_core::time::now();
        match state.store.queue_stats(at).await {
            Ok(stats) => {
                for q in stats {
                    for (job_state, n) in &q.counts {
                        metrics::gauge!("carafe_jobs", "queue" => q.queue.clone(), "state" => job_state.as_str())
                            .set(*n as f64);
                    }
                    let age = q
                        .oldest_available_at
                        .map_or(0.0, |t| (at - t).as_seconds_f64().max(0.0));
                    metrics::gauge!("carafe_jobs_oldest_available_age_seconds", "queue" => q.queue.clone())
                        .set(age);
                }
            }
            Err(e) => tracing::warn!(error = %e, "queue figures unavailable for /metrics"),
        }
        let pool = state.store.pool_stats();
        let backend = state.store.backend();
        metrics::gauge!("carafe_db_pool_connections", "backend" => backend, "state" => "open")
            .set(pool.size);
        metrics::gauge!("carafe_db_pool_connections", "backend" => backend, "state" => "idle")
            .set(pool.idle);
        metrics::gauge!("carafe_db_pool_max_connections", "backend" => backend).set(pool.max);
        metrics::gauge!("carafe_http_requests_in_flight").set(self.in_flight() as f64);
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// Decrements the in-flight count even when a request is dropped midway.
struct InFlight(Arc<AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request being observed: counted in flight until it is finished or dropped.
pub struct Timing {
    route: String,
    method: String,
    start: Instant,
    _in_flight: InFlight,
}

impl Observer {
    /// Starts observing `req` (after routing, so its route template is known).
    pub fn start(&self, req: &Request) -> Timing {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |m| m.as_str())
            .to_owned();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Timing {
            route,
            method: req.method().as_str().to_owned(),
            start: Instant::now(),
            _in_flight: InFlight(self.in_flight.clone()),
        }
    }
}

impl Timing {
    /// Counts, times and logs the answer.
    pub fn finish(self, status: StatusCode) {
        let elapsed = self.start.elapsed();
        let status = status.as_u16();
        let route = self.route;
        metrics::counter!("carafe_http_requests_total",
            "method" => self.method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
        metrics::histogram!(DURATION, "method" => self.method, "route" => route.clone())
            .record(elapsed.as_secs_f64());
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if route.starts_with("/api/") {
            tracing::info!(status, latency_ms, route, "request");
        } else {
            tracing::debug!(status, latency_ms, route, "request");
        }
    }
}
