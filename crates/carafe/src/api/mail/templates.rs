//! HTTP handlers for mail templates (`mail` scope): put a locale's variant (a new version),
//! read the latest or a given version, list templates and versions, delete, and preview a
//! render with sample data.

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;
use carafe_core::keys::Scope;
use carafe_core::templates::{TemplateVariant, TemplateVersion};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::views::TemplateRefView;
use crate::api::error::{ApiResult, Problem};
use crate::api::json::Json;
use crate::api::pagination::{self, ListParams};
use crate::api::query::{Path, Query};
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::{BaseUrl, Principal};
use crate::mail::build::html_to_text;
use crate::mail::templates::{TemplatePut, TemplateUse};

/// A template to render a mail from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UseTemplate {
    pub name: String,
    /// A version number; the latest when absent.
    pub version: Option<u32>,
    /// Tried first, then its language, then `mail.default_locale` (`ko-KR → ko → en`).
    pub locale: Option<String>,
    /// The template's variables (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

impl UseTemplate {
    pub fn into_use(self) -> TemplateUse {
        TemplateUse {
            name: self.name,
            version: self.version,
            locale: self.locale,
            data: self.data.unwrap_or_else(|| serde_json::json!({})),
        }
    }
}

/// One locale's sources.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariantView {
    pub locale: String,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub layout: Option<String>,
}

impl From<TemplateVariant> for VariantView {
    fn from(v: TemplateVariant) -> Self {
        VariantView {
            locale: v.locale,
            subject: v.subject,
            text: v.text,
            html: v.html,
            layout: v.layout,
        }
    }
}

/// One immutable version of a template.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    pub version: u32,
    /// The locale this version changed.
    pub changed: String,
    pub locales: Vec<String>,
    pub variants: Vec<VariantView>,
    /// Who created this version.
    pub actor: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<TemplateVersion> for TemplateView {
    fn from(t: TemplateVersion) -> Self {
        TemplateView {
            name: t.name,
            version: t.version,
            changed: t.changed,
            locales: t.variants.iter().map(|v| v.locale.clone()).collect(),
            variants: t.variants.into_iter().map(Into::into).collect(),
            actor: t.actor,
            created_at: t.created_at,
        }
    }
}

/// A locale's variant of a template. Sources are MiniJinja (Jinja2) templates.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTemplate {
    pub subject: String,
    /// Plain text; derived from `html` when absent.
    pub text: Option<String>,
    /// HTML, autoescaped.
    pub html: Option<String>,
    /// `en`, `ko-KR`…; `mail.default_locale` when absent.
    pub locale: Option<String>,
    /// Another template whose parts receive this one's output as `{{ content }}`.
    pub layout: Option<String>,
}

/// Put a locale's variant: creates the next version (the other locales carried forward).
#[utoipa::path(put, path = "/api/v1/templates/{name}", tag = "mail",
    params(("name" = String, Path)), request_body = PutTemplate,
    responses((status = 201, body = TemplateView, headers(("Location" = String))),
              (status = 422, body = Problem, description = "invalid fields, or `template_error` with the line and column")),
    security(("bearer" = ["mail"])))]
pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    request_id: Option<axum::Extension<RequestId>>,
    base: BaseUrl,
    Path(name): Path<String>,
    Json(body): Json<PutTemplate>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let actor = principal.actor(request_id.as_deref().map(RequestId::as_str));
    let put = TemplatePut {
        subject: body.subject,
        text: body.text,
        html: body.html,
        locale: body.locale,
        layout: body.layout,
    };
    let version = state.mail.put_template(&name, put, &actor).await?;
    let location = base.join(&format!(
        "/api/v1/templates/{}/versions/{}",
        version.name, version.version
    ));
    crate::api::json::located(StatusCode::CREATED, &location, TemplateView::from(version))
}

/// Templates, each at its latest version, in name order.
#[utoipa::path(get, path = "/api/v1/templates", tag = "mail", params(ListParams),
    responses((status = 200, body = inline(crate::api::pagination::PageBody<TemplateView>))),
    security(("bearer" = ["mail"])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let page = state.mail.templates(&params.page_request()?).await?;
    Ok(pagination::respond(page, TemplateView::from, &base, &uri))
}

/// A template's latest version.
#[utoipa::path(get, path = "/api/v1/templates/{name}", tag = "mail", params(("name" = String, Path)),
    responses((status = 200, body = TemplateView), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<TemplateView>> {
    principal.require_key(Scope::Mail)?;
    Ok(axum::Json(state.mail.template(&name, None).await?.into()))
}

/// Delete a template with all its versions (mail already sent keeps its content).
#[utoipa::path(delete, path = "/api/v1/templates/{name}", tag = "mail", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    principal.require_key(Scope::Mail)?;
    state.mail.delete_template(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A template's versions, newest first.
#[utoipa::path(get, path = "/api/v1/templates/{name}/versions", tag = "mail",
    params(("name" = String, Path), ListParams),
    responses((status = 200, body = inline(crate::api::pagination::PageBody<TemplateView>)),
              (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn versions(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    OriginalUri(uri): OriginalUri,
    Path(name): Path<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<Response> {
    principal.require_key(Scope::Mail)?;
    let page = state
        .mail
        .template_versions(&name, &params.page_request()?)
        .await?;
    Ok(pagination::respond(page, TemplateView::from, &base, &uri))
}

/// One version of a template.
#[utoipa::path(get, path = "/api/v1/templates/{name}/versions/{version}", tag = "mail",
    params(("name" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = TemplateView), (status = 404, body = Problem)),
    security(("bearer" = ["mail"])))]
pub async fn version(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, version)): Path<(String, u32)>,
) -> ApiResult<axum::Json<TemplateView>> {
    principal.require_key(Scope::Mail)?;
    Ok(axum::Json(
        state.mail.template(&name, Some(version)).await?.into(),
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    pub version: Option<u32>,
    pub locale: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

/// What a render produced: the message's subject, text and HTML.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewView {
    pub subject: String,
    /// As sent: derived from the HTML when the template has no text part.
    pub text: Option<String>,
    pub html: Option<String>,
    pub template: TemplateRefView,
}

/// Render a template with sample data, as a mail would be (nothing is sent or stored).
#[utoipa::path(post, path = "/api/v1/templates/{name}/preview", tag = "mail",
    params(("name" = String, Path)), request_body = PreviewBody,
    responses((status = 200, body = PreviewView),
              (status = 422, body = Problem, description = "`template_error` with the line and column")),
    security(("bearer" = ["mail"])))]
pub async fn preview(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(body): Json<PreviewBody>,
) -> ApiResult<axum::Json<PreviewView>> {
    principal.require_key(Scope::Mail)?;
    let what = UseTemplate {
        name,
        version: body.version,
        locale: body.locale,
        data: body.data,
    }
    .into_use();
    let out = state.mail.render(&what, "").await?;
    let text = out.text.or_else(|| out.html.as_deref().map(html_to_text));
    Ok(axum::Json(PreviewView {
        subject: out.subject,
        text,
        html: out.html,
        template: out.template.into(),
    }))
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put, get, delete))
        .routes(routes!(versions))
        .routes(routes!(version))
        .routes(routes!(preview))
}
