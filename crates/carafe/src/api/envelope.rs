//! The conventions around every request, applied in one middleware: the request id (kept or
//! made, echoed, on every log line), the in-flight count, metrics and the access log, and the
//! security headers. One layer instead of one per convention: each layer boxes a future and
//! clones its inner service per request, and together they cost file downloads about a
//! quarter of their throughput (`scripts/bench/files`).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::request_id::{self, X_REQUEST_ID};
use super::security;
use crate::api::state::AppState;

pub async fn middleware(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let (id, span) = request_id::assign(&mut req);
    let timing = state.observer.start(&req);
    let header = id.0.clone();
    // Inside the request's span, so the access log line carries the request id.
    let mut response = request_id::scope(id, span, async move {
        let response = next.run(req).await;
        timing.finish(response.status());
        response
    })
    .await;
    let headers = response.headers_mut();
    security::add_headers(headers, security::https(&state.config));
    headers.insert(X_REQUEST_ID.clone(), header);
    response
}
