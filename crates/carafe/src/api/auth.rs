//! Who is calling. `Principal` reads `Authorization: Bearer …` — an API key (`ck_…`) or an
//! end-user token — and handlers state the scope they need with `require`. `StreamPrincipal`
//! additionally accepts `?access_token=` for endpoints browsers open with `EventSource`, which
//! cannot set headers; only end-user tokens are accepted there, so API keys never travel in
//! URLs (and so never land in access logs).

use axum::extract::FromRequestParts;
use carafe_core::keys::{Scope, Scopes};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};

use super::error::{ApiError, ApiResult};
use crate::access::keys::PREFIX;
use crate::access::tokens::VerifyError;
use crate::api::state::AppState;
use crate::context::Principal;

/// Parses a list of scope names, naming the bad one by its JSON pointer (`/scopes/1`).
pub fn parse_scopes(raw: &[String]) -> ApiResult<Scopes> {
    let mut scopes = Scopes::empty();
    for (i, name) in raw.iter().enumerate() {
        let scope = name
            .parse::<Scope>()
            .map_err(|e| ApiError::invalid(format!("/scopes/{i}"), e.to_string()))?;
        scopes = scopes.with(scope);
    }
    Ok(scopes)
}

fn unauthenticated(code: &'static str, detail: &'static str, error: Option<&str>) -> ApiError {
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"carafe\", error=\"{e}\""),
        None => "Bearer realm=\"carafe\"".to_owned(),
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code)
        .detail(detail)
        .header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).expect("ascii"),
        )
}

fn bearer(parts: &Parts) -> ApiResult<Option<&str>> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err(unauthenticated(
            "unauthenticated",
            "use `Authorization: Bearer <api key or token>`",
            Some("invalid_request"),
        )),
    }
}

async fn authenticate(
    state: &AppState,
    credential: &str,
    keys_allowed: bool,
) -> ApiResult<Principal> {
    if credential.starts_with(PREFIX) {
        if !keys_allowed {
            return Err(unauthenticated(
                "invalid_credentials",
                "API keys are not accepted in URLs; send them in the Authorization header",
                Some("invalid_request"),
            ));
        }
        return match state.keys.authenticate(credential).await? {
            Some(key) => Ok(Principal::Key(key)),
            None => Err(invalid()),
        };
    }
    match state.tokens.verify(credential) {
        Ok(user) => Ok(Principal::User(user)),
        Err(VerifyError::Expired) => Err(unauthenticated(
            "token_expired",
            "the token has expired; ask your application for a new one",
            Some("invalid_token"),
        )),
        Err(VerifyError::Invalid) => Err(invalid()),
    }
}

fn invalid() -> ApiError {
    unauthenticated(
        "invalid_credentials",
        "the API key or token is not valid",
        Some("invalid_token"),
    )
}

fn missing() -> ApiError {
    unauthenticated(
        "unauthenticated",
        "this needs an API key or a token in `Authorization: Bearer …`",
        None,
    )
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let credential = bearer(parts)?.ok_or_else(missing)?;
        let principal = authenticate(state, credential, true).await?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

/// A principal for streaming endpoints: the header as usual, or `?access_token=<user token>`.
#[derive(Debug, Clone)]
pub struct StreamPrincipal(pub Principal);

impl FromRequestParts<AppState> for StreamPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return Principal::from_request_parts(parts, state)
                .await
                .map(StreamPrincipal);
        }
        let token = parts.uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "access_token")
                .map(|(_, v)| v.into_owned())
        });
        let token = token.ok_or_else(missing)?;
        authenticate(state, &token, false)
            .await
            .map(StreamPrincipal)
    }
}
