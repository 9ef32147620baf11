//! Weak ETags for JSON GETs: the tag is a hash of the representation, so any resource gets
//! conditional requests (`If-None-Match` → 304) without each handler computing versions.
//! Responses that already carry an ETag (file content, with its strong tag) are left alone.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderValue, Method, StatusCode, header};
use http_body::Body as _;
use sha2::{Digest, Sha256};

use super::json::is_json;

/// Larger JSON bodies are sent without an ETag rather than buffered twice.
const MAX_TAGGED_BYTES: u64 = 8 * 1024 * 1024;

pub async fn middleware(req: Request, next: Next) -> Response {
    // Resources live under /api; probes and metrics are never cached.
    if req.method() != Method::GET || !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let response = next.run(req).await;
    let size = response.body().size_hint().exact();
    if response.status() != StatusCode::OK
        || response.headers().contains_key(header::ETAG)
        || !is_json(response.headers().get(header::CONTENT_TYPE))
        || size.is_none_or(|n| n > MAX_TAGGED_BYTES)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_TAGGED_BYTES as usize).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let digest = Sha256::digest(&bytes);
    let tag = format!("W/\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..16]));
    let tag = HeaderValue::from_str(&tag).expect("base64 is a valid header value");
    parts
        .headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private, no-cache"));
    let matched = if_none_match.as_ref().is_some_and(|inm| matches(inm, &tag));
    parts.headers.insert(header::ETAG, tag);
    if matched {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Weak comparison (RFC 9110 §13.1.2): `*`, or any listed tag equal ignoring `W/`.
fn matches(if_none_match: &HeaderValue, tag: &HeaderValue) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let ours = strip(tag.to_str().unwrap_or_default());
    if_none_match
        .to_str()
        .unwrap_or_default()
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_comparison() {
        let tag = HeaderValue::from_static("W/\"abc\"");
        for yes in ["W/\"abc\"", "\"abc\"", "\"x\", W/\"abc\"", "*"] {
            assert!(matches(&HeaderValue::from_static(yes), &tag), "{yes}");
        }
        for no in ["\"ab\"", "W/\"abcd\"", ""] {
            assert!(!matches(&HeaderValue::from_static(no), &tag), "{no}");
        }
    }
}
