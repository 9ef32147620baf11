//! `GET /api/v1/audit`: the audit log, newest first, filtered by file, action, actor and time;
//! JSON pages, or the whole matching log as a streamed CSV download. Who may read what is
//! decided in `audit::authorize`.

mod query;

use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::response::Response;
use bytes::Bytes;
use carafe_core::audit::AuditEvent;
use futures::Stream;
use http::{HeaderMap, HeaderValue, header};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::query::{AuditParams, Format};
use crate::api::error::{ApiResult, Problem};
use crate::api::pagination::{self, PageBody};
use crate::api::query::Query;
use crate::api::state::AppState;
use crate::context::BaseUrl;
use crate::context::Principal;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// `key:<id>`, `user:<id>`, `cli` or `system`.
    pub actor: String,
    /// e.g. `key.create`, `file.download`.
    pub action: String,
    /// e.g. `key:<id>`, `file:<id>`.
    pub target: Option<String>,
    pub request_id: Option<String>,
    /// Facts about the event; file events carry the client's `ip` and `user_agent`.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<AuditEvent> for AuditView {
    fn from(e: AuditEvent) -> Self {
        AuditView {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            request_id: e.request_id,
            details: e.details,
        }
    }
}

/// The audit log, newest first: JSON pages, or every matching event as a streamed CSV.
///
/// Filters combine (AND). With `Accept: text/csv` or
/// `?format=csv` the answer is a CSV download (`id,at,actor,action,target,request_id,ip,
/// user_agent,details`) of **every** matching event, streamed: `limit` and `cursor` are ignored
/// there. Cells starting with `= + - @`, tab or CR are prefixed with `'`. A download that
/// ends early (a database failure mid-export) is cut off, never completed silently.
///
/// Admin keys read everything; keys with the `files` scope read one file's events with
/// `file=` (without it: 403). End-user tokens cannot read the log.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, description = "A page of events, or the CSV export",
                content((PageBody<AuditView> = "application/json"), (String = "text/csv")),
                headers(("Link" = String, description = "JSON: the next page"),
                        ("Content-Disposition" = String, description = "CSV: `attachment`"))),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = ["admin"]), ("bearer" = ["files"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Query(params): Query<AuditParams>,
) -> ApiResult<Response> {
    let filter = params.filter()?;
    let mut response = match params.format(&headers)? {
        Format::Csv => csv_download(state.audit.export(&principal, filter)?),
        Format::Json => {
            let page = params.list_params().page_request()?;
            let page = state.audit.page(&principal, &filter, &page).await?;
            pagination::respond(page, AuditView::from, &base, &uri)
        }
    };
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept"));
    Ok(response)
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// The CSV export as a download.
fn csv_download(body: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Response {
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"carafe-audit.csv\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
