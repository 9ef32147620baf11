//! Request ids: a sane incoming `X-Request-Id` is kept, anything else is replaced by a fresh
//! one. The id is echoed on the response, carried by the request's tracing span (so it is on
//! every log line the request causes) and readable by the error mapping through a task-local.

use axum::extract::Request;
use http::{HeaderName, HeaderValue};
use tracing::{Instrument, Span};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id accepted from a client.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: RequestId;
}

#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.as_str().to_owned()).ok()
}

/// Accepts 1–128 characters from a conservative set (letters, digits and `-_.:=/+@`): enough
/// for UUIDs, ULIDs and trace ids, nothing that could forge a log line or a header.
fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:=/+@".contains(b))
}

fn generate() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    let id = uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
    HeaderValue::from_str(id).expect("hex is a valid header value")
}

/// Gives `req` its id (kept from the client when sane) and returns it with the request's
/// tracing span. The caller runs the request inside [`scope`] and echoes the id.
pub fn assign(req: &mut Request) -> (RequestId, Span) {
    let id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if acceptable(v) => v.clone(),
        _ => generate(),
    };
    let request_id = RequestId(id);
    // Probes (health, readiness, metrics) log only at debug; their span costs nothing at info.
    let span = if req.uri().path().starts_with("/api/") {
        tracing::info_span!(
            "request",
            request_id = request_id.as_str(),
            method = %req.method(),
            path = req.uri().path(),
        )
    } else {
        tracing::debug_span!(
            "request",
            request_id = request_id.as_str(),
            method = %req.method(),
            path = req.uri().path(),
        )
    };
    req.extensions_mut().insert(request_id.clone());
    (request_id, span)
}

/// Runs `fut` as the request `id`: inside its span, with the id readable through [`current`].
pub async fn scope<F: Future>(id: RequestId, span: Span, fut: F) -> F::Output {
    CURRENT.scope(id, fut.instrument(span)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_accepted() {
        for ok in [
            "abc",
            "0193a1b2-c3d4",
            "Root=1-5f84c7a9/trace:x@y+z",
            &"a".repeat(128),
        ] {
            assert!(acceptable(&HeaderValue::from_str(ok).unwrap()), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "<script>",
            "x\"y",
            &"a".repeat(129),
            "line\tbreak",
        ] {
            assert!(!acceptable(&HeaderValue::from_str(bad).unwrap()), "{bad}");
        }
    }
}
