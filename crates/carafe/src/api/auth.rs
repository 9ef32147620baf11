//! Who is calling. `Principal` reads `Authorization: Bearer …` — an API key (`ck_…`) or an
//! end-user token — and handlers state the scope they need with `require`. `StreamPrincipal`
//! additionally accepts `?access_token=` for endpoints browsers open with `EventSource`, which
//! cannot set headers; only end-user tokens are accepted there, so API keys never travel in
//! URLs (and so never land in access logs).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use carafe_core::keys::{ApiKey, Scope, Scopes};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};

use super::error::{ApiError, ApiResult};
use super::request_id::RequestId;
use crate::audit::Actor;
use crate::keys::PREFIX;
use crate::state::AppState;
use crate::tokens::{User, VerifyError};

#[derive(Debug, Clone)]
pub enum Principal {
    Key(Arc<ApiKey>),
    User(User),
}

impl Principal {
    pub fn scopes(&self) -> Scopes {
        match self {
            Principal::Key(k) => k.scopes,
            Principal::User(u) => u.scopes,
        }
    }

    /// 403 unless the caller holds `scope` (or `admin`).
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.scopes().allows(scope) {
            return Ok(());
        }
        let challenge =
            format!("Bearer realm=\"carafe\", error=\"insufficient_scope\", scope=\"{scope}\"");
        Err(ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope")
            .detail(format!("this needs the `{scope}` scope"))
            .with("required_scope", scope.as_str())
            .header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&challenge).expect("ascii"),
            ))
    }

    /// 403 unless the caller is an API key holding `scope`: for actions an application's
    /// backend takes, never its end users.
    pub fn require_key(&self, scope: Scope) -> ApiResult<()> {
        self.require(scope)?;
        match self {
            Principal::Key(_) => Ok(()),
            Principal::User(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "api_key_required")
                .detail("this needs a server API key; end-user tokens cannot do it")),
        }
    }

    /// Whether the caller may see a resource owned by `owner`: any key with `scope`, or the
    /// owning user with `scope`.
    pub fn may_see(&self, scope: Scope, owner: Option<&str>) -> bool {
        match self {
            Principal::Key(k) => k.scopes.allows(scope),
            Principal::User(u) => u.scopes.allows(scope) && owner == Some(u.id.as_str()),
        }
    }

    /// The caller as the reserved-queue rule sees it.
    pub fn queue_caller(&self) -> crate::jobs::access::Caller {
        match self {
            Principal::Key(k) => crate::jobs::access::Caller::from_key_scopes(k.scopes),
            Principal::User(_) => crate::jobs::access::Caller::User,
        }
    }

    /// The audit actor id: `key:<id>` or `user:<id>`.
    pub fn actor_id(&self) -> String {
        match self {
            Principal::Key(k) => format!("key:{}", k.id),
            Principal::User(u) => format!("user:{}", u.id),
        }
    }

    /// The audit actor for this caller, acting within the given request.
    pub fn actor(&self, request_id: Option<&RequestId>) -> Actor {
        Actor {
            id: self.actor_id(),
            request_id: request_id.map(|r| r.as_str().to_owned()),
        }
    }
}

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
