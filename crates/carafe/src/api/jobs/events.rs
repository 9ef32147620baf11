//! `GET /api/v1/jobs/{id}/events`: a job's progress and state changes as Server-Sent Events.
//!
//! Each event's `id:` is the job's own event number. Events are numbered per job inside the
//! transaction that changes the job (holding its row), so numbers commit in order and a reader
//! that resumes after `Last-Event-ID` can never skip one that committed late. The stream
//! replays from the database, then waits for a wake-up (or polls), and ends after a final
//! state, when the client goes away, or when the server shuts down.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::response::sse::Event;
use carafe_core::jobs::{JobEvent, JobId};
use futures::Stream;
use tokio::sync::mpsc;

use crate::api::auth::StreamPrincipal;
use crate::api::error::{ApiError, ApiResult, Problem};
use crate::api::jobs::enqueue::visible_job;
use crate::api::query::Path;
use crate::api::state::AppState;

fn sse_event(e: &JobEvent) -> Event {
    let mut data = e.data.clone();
    if let Some(obj) = data.as_object_mut() {
        obj.insert("job_id".into(), e.job_id.0.into());
        obj.insert(
            "at".into(),
            e.at.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
                .into(),
        );
    }
    Event::default()
        .id(e.seq.to_string())
        .event(e.kind.clone())
        .data(data.to_string())
}

/// Where to resume: the `Last-Event-ID` header (sent by `EventSource` on reconnect) or
/// `?last_event_id=`; 0 replays everything.
fn resume_after(headers: &HeaderMap, query: Option<&str>) -> ApiResult<i64> {
    let from_query = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "last_event_id")
            .map(|(_, v)| v.into_owned())
    });
    let raw = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(from_query);
    match raw {
        None => Ok(0),
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be a number this stream sent",
                )
            }),
    }
}

/// Watch a job: every progress and state change, resumable with `Last-Event-ID`. Accepts
/// `?access_token=` (end-user token) for `EventSource`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = i64, Path), ("access_token" = Option<String>, Query, description = "End-user token, for EventSource"),
           ("Last-Event-ID" = Option<String>, Header)),
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 404, body = Problem), (status = 403, description = "reserved_queue: the job or queue is Carafe's own", body = Problem)),
    security(("bearer" = ["jobs"])))]
pub async fn stream(
    State(state): State<AppState>,
    StreamPrincipal(principal): StreamPrincipal,
    Path(id): Path<JobId>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult<Response> {
    visible_job(
        &state,
        &principal,
        id,
        crate::jobs::access::QueueAction::Read,
    )
    .await?;
    let after = resume_after(&headers, uri.query())?;
    let watched = state.jobs.watch(id, after, state.shutdown.clone());
    Ok(crate::api::sse::respond(events(watched)))
}

fn events(mut rx: mpsc::Receiver<JobEvent>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(|e| Ok(sse_event(&e)))))
}
