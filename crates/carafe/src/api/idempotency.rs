//! `Idempotency-Key` for creating POSTs. The first request with a key reserves it; its answer
//! is stored, sealed with the server secret (creating answers can hold secrets, such as a new
//! API key), and replayed for 24 hours to the same caller sending the same body. The same key
//! with another body is a 409; so is a second request while the first still runs.
//! Failures that the client may fix or retry (5xx, 401, 403, 408, 409, 429) are not stored.
//!
//! The reservation is the running request's own (a random token names it) and is renewed
//! while the request runs, however long that is (a slow upload, a long `wait`): a retry
//! meanwhile is told the request is in progress, and never runs the action a second time. A
//! crashed process renews nothing, so its keys free `limits.idempotency_lock` after it died.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use carafe_core::idempotency::{Reservation, Reserve};
use carafe_core::time::now;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use http_body::Body as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::{Instant, MissedTickBehavior};

use super::error::ApiError;
use super::json::body_error;
use crate::api::state::AppState;
use crate::context::Principal;

pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long an answer is replayed.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Answers larger than this are not stored (the request is then not replayable).
const MAX_STORED_BODY: usize = 1024 * 1024;
const MAX_KEY_LEN: usize = 255;
/// Response headers kept with a stored answer.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

#[derive(Serialize, Deserialize)]
struct Stored {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A route's own body limit, when it accepts more than `limits.json_body_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    run(state, req, next, false).await
}

/// The same for requests whose body is a file upload, streamed to disk by the handler: the
/// body is not buffered, so the fingerprint covers the method, the URL and the headers that
/// describe the content (type, length, disposition, metadata) instead of the bytes.
pub async fn streaming_middleware(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    run(state, req, next, true).await
}

async fn run(state: AppState, req: Request, next: Next, streaming: bool) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(&IDEMPOTENCY_KEY).cloned() else {
        return next.run(req).await;
    };
    handle(state, key, req, next, streaming)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Request headers that describe a streamed upload's content.
const CONTENT_HEADERS: [&str; 4] = [
    "content-type",
    "content-length",
    "content-disposition",
    "carafe-metadata",
];

async fn handle(
    state: AppState,
    key: HeaderValue,
    req: Request,
    next: Next,
    streaming: bool,
) -> Result<Response, ApiError> {
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?
        .to_owned();
    let (mut parts, body) = req.into_parts();
    let principal = Principal::from_request_parts(&mut parts, &state).await?;
    let (body, fingerprint) = if streaming {
        let mut described = Vec::new();
        for name in CONTENT_HEADERS {
            for value in parts.headers.get_all(name) {
                described.extend_from_slice(name.as_bytes());
                described.push(b':');
                described.extend_from_slice(value.as_bytes());
                described.push(0);
            }
        }
        (body, fingerprint(&parts, &described))
    } else {
        let limit = parts
            .extensions
            .get::<BodyLimit>()
            .map_or(state.config.limits.json_body_bytes, |l| l.0);
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| body_error(StatusCode::PAYLOAD_TOO_LARGE))?;
        let fingerprint = fingerprint(&parts, &bytes);
        (Body::from(bytes), fingerprint)
    };
    let scope = principal.actor_id();
    let at = now();
    let reservation = state
        .store
        .reserve_idempotency(Reserve {
            scope: &scope,
            key: &key,
            fingerprint,
            now: at,
            locked_until: at + state.config.limits.idempotency_lock.0,
            expires_at: at + RETENTION,
        })
        .await?;
    match reservation {
        Reservation::Existing {
            fingerprint: other, ..
        } if other != fingerprint => Err(ApiError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        )),
        Reservation::Existing { response: None, .. } => Err(ApiError::conflict(
            "idempotency_request_in_progress",
            "a request with this Idempotency-Key is still being processed",
        )
        .header(header::RETRY_AFTER, HeaderValue::from_static("1"))),
        Reservation::Existing {
            response: Some(sealed),
            ..
        } => replay(&state, &sealed),
        Reservation::Reserved { token } => {
            let hold = Hold {
                state: &state,
                scope: &scope,
                key: &key,
                token,
            };
            let req = Request::from_parts(parts, body);
            let response = hold.renewed_while(next.run(req)).await;
            Ok(remember(&hold, response).await)
        }
    }
}

fn fingerprint(parts: &http::request::Parts, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""));
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

fn replay(state: &AppState, sealed: &[u8]) -> Result<Response, ApiError> {
    let stored: Stored = state
        .sealer
        .open(sealed)
        .and_then(|plain| serde_json::from_slice(&plain).ok())
        .ok_or_else(|| {
            ApiError::conflict(
                "idempotency_key_reused",
                "the stored answer for this Idempotency-Key cannot be replayed; use a new key",
            )
        })?;
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    for (name, value) in stored.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(n, v);
        }
    }
    response.headers_mut().insert(
        IDEMPOTENT_REPLAYED.clone(),
        HeaderValue::from_static("true"),
    );
    Ok(response)
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 401 | 403 | 408 | 409 | 429)
}

/// Stores the answer (or frees the key when it should not be stored) and passes it on.
async fn remember(hold: &Hold<'_>, response: Response) -> Response {
    let status = response.status();
    if retryable(status) {
        hold.release().await;
        return response;
    }
    let size = response.body().size_hint().exact();
    if size.is_none_or(|n| n > MAX_STORED_BODY as u64) {
        tracing::warn!("answer not stored for Idempotency-Key replay: streamed or too large");
        hold.release().await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_STORED_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => {
            hold.release().await;
            return ApiError::internal(&e).into_response();
        }
    };
    let stored = Stored {
        status: status.as_u16(),
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|n| {
                let v = parts.headers.get(n)?.to_str().ok()?;
                Some((n.as_str().to_owned(), v.to_owned()))
            })
            .collect(),
        body: bytes.to_vec(),
    };
    let sealed = hold
        .state
        .sealer
        .seal(&serde_json::to_vec(&stored).expect("serializes"));
    hold.complete(sealed).await;
    Response::from_parts(parts, Body::from(bytes))
}

/// A key this request reserved. Every change to the reservation presents its token, so it
/// takes effect only while this request still holds the key.
struct Hold<'a> {
    state: &'a AppState,
    scope: &'a str,
    key: &'a str,
    token: String,
}

impl Hold<'_> {
    /// Runs `work` (the handler, which also reads a streamed body), renewing the lock every
    /// third of `limits.idempotency_lock` until the answer is ready; a request that answers
    /// sooner costs no renewal.
    async fn renewed_while<F: Future>(&self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        tokio::select! {
            biased;
            answer = &mut work => return answer,
            () = self.keep_renewing() => {}
        }
        // The key was lost (another request holds it now); this request still runs to its end.
        work.await
    }

    /// Renews the lock on a timer; returns only once the key is no longer this request's.
    async fn keep_renewing(&self) {
        let lock = self.state.config.limits.idempotency_lock.0;
        let every = lock / 3;
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let renewed = self
                .state
                .store
                .renew_idempotency(self.scope, self.key, &self.token, now() + lock)
                .await;
            match renewed {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        "Idempotency-Key lost while its request ran: another took it over"
                    );
                    return;
                }
                // The lock has two thirds of its length left: the next turn may still make it.
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew an Idempotency-Key reservation")
                }
            }
        }
    }

    async fn complete(&self, sealed: Vec<u8>) {
        let stored = self
            .state
            .store
            .complete_idempotency(self.scope, self.key, &self.token, sealed)
            .await;
        match stored {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "answer not stored for Idempotency-Key replay: another request took the key over"
            ),
            // The action happened; the client gets its answer. A retry will see the key as held
            // until the lock lapses, then run again — the best that can be done without the store.
            Err(e) => {
                tracing::error!(error = %e, "could not store the answer for Idempotency-Key replay")
            }
        }
    }

    async fn release(&self) {
        let released = self
            .state
            .store
            .release_idempotency(self.scope, self.key, &self.token)
            .await;
        match released {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("Idempotency-Key not released: another request took the key over")
            }
            Err(e) => tracing::warn!(error = %e, "could not release an Idempotency-Key"),
        }
    }
}
