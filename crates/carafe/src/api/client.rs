//! Where a request comes from, for the audit log: the client's IP address (the proxy's
//! `X-Forwarded-For` is believed only when the peer is a trusted proxy) and its user agent.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use http::header;
use http::request::Parts;

use crate::api::state::AppState;

/// User agents longer than this are cut.
const MAX_USER_AGENT: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_canonical());
        let trusted = |ip: IpAddr| {
            state
                .config
                .trusted_proxies
                .iter()
                .any(|p| p.contains(ip.to_canonical()))
        };
        let mut ip = peer;
        if peer.is_some_and(trusted) {
            // The nearest address a trusted proxy did not add is the client.
            let forwarded: Vec<IpAddr> = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            if let Some(client) = forwarded.iter().rev().find(|a| !trusted(**a)) {
                ip = Some(*client);
            } else if let Some(first) = forwarded.first() {
                ip = Some(*first);
            }
        }
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
        Ok(Client { ip, user_agent })
    }
}
