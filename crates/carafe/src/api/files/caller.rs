//! Who asks, as the files capability is told it: the principal, and the origin its changes are
//! recorded under in the audit log (the actor within this request, the client's address and
//! user agent).

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::api::client::Client;
use crate::api::error::ApiError;
use crate::api::request_id::RequestId;
use crate::api::state::AppState;
use crate::context::{Origin, Principal};

#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub origin: Origin,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let Ok(client) = Client::from_request_parts(parts, state).await;
        let request_id = parts.extensions.get::<RequestId>().map(RequestId::as_str);
        let origin = Origin {
            actor: principal.actor(request_id),
            ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client.user_agent,
        };
        Ok(Caller { principal, origin })
    }
}
