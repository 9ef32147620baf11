//! Carafe's own serving path for file content and thumbnails: strong validators from the
//! content hash, conditional requests, single and multiple ranges, RFC 6266 names, and safe
//! headers for user content. Small objects come from a memory cache; large ones stream from
//! storage in large chunks, or are handed to nginx with `X-Accel-Redirect`. Encrypted
//! objects are always decrypted here, segment by segment (never offloaded).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::{StreamExt, stream};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::conditional::{self, Outcome, Validators};
use super::disposition::{DispositionKind, content_disposition};
use super::range::{self, ByteRange, RangeRequest};
use crate::files::Files;
use crate::files::store::crypto::DataKey;
use crate::files::store::sealed;
use crate::files::store::storage::{ByteStream, ResponseHeaders};

/// Types a browser may show inline; everything else is always downloaded.
const INLINE_TYPES: [&str; 9] = [
    "png", "jpeg", "gif", "webp", "pdf", "txt", "csv", "json", "mp4",
];

/// User content can never run script or load anything, even if a browser renders it.
const CONTENT_CSP: &str = "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox";

/// One servable object, with the response headers that depend only on it built once: a
/// ready file's `Content` lives in the record cache, so a hot download formats nothing.
#[derive(Debug)]
pub struct Content {
    pub key: String,
    pub size: u64,
    /// The type name (`png`, …) and its media type.
    pub kind: String,
    pub mime: String,
    pub name: String,
    /// Whole seconds, as `Last-Modified` says it.
    pub modified: SystemTime,
    etag: HeaderValue,
    last_modified: HeaderValue,
    content_type: HeaderValue,
    /// `Content-Disposition` when the caller asks for nothing else.
    disposition: HeaderValue,
}

impl Content {
    pub fn new(
        key: String,
        size: u64,
        sha256: &str,
        kind: String,
        mime: String,
        name: String,
        modified: SystemTime,
    ) -> Content {
        let modified = whole_seconds(modified);
        Content {
            key,
            size,
            etag: header_value(&format!("\"{sha256}\"")),
            last_modified: header_value(&httpdate::fmt_http_date(modified)),
            content_type: header_value(&mime),
            disposition: disposition(&kind, &name, &Delivery::default()),
            kind,
            mime,
            name,
            modified,
        }
    }

    /// The `Content-Disposition` for `delivery` (the prepared one when it asks for nothing).
    fn disposition(&self, delivery: &Delivery) -> HeaderValue {
        match (delivery.disposition, &delivery.filename) {
            (None, None) => self.disposition.clone(),
            _ => disposition(&self.kind, &self.name, delivery),
        }
    }

    /// Whether `delivery` of this content is shown by the browser or saved.
    pub fn shown(&self, delivery: &Delivery) -> DispositionKind {
        shown(&self.kind, delivery)
    }
}

/// Inline only for types browsers may show, unless the caller asks for a download.
fn shown(kind: &str, delivery: &Delivery) -> DispositionKind {
    match delivery.disposition {
        Some(DispositionKind::Inline) | None if INLINE_TYPES.contains(&kind) => {
            DispositionKind::Inline
        }
        _ => DispositionKind::Attachment,
    }
}

/// The `Content-Disposition` of a download.
fn disposition(kind: &str, name: &str, delivery: &Delivery) -> HeaderValue {
    content_disposition(
        shown(kind, delivery),
        delivery.filename.as_deref().unwrap_or(name),
    )
}

/// What one request adds to a `Content`: its bucket's caching policy and, when the object is
/// encrypted at rest, its data key (it is then decrypted on the way out, never handed to nginx
/// or to a presigned URL).
pub struct Served {
    pub content: Arc<Content>,
    pub cache_control: HeaderValue,
    pub dek: Option<DataKey>,
}

/// How the caller wants it delivered.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// `Some(Attachment)` forces a download; `Some(Inline)` asks to show it (types outside the
    /// inline list are still downloaded).
    pub disposition: Option<DispositionKind>,
    /// A name to save it under instead of its own.
    pub filename: Option<String>,
}

pub(crate) fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Why a download is not answered with the bytes.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `If-Match` or `If-Unmodified-Since` named another version.
    #[error("the file has changed since the version the request names")]
    PreconditionFailed,
    #[error("no requested range overlaps the file")]
    RangeNotSatisfiable { size: u64 },
    /// Storage could not be read (or could not sign a URL); the client may retry.
    #[error("storage is unavailable: {0}")]
    Unavailable(std::io::Error),
}

impl Files {
    /// Answers a GET or HEAD of `content`.
    pub async fn serve(
        &self,
        method: &Method,
        request: &HeaderMap,
        served: &Served,
        delivery: &Delivery,
    ) -> Result<Response, ServeError> {
        let content = &served.content;
        let mut headers = HeaderMap::with_capacity(12);
        headers.insert(header::ETAG, content.etag.clone());
        headers.insert(header::LAST_MODIFIED, content.last_modified.clone());
        headers.insert(header::CACHE_CONTROL, served.cache_control.clone());
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let validators = Validators {
            etag: content.etag.to_str().unwrap_or_default(),
            last_modified: content.modified,
        };
        let range_allowed = match conditional::evaluate(method, request, &validators) {
            Outcome::NotModified => {
                return Ok(reply(StatusCode::NOT_MODIFIED, headers, Body::empty()));
            }
            Outcome::PreconditionFailed => {
                return Err(ServeError::PreconditionFailed);
            }
            Outcome::Proceed { range_allowed } => range_allowed,
        };
        self.content_headers(&mut headers, content, delivery);
        let ranges = if range_allowed {
            range::parse(request.get(header::RANGE), content.size)
        } else {
            RangeRequest::Full
        };
        let head = method == Method::HEAD;
        match ranges {
            RangeRequest::Unsatisfiable => {
                Err(ServeError::RangeNotSatisfiable { size: content.size })
            }
            RangeRequest::Full => {
                headers.insert(header::CONTENT_LENGTH, content.size.into());
                if head {
                    return Ok(reply(StatusCode::OK, headers, Body::empty()));
                }
                if let (Some(prefix), Some(path), None) = (
                    &self.settings.accel_redirect,
                    self.storage.local_path(&content.key),
                    &served.dek,
                ) {
                    headers.remove(header::CONTENT_LENGTH);
                    headers.insert("x-accel-redirect", header_value(&format!("{prefix}{path}")));
                    return Ok(reply(StatusCode::OK, headers, Body::empty()));
                }
                let body = self.body(served, None).await?;
                Ok(reply(StatusCode::OK, headers, body))
            }
            RangeRequest::Partial(ranges) if ranges.len() == 1 => {
                let r = ranges[0];
                headers.insert(header::CONTENT_LENGTH, r.len().into());
                headers.insert(
                    header::CONTENT_RANGE,
                    header_value(&range::content_range(&r, content.size)),
                );
                let body = if head {
                    Body::empty()
                } else {
                    self.body(served, Some(r)).await?
                };
                Ok(reply(StatusCode::PARTIAL_CONTENT, headers, body))
            }
            RangeRequest::Partial(ranges) => {
                let boundary = uuid::Uuid::new_v4().simple().to_string();
                let layout =
                    range::multipart_layout(&ranges, content.size, &content.mime, &boundary);
                headers.insert(
                    header::CONTENT_TYPE,
                    header_value(&range::multipart_content_type(&boundary)),
                );
                headers.insert(header::CONTENT_LENGTH, layout.content_length.into());
                if head {
                    return Ok(reply(StatusCode::PARTIAL_CONTENT, headers, Body::empty()));
                }
                let mut parts: Vec<(Bytes, Option<ByteRange>)> = layout
                    .parts
                    .into_iter()
                    .map(|(h, r)| (h, Some(r)))
                    .collect();
                parts.push((layout.trailer, None));
                let files_content = content.clone();
                let dek = served.dek.clone();
                let cached = self
                    .cached_content(&content.key, content.size, dek.as_ref())
                    .await;
                let storage = self.storage.clone();
                let body = stream::iter(parts)
                    .then(move |(header, r)| {
                        let storage = storage.clone();
                        let cached = cached.clone();
                        let content = files_content.clone();
                        let dek = dek.clone();
                        async move {
                            let head = stream::once(async move { Ok(header) }).boxed();
                            let Some(r) = r else { return head };
                            let data: ByteStream = match cached {
                                Some(all) => {
                                    let slice = all.slice(r.start as usize..=r.end as usize);
                                    stream::once(async move { Ok(slice) }).boxed()
                                }
                                None => match sealed::read(
                                    &storage,
                                    &content.key,
                                    dek.as_ref(),
                                    Some(r.start..r.end + 1),
                                    content.size,
                                )
                                .await
                                {
                                    Ok(s) => s,
                                    Err(e) => stream::once(async move { Err(e) }).boxed(),
                                },
                            };
                            head.chain(data).boxed()
                        }
                    })
                    .flatten();
                Ok(reply(
                    StatusCode::PARTIAL_CONTENT,
                    headers,
                    Body::from_stream(body),
                ))
            }
        }
    }

    fn content_headers(&self, headers: &mut HeaderMap, content: &Content, delivery: &Delivery) {
        headers.insert(header::CONTENT_TYPE, content.content_type.clone());
        headers.insert(header::CONTENT_DISPOSITION, content.disposition(delivery));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_CSP),
        );
    }

    /// The bytes of `content` (or of one range of it).
    async fn body(&self, served: &Served, r: Option<ByteRange>) -> Result<Body, ServeError> {
        let (content, dek) = (&served.content, served.dek.as_ref());
        if let Some(all) = self.cached_content(&content.key, content.size, dek).await {
            let bytes = match r {
                Some(r) => all.slice(r.start as usize..=r.end as usize),
                None => all,
            };
            return Ok(Body::from(bytes));
        }
        let range = r.map(|r| r.start..r.end + 1);
        let stream = sealed::read(&self.storage, &content.key, dek, range, content.size)
            .await
            .map_err(ServeError::Unavailable)?;
        Ok(Body::from_stream(stream))
    }
}

/// How long a presigned download URL lasts: long enough to start, short enough not to share.
const PRESIGNED_TTL: Duration = Duration::from_secs(300);

impl Files {
    /// A redirect to a presigned URL for `content`, when storage can make one (S3) and S3's
    /// answer is as safe as Carafe's own. S3 cannot send `nosniff` or the sandboxing CSP, so
    /// only attachments are redirected (browsers save those, they never render them); S3 is
    /// made to send the signed `Content-Type`, `Content-Disposition` and `Cache-Control`.
    /// Content shown inline, and encrypted content, is served by Carafe (`None`).
    pub async fn redirect(
        &self,
        served: &Served,
        delivery: &Delivery,
    ) -> Result<Option<Response>, ServeError> {
        let content = &served.content;
        if served.dek.is_some() || content.shown(delivery) == DispositionKind::Inline {
            return Ok(None);
        }
        let disposition = content.disposition(delivery);
        let answer = ResponseHeaders {
            content_type: &content.mime,
            content_disposition: disposition.to_str().unwrap_or("attachment"),
            cache_control: served.cache_control.to_str().unwrap_or("no-store"),
        };
        let url = self
            .storage
            .presigned_get(&content.key, PRESIGNED_TTL, &answer)
            .await
            .map_err(ServeError::Unavailable)?;
        Ok(url.map(|url| {
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, header_value(url.as_str()));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            reply(StatusCode::FOUND, headers, Body::empty())
        }))
    }
}

fn reply(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
