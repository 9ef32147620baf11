//! The public one-click unsubscribe endpoint of RFC 8058, outside `/api`: `POST /u/{token}`
//! unsubscribes at once — no cookie, no auth, no redirect, whatever the body — as mail
//! providers send it; `GET /u/{token}` only shows a small page with a button (mail scanners
//! fetch links, so a GET never changes anything). Pages are plain HTML without scripts.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::{ApiError, ApiResult};
use crate::api::query::Path;
use crate::api::state::AppState;

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;\
         margin:4rem auto;padding:0 1rem}}button{{font:inherit;padding:.5rem 1rem}}</style>\
         </head><body><h1>{title}</h1>{body}</body></html>"
    );
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A confirmation page with a button (changes nothing).
#[utoipa::path(get, path = "/u/{token}", tag = "mail", params(("token" = String, Path)),
    responses((status = 200, content_type = "text/html", body = String),
              (status = 404, content_type = "text/html", body = String)))]
pub async fn confirm(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    if !state.mail.unsubscribe_link_is_valid(&token) {
        return page(
            StatusCode::NOT_FOUND,
            "Link not found",
            "<p>This unsubscribe link is not valid.</p>",
        );
    }
    page(
        StatusCode::OK,
        "Unsubscribe",
        "<p>Stop receiving these emails at this address?</p>\
         <form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>",
    )
}

/// Unsubscribe at once (RFC 8058 one-click: no cookie, auth or redirect).
#[utoipa::path(post, path = "/u/{token}", tag = "mail", params(("token" = String, Path)),
    responses((status = 200, content_type = "text/html", body = String),
              (status = 404, content_type = "text/html", body = String)))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    match state.mail.unsubscribe(&token).await {
        Ok(_) => Ok(page(
            StatusCode::OK,
            "Unsubscribed",
            "<p>You will not receive these emails any more.</p>",
        )),
        Err(crate::mail::Error::NotFound) => Ok(page(
            StatusCode::NOT_FOUND,
            "Link not found",
            "<p>This unsubscribe link is not valid.</p>",
        )),
        Err(e) => Err(ApiError::from(e)),
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(confirm, unsubscribe))
}
