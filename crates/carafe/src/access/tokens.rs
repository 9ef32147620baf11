//! End-user tokens: short-lived HS256 JWTs (`aud` = `carafe`) that an application's backend
//! mints for its users, so browsers and apps can talk to Carafe directly with only their own
//! rights. The signing key is derived from the server secret; expiry is always enforced.

use std::time::Duration;

use carafe_core::keys::{Scope, Scopes};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Settings as Auth;
pub use crate::context::User;
use crate::secrets::Secrets;

pub const AUDIENCE: &str = "carafe";
pub const ISSUER: &str = "carafe";
/// Clock skew tolerated when checking `exp`, in seconds.
const LEEWAY_SECS: u64 = 5;
/// Longest user id accepted (ids are the application's own, opaque to Carafe).
pub const MAX_USER_ID_CHARS: usize = 255;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    aud: String,
    iss: String,
    iat: i64,
    exp: i64,
    /// Space-separated scopes, as in OAuth.
    #[serde(default)]
    scope: String,
    jti: String,
}

#[derive(Debug, Clone)]
pub struct UserToken {
    pub token: String,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MintError {
    #[error("user_id must be 1 to 255 characters without control characters")]
    BadUserId,
    #[error("ttl must be at least one second")]
    TtlTooShort,
    #[error("ttl may be at most {max_seconds} seconds")]
    TtlTooLong { max_seconds: u64 },
    #[error("end-user tokens cannot carry the admin scope")]
    AdminScope,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerifyError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid")]
    Invalid,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl Tokens {
    pub fn new(secrets: &Secrets, auth: &Auth) -> Self {
        let key = secrets.token_key();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.leeway = LEEWAY_SECS;
        Tokens {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            validation,
            default_ttl: auth.token_default_ttl.0,
            max_ttl: auth.token_max_ttl.0,
        }
    }

    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    pub fn mint(
        &self,
        user_id: &str,
        ttl: Option<Duration>,
        scopes: Scopes,
    ) -> Result<UserToken, MintError> {
        let chars = user_id.chars().count();
        if chars == 0 || chars > MAX_USER_ID_CHARS || user_id.chars().any(char::is_control) {
            return Err(MintError::BadUserId);
        }
        let ttl = ttl.unwrap_or(self.default_ttl);
        if ttl < Duration::from_secs(1) {
            return Err(MintError::TtlTooShort);
        }
        if ttl > self.max_ttl {
            return Err(MintError::TtlTooLong {
                max_seconds: self.max_ttl.as_secs(),
            });
        }
        if scopes.contains_exactly(Scope::Admin) {
            return Err(MintError::AdminScope);
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let exp = now + ttl.as_secs() as i64;
        let claims = Claims {
            sub: user_id.to_owned(),
            aud: AUDIENCE.into(),
            iss: ISSUER.into(),
            iat: now,
            exp,
            scope: scopes.to_string(),
            jti: uuid::Uuid::now_v7().simple().to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail");
        Ok(UserToken {
            token,
            expires_at: OffsetDateTime::from_unix_timestamp(exp).expect("exp is in range"),
        })
    }

    pub fn verify(&self, token: &str) -> Result<User, VerifyError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                _ => VerifyError::Invalid,
            })?;
        let claims = data.claims;
        let scopes = Scopes::parse_list(&claims.scope).map_err(|_| VerifyError::Invalid)?;
        if scopes.contains_exactly(Scope::Admin) || claims.sub.is_empty() {
            return Err(VerifyError::Invalid);
        }
        Ok(User {
            id: claims.sub,
            scopes,
            expires_at: OffsetDateTime::from_unix_timestamp(claims.exp)
                .map_err(|_| VerifyError::Invalid)?,
        })
    }
}

#[cfg(test)]
mod tests;
