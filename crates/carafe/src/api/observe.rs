//! Request metrics and the access log. Every request is counted by route template, method and
//! status, timed into a histogram, and logged once (API routes at `info`, probes at `debug`,
//! so health checks do not drown the log). Prometheus text is rendered on `/metrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use http::{Method, StatusCode};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use tokio_util::sync::CancellationToken;

use crate::jobs::Jobs;

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
    handles: Arc<Handles>,
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
            handles: Arc::default(),
        }
    }

    /// Requests being handled by this server right now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The metrics text, with the queue and pool gauges read now.
    pub async fn render(&self, jobs: &Jobs, store: &dyn carafe_core::Store) -> String {
        let at = carafe_core::time::now();
        match jobs.queue_stats(at).await {
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
        let pool = store.pool_stats();
        let backend = store.backend();
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
    handles: Arc<Handles>,
    route: Option<MatchedPath>,
    method: &'static str,
    start: Instant,
    _in_flight: InFlight,
}

impl Observer {
    /// Starts observing `req` (after routing, so its route template is known).
    pub fn start(&self, req: &Request) -> Timing {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Timing {
            handles: self.handles.clone(),
            route: req.extensions().get::<MatchedPath>().cloned(),
            method: method_label(req.method()),
            start: Instant::now(),
            _in_flight: InFlight(self.in_flight.clone()),
        }
    }

    /// Folds the histogram samples recorded since the last call into their buckets. Until
    /// then each sample is kept on its own, so a server that nobody scrapes must still call
    /// this regularly or its memory grows with every request.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Runs `upkeep` every few seconds until `stop`.
    pub async fn keep_up(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.upkeep(),
                () = stop.cancelled() => return,
            }
        }
    }
}

/// How often histogram samples are folded into buckets when nobody scrapes `/metrics`.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

impl Timing {
    /// Counts, times and logs the answer.
    pub fn finish(self, status: StatusCode) {
        let elapsed = self.start.elapsed();
        let route = self.route.as_ref().map_or("unmatched", |m| m.as_str());
        let (requests, duration) = self.handles.get(route, self.method, status);
        requests.increment(1);
        duration.record(elapsed.as_secs_f64());
        let status = status.as_u16();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if route.starts_with("/api/") {
            tracing::info!(status, latency_ms, route, "request");
        } else {
            tracing::debug!(status, latency_ms, route, "request");
        }
    }
}

/// The request counter and duration histogram of each route, method and status, registered
/// once: looking a metric up by its labels on every request costs several allocations and a
/// registry search, which show in the download benchmarks.
#[derive(Default)]
struct Handles {
    by_route: RwLock<HashMap<String, RouteMetrics>>,
}

/// One route's counter and histogram by method label and status.
type RouteMetrics = HashMap<(&'static str, StatusCode), (Counter, Histogram)>;

/// Methods counted under their own name; any other is counted as `OTHER`, so a client that
/// invents methods cannot make metric series (and these handles) without end. Routes are the
/// route table's templates and statuses are three digits, so every label is bounded.
const METHOD_LABELS: [(Method, &str); 7] = [
    (Method::GET, "GET"),
    (Method::HEAD, "HEAD"),
    (Method::POST, "POST"),
    (Method::PUT, "PUT"),
    (Method::PATCH, "PATCH"),
    (Method::DELETE, "DELETE"),
    (Method::OPTIONS, "OPTIONS"),
];

fn method_label(method: &Method) -> &'static str {
    METHOD_LABELS
        .iter()
        .find(|(m, _)| m == method)
        .map_or("OTHER", |(_, label)| label)
}

impl Handles {
    fn get(&self, route: &str, method: &'static str, status: StatusCode) -> (Counter, Histogram) {
        let key = (method, status);
        if let Some(found) = self
            .by_route
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
            .and_then(|r| r.get(&key))
        {
            return found.clone();
        }
        let mut all = self.by_route.write().unwrap_or_else(|e| e.into_inner());
        all.entry(route.to_owned())
            .or_default()
            .entry(key)
            .or_insert_with(|| {
                let route = route.to_owned();
                let requests = metrics::counter!("carafe_http_requests_total",
                    "method" => method, "route" => route.clone(),
                    "status" => status.as_str().to_owned());
                let duration = metrics::histogram!(DURATION, "method" => method, "route" => route);
                (requests, duration)
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let observer = Observer::new();
        let route = "/test/observe/{counted}";
        for status in [200, 200, 404] {
            let status = StatusCode::from_u16(status).unwrap();
            let (requests, duration) = observer.handles.get(route, "GET", status);
            requests.increment(1);
            duration.record(0.001);
        }
        observer
            .handles
            .get(route, "POST", StatusCode::OK)
            .0
            .increment(1);
        observer.upkeep();
        let text = observer.handle.render();
        let count = |method: &str, status: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("carafe_http_requests_total{")
                        && l.contains(&format!("route=\"{route}\""))
                        && l.contains(&format!("method=\"{method}\""))
                        && l.contains(&format!("status=\"{status}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(count("GET", "200").as_deref(), Some("2"), "{text}");
        assert_eq!(count("GET", "404").as_deref(), Some("1"));
        assert_eq!(count("POST", "200").as_deref(), Some("1"));
        let samples = text
            .lines()
            .find(|l| {
                l.starts_with("carafe_http_request_duration_seconds_count{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains("method=\"GET\"")
            })
            .and_then(|l| l.rsplit(' ').next());
        assert_eq!(samples, Some("3"), "{text}");
    }

    #[test]
    fn invented_methods_share_one_series() {
        let observer = Observer::new();
        let status = StatusCode::IM_A_TEAPOT;
        for method in ["INVENTED1", "INVENTED2", "GET"] {
            let req = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri("/nowhere")
                .body(axum::body::Body::empty())
                .unwrap();
            observer.start(&req).finish(status);
        }
        let text = observer.handle.render();
        let count = |method: &str| {
            let labels = format!("method=\"{method}\",route=\"unmatched\",status=\"418\"");
            text.lines()
                .find(|l| l.starts_with("carafe_http_requests_total{") && l.contains(&labels))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(count("OTHER").as_deref(), Some("2"), "{text}");
        assert_eq!(count("GET").as_deref(), Some("1"));
        assert!(!text.contains("INVENTED"));
    }
}
