//! The JSON body extractor used by every endpoint. It insists on a JSON content type (415),
//! enforces the body limit (413), and explains a parse failure precisely: a syntax error
//! gives its line and column (400 `malformed_json`), a value of the wrong shape names the
//! field (422 `validation_failed`). `located` answers JSON with a `Location` header; `RawBody` takes a body as bytes with
//! the same answers for one that cannot be read.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;

#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
            .detail("send the body as application/json"));
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse(&bytes).map(Json)
    }
}

/// A body taken as its exact bytes (a signed webhook, an optional body), with the same
/// problem answers as `Json` when it cannot be read: 413 over the route's limit, else 400.
#[derive(Debug, Clone, Default)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|rejection| body_error(rejection.status()))
    }
}

/// `application/json` or any `application/*+json`, with or without parameters.
pub fn is_json(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Maps a failure to read the body: over the limit is 413, anything else (a client that hung
/// up, a broken chunked encoding) is 400.
pub fn body_error(status: StatusCode) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            .detail("the request body is larger than this endpoint accepts")
    } else {
        ApiError::bad_request("unreadable_body", "the request body could not be read")
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first (cheaply, without building values), so a truncated or broken document is
    // always reported as such, with its position, even where its start has the wrong shape.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(|e| malformed(&e))?;
    if depth(bytes) > MAX_DEPTH {
        return Err(ApiError::bad_request(
            "json_too_deep",
            format!("the body nests arrays and objects more than {MAX_DEPTH} levels deep"),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = pointer(err.path());
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => ApiError::invalid(path, data_message(&inner)),
            _ => malformed(&inner),
        }
    })?;
    Ok(value)
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        .with("line", e.line())
        .with("column", e.column())
}

/// Deepest nesting of arrays and objects accepted in a request body.
pub const MAX_DEPTH: usize = 64;

/// The nesting depth of a syntactically valid JSON document. A byte scan: no allocation, no
/// recursion (serde's own recursion limit only guards values it builds, not ones it skips).
fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// serde's message without its trailing " at line 1 column 7" (the field is named instead).
fn data_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// A serde path (`scopes[1].name`) as a JSON pointer (`/scopes/1/name`); `/` for the root.
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        out.push('/');
        match seg {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push_str(&key.replace('~', "~0").replace('/', "~1"))
            }
            Segment::Unknown => out.push('?'),
        }
    }
    if out.is_empty() { "/".into() } else { out }
}

/// A JSON answer with `status` and a `Location` header (a created or accepted resource).
pub fn located<T: serde::Serialize>(
    status: StatusCode,
    location: &str,
    body: T,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let location = http::HeaderValue::from_str(location).map_err(|e| ApiError::internal(&e))?;
    Ok((status, [(header::LOCATION, location)], axum::Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        scopes: Vec<u8>,
    }

    #[test]
    fn content_types() {
        let ok = [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ];
        for ct in ok {
            assert!(is_json(Some(&http::HeaderValue::from_static(ct))), "{ct}");
        }
        for ct in ["text/plain", "application/jsonx", "multipart/form-data"] {
            assert!(!is_json(Some(&http::HeaderValue::from_static(ct))), "{ct}");
        }
        assert!(!is_json(None));
    }

    #[test]
    fn errors_say_where() {
        let e = parse::<Body>(b"{\"name\": \"a\",\n \"scopes\": [1, }").unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (400, "malformed_json"));
        let e = parse::<Body>(b"{\"name\": \"a\", \"scopes\": [1, \"x\"]}").unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (422, "validation_failed"));
        assert!(format!("{e:?}").contains("/scopes/1"));
        let e = parse::<Body>(b"{\"name\": \"a\", \"scopes\": []} trailing").unwrap_err();
        assert_eq!(e.code(), "malformed_json");
        let e = parse::<Body>(b"").unwrap_err();
        assert_eq!(e.code(), "malformed_json");
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            parse::<serde_json::Value>(deep.as_bytes())
                .unwrap_err()
                .code(),
            "json_too_deep"
        );
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(depth(br#"{"a": [1, {"b": "[[[{{"}], "c": "\"]]"}"#), 3);
        assert_eq!(depth(b"1"), 0);
        let limit = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse::<serde_json::Value>(limit.as_bytes()).is_ok());
    }
}
