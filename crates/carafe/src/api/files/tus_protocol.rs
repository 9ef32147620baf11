//! The tus 1.0 wire format: header names, the version check every request but `OPTIONS`
//! must pass, and parsing of what clients send (`Upload-Length`/`-Offset`,
//! `Upload-Metadata`, `Upload-Checksum`). Malformed values are 400s, never panics.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::api::error::{ApiError, ApiResult};
use crate::files::receive::tus::Checksum;

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
pub const CHECKSUM_ALGORITHMS: &str = "sha256";
/// The only body type a `PATCH` (or a creation with upload) may have.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

pub const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
pub const TUS_VERSION: HeaderName = HeaderName::from_static("tus-version");
pub const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
pub const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
pub const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
pub const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
pub const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
pub const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
pub const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
/// Carafe's own: the file a finished upload became, its URL, or why it was refused.
pub const CARAFE_FILE_ID: HeaderName = HeaderName::from_static("carafe-file-id");
pub const CARAFE_FILE_URL: HeaderName = HeaderName::from_static("carafe-file-url");
pub const CARAFE_UPLOAD_ERROR: HeaderName = HeaderName::from_static("carafe-upload-error");

/// Headers a browser client sends and must be allowed to read (for CORS).
pub const REQUEST_HEADERS: [HeaderName; 6] = [
    TUS_RESUMABLE,
    UPLOAD_OFFSET,
    UPLOAD_LENGTH,
    UPLOAD_METADATA,
    UPLOAD_CHECKSUM,
    UPLOAD_DEFER_LENGTH,
];
pub const RESPONSE_HEADERS: [HeaderName; 12] = [
    TUS_RESUMABLE,
    TUS_VERSION,
    TUS_EXTENSION,
    TUS_MAX_SIZE,
    TUS_CHECKSUM_ALGORITHM,
    UPLOAD_OFFSET,
    UPLOAD_LENGTH,
    UPLOAD_METADATA,
    UPLOAD_EXPIRES,
    CARAFE_FILE_ID,
    CARAFE_FILE_URL,
    CARAFE_UPLOAD_ERROR,
];

/// A number or an id as a header value.
pub fn value(v: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&v.to_string()).expect("numbers and ids are valid header values")
}

/// Largest `Upload-Metadata` header, and most pairs in it.
const MAX_METADATA_BYTES: usize = 16 * 1024;
const MAX_METADATA_PAIRS: usize = 64;

/// Every answer says `Tus-Resumable`; every tus request but `OPTIONS` must speak 1.0.0
/// (other methods go on to their usual 405).
pub async fn middleware(req: Request, next: Next) -> Response {
    let speaks = req.headers().get(&TUS_RESUMABLE).map(HeaderValue::as_bytes);
    let checked = [Method::POST, Method::HEAD, Method::PATCH, Method::DELETE];
    let mut response = if !checked.contains(req.method()) || speaks == Some(VERSION.as_bytes()) {
        next.run(req).await
    } else {
        ApiError::new(StatusCode::PRECONDITION_FAILED, "tus_version_unsupported")
            .detail("send `Tus-Resumable: 1.0.0`; it is the only tus version served here")
            .header(TUS_VERSION, HeaderValue::from_static(VERSION))
            .into_response()
    };
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(VERSION));
    response
}

/// A non-negative integer header (`Upload-Length`, `Upload-Offset`); `None` when absent.
pub fn number(headers: &HeaderMap, name: &HeaderName) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "invalid_header",
            format!("`{name}` must be a non-negative integer"),
        ));
    }
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request("invalid_header", format!("`{name}` is too large")))
}

/// Whether the body is `application/offset+octet-stream` (parameters ignored).
pub fn is_offset_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

fn bad_metadata(detail: &'static str) -> ApiError {
    ApiError::bad_request("invalid_metadata", detail)
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs (the value may be absent).
/// Keys are unique ASCII without spaces or commas; values must decode to UTF-8 text here,
/// since they become the file's name and metadata strings.
pub fn parse_metadata(headers: &HeaderMap) -> ApiResult<Map<String, Value>> {
    let mut pairs = Map::new();
    let Some(value) = headers.get(&UPLOAD_METADATA) else {
        return Ok(pairs);
    };
    if value.len() > MAX_METADATA_BYTES {
        return Err(bad_metadata("`Upload-Metadata` may be at most 16 KiB"));
    }
    let text = value
        .to_str()
        .map_err(|_| bad_metadata("`Upload-Metadata` must be ASCII"))?;
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(' ').filter(|p| !p.is_empty());
        let key = parts.next().unwrap_or_default();
        let encoded = parts.next().unwrap_or_default();
        if parts.next().is_some() {
            return Err(bad_metadata("each pair is `key base64value`"));
        }
        let decoded = STANDARD
            .decode(encoded)
            .map_err(|_| bad_metadata("metadata values must be base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| bad_metadata("metadata values must be UTF-8 text"))?;
        if pairs.len() >= MAX_METADATA_PAIRS {
            return Err(bad_metadata("at most 64 metadata pairs"));
        }
        if pairs
            .insert(key.to_owned(), Value::String(decoded))
            .is_some()
        {
            return Err(bad_metadata("metadata keys must be unique"));
        }
    }
    Ok(pairs)
}

/// The stored metadata back in `Upload-Metadata` form.
pub fn encode_metadata(metadata: &Value) -> Option<HeaderValue> {
    let pairs: Vec<String> = metadata
        .as_object()?
        .iter()
        .filter_map(|(k, v)| Some(format!("{k} {}", STANDARD.encode(v.as_str()?))))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    HeaderValue::from_str(&pairs.join(",")).ok()
}

pub fn parse_checksum(headers: &HeaderMap) -> ApiResult<Option<Checksum>> {
    let Some(value) = headers.get(&UPLOAD_CHECKSUM) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    let (algorithm, digest) = text.split_once(' ').unwrap_or((text, ""));
    if !algorithm.eq_ignore_ascii_case("sha256") {
        return Err(ApiError::bad_request(
            "checksum_algorithm_unsupported",
            "`Upload-Checksum` supports sha256 only",
        )
        .with("supported", CHECKSUM_ALGORITHMS));
    }
    STANDARD
        .decode(digest.trim())
        .ok()
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .map(|d| Some(Checksum(d)))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_checksum",
                "`Upload-Checksum` must be `sha256 <base64 of the 32-byte digest>`",
            )
        })
}

/// An RFC 7231 date (`Upload-Expires`).
pub fn http_date(at: OffsetDateTime) -> HeaderValue {
    let text = httpdate::fmt_http_date(at.into());
    HeaderValue::from_str(&text).expect("an HTTP date is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn metadata_round_trips_and_bad_pairs_are_refused() {
        let h = headers(
            UPLOAD_METADATA,
            "filename 67O06rOg7IScLnBkZg==,is_confidential, bucket ZG9jcw==",
        );
        let pairs = parse_metadata(&h).unwrap();
        assert_eq!(pairs["filename"], "보고서.pdf");
        assert_eq!(pairs["is_confidential"], "");
        assert_eq!(pairs["bucket"], "docs");
        let again = encode_metadata(&Value::Object(pairs.clone())).unwrap();
        let back = parse_metadata(&headers(UPLOAD_METADATA, again.to_str().unwrap())).unwrap();
        assert_eq!(back, pairs);
        for bad in [
            "a b c",
            "a !!!",
            "a YQ==,a YQ==",
            "a /w==", // not UTF-8
        ] {
            let err = parse_metadata(&headers(UPLOAD_METADATA, bad)).unwrap_err();
            assert_eq!(err.code(), "invalid_metadata", "{bad}");
        }
    }

    #[test]
    fn numbers_and_checksums_are_strict() {
        let n = |v: &str| number(&headers(UPLOAD_OFFSET, v), &UPLOAD_OFFSET);
        assert_eq!(n("42").unwrap(), Some(42));
        for bad in ["-1", "1.5", "", "0x10", "99999999999999999999999"] {
            assert!(n(bad).is_err(), "{bad}");
        }
        assert_eq!(number(&HeaderMap::new(), &UPLOAD_OFFSET).unwrap(), None);
        let digest = STANDARD.encode([7u8; 32]);
        let c = parse_checksum(&headers(UPLOAD_CHECKSUM, &format!("sha256 {digest}")));
        assert_eq!(c.unwrap(), Some(Checksum([7; 32])));
        let err = parse_checksum(&headers(UPLOAD_CHECKSUM, "md5 abc=")).unwrap_err();
        assert_eq!(err.code(), "checksum_algorithm_unsupported");
        let err = parse_checksum(&headers(UPLOAD_CHECKSUM, "sha256 YQ==")).unwrap_err();
        assert_eq!(err.code(), "invalid_checksum");
    }

    #[test]
    fn content_types_and_dates() {
        let ct = |v: &str| is_offset_stream(&headers(header::CONTENT_TYPE, v));
        assert!(ct("application/offset+octet-stream"));
        assert!(ct("Application/Offset+Octet-Stream; x=1"));
        assert!(!ct("application/octet-stream"));
        let at = OffsetDateTime::from_unix_timestamp(1_403_712_000).unwrap();
        assert_eq!(http_date(at), "Wed, 25 Jun 2014 16:00:00 GMT");
    }
}
