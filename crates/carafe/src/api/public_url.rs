//! Absolute URLs (for `Location` and `Link`) come from the configured `public_url`, or from
//! `X-Forwarded-Proto`/`X-Forwarded-Host` when the peer is a trusted proxy, or else from the
//! address the server bound. The `Host` header of an untrusted client is never used: it would
//! let anyone make Carafe hand out links to their own site.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;
use url::Url;

use crate::api::state::AppState;
use crate::context::BaseUrl;

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(url) = &state.config.public_url {
            return Ok(BaseUrl(url.clone()));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let trusted = peer.is_some_and(|ip| {
            state
                .config
                .trusted_proxies
                .iter()
                .any(|p| p.contains(ip.to_canonical()))
        });
        if trusted && let Some(url) = forwarded(parts) {
            return Ok(BaseUrl(url));
        }
        Ok(BaseUrl(state.fallback_base.clone()))
    }
}

/// The URL the proxy says the client used; `None` unless both headers are present and sane.
fn forwarded(parts: &Parts) -> Option<Url> {
    let first = |name: &str| {
        parts
            .headers
            .get(name)?
            .to_str()
            .ok()?
            .split(',')
            .next()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let proto = first("x-forwarded-proto")?.to_ascii_lowercase();
    let host = first("x-forwarded-host")?;
    if !matches!(proto.as_str(), "http" | "https")
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return None;
    }
    Url::parse(&format!("{proto}://{host}/")).ok()
}
