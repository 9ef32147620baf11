//! Cursor pagination for every list: `?limit=&cursor=` in, `{items, next_cursor}` out, plus an
//! RFC 8288 `Link: <…>; rel="next"` header built from the public URL with the other query
//! parameters kept.

use axum::Json;
use axum::response::{IntoResponse, Response};
use carafe_core::page::{self, DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest};
use http::{HeaderValue, Uri, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use crate::context::BaseUrl;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1–500 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListParams {
    pub fn page_request(&self) -> ApiResult<PageRequest> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(page::decode_cursor(c).ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued")
            })?),
        };
        Ok(PageRequest { after, limit })
    }
}

/// A page of items as clients see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Renders a page, mapping each stored item to its view, with the `Link` header.
pub fn respond<T, V: Serialize>(
    page: Page<T>,
    view: impl Fn(T) -> V,
    base: &BaseUrl,
    uri: &Uri,
) -> Response {
    let next_cursor = page.next_after.as_deref().map(page::encode_cursor);
    let link = next_cursor
        .as_ref()
        .map(|cursor| next_link(base, uri, cursor));
    let body = PageBody {
        items: page.items.into_iter().map(view).collect(),
        next_cursor,
    };
    let mut response = Json(body).into_response();
    if let Some(value) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

fn next_link(base: &BaseUrl, uri: &Uri, cursor: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if k != "cursor" {
            query.append_pair(&k, &v);
        }
    }
    query.append_pair("cursor", cursor);
    format!(
        "<{}?{}>; rel=\"next\"",
        base.join(uri.path()),
        query.finish()
    )
}
