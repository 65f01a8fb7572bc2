//! Who is calling: the [`Caller`] extractor and the tokens behind it.
//!
//! A request authenticates with either a Bearer access token (a JWT signed with HS256 by this
//! server, 15 minutes) or an API key (`Authorization: Bearer myk_...` or `X-Api-Key: myk_...`).
//! Handlers then say what they need: `caller.require_role(Role::Operator)?`,
//! `caller.require_scope(Scope::Ingest)?`, or `caller.require_any(Role::Viewer, Scope::Read)?`
//! (a user with the role, or a key with the scope). An admin user has every scope.
//!
//! This module never accepts another algorithm than HS256 (`alg: none` included), never
//! trusts a role written in a token (the user is read from the store on every request, so a
//! disabled user or a changed role takes effect at once), and never logs a token or a key.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::model::{Role, Scope};
use crate::store::{StoreError, hash_token};

/// The prefix of every API key, so that keys are recognisable in logs and secret scanners.
pub const API_KEY_PREFIX: &str = "myk_";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's name.
    pub sub: String,
    /// The user's id.
    pub uid: i64,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// Always `access`; refresh tokens are opaque and never JWTs.
    pub typ: String,
    /// The user's session version when the token was issued: signing out raises it, and the
    /// token stops working.
    #[serde(default)]
    pub sv: i64,
}

/// The HS256 key pair made from the configured secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(<hidden>)")
    }
}

impl JwtKeys {
    /// Keys from a secret (the caller checked its length).
    pub fn from_secret(secret: &[u8]) -> JwtKeys {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// Signs an access token for `user` valid for `ttl` from `now`.
    pub fn issue(
        &self,
        user: &str,
        uid: i64,
        session_version: i64,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: user.to_owned(),
            uid,
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
            typ: "access".to_owned(),
            sv: session_version,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies a token's signature (HS256 only) and its expiry against `now` (the app's
    /// clock, so tests can move time). Any failure is a 401 that does not say which check
    /// failed beyond "expired".
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        // Expiry is checked below against the app clock, not the system clock.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|s| (*s).to_owned()).collect();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| ApiError::new(ErrorCode::InvalidToken, "the access token is invalid"))?;
        if data.claims.typ != "access" {
            return Err(ApiError::new(
                ErrorCode::InvalidToken,
                "the access token is invalid",
            ));
        }
        if data.claims.exp <= now.timestamp() {
            return Err(ApiError::new(
                ErrorCode::TokenExpired,
                "the access token expired; refresh it",
            ));
        }
        Ok(data.claims)
    }
}

/// `len` random bytes as lowercase hex (tokens, key material, CSRF values, families).
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A new API key: `myk_` and 64 hex digits (256 bits).
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", random_hex(32))
}

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// A signed-in user (access token).
    User {
        /// The user's id.
        id: i64,
        /// The user's current role.
        role: Role,
    },
    /// An API key.
    ApiKey {
        /// The key's id.
        id: i64,
        /// What the key may do.
        scopes: Vec<Scope>,
        /// The devices it is limited to; `None`: every device.
        devices: Option<Vec<String>>,
    },
}

/// The authenticated caller of a request. Extracting it answers 401 when credentials are
/// missing or invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user's name, or `key:NAME` for an API key (as recorded in the audit log).
    pub name: String,
    /// User or key.
    pub kind: CallerKind,
}

impl Caller {
    /// The role of a user caller; `None` for API keys.
    pub fn role(&self) -> Option<Role> {
        match &self.kind {
            CallerKind::User { role, .. } => Some(*role),
            CallerKind::ApiKey { .. } => None,
        }
    }

    /// Whether this caller may act with `scope`: a key that carries it, or an admin user.
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.kind {
            CallerKind::User { role, .. } => *role == Role::Admin,
            CallerKind::ApiKey { scopes, .. } => scopes.contains(&scope),
        }
    }

    /// Whether this caller may push readings for, and read, `device`: a user, or a key that
    /// is not limited to devices or lists it.
    pub fn may_use_device(&self, device: &str) -> bool {
        match &self.kind {
            CallerKind::User { .. } => true,
            CallerKind::ApiKey { devices, .. } => devices
                .as_ref()
                .is_none_or(|list| list.iter().any(|d| d == device)),
        }
    }

    /// 403 unless the caller may read `device` ([`Caller::may_use_device`]).
    pub fn require_device(&self, device: &str) -> Result<(), ApiError> {
        if self.may_use_device(device) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Forbidden, not_scoped(device)))
        }
    }

    /// Whether this caller is a user whose role includes `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.role().is_some_and(|r| r.includes(role))
    }

    /// 403 unless the caller is a user whose role includes `role` (API keys never pass).
    pub fn require_role(&self, role: Role) -> Result<(), ApiError> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this needs the {role} role"),
            ))
        }
    }

    /// 403 unless the caller may act with `scope` (a key with it, or an admin user).
    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this needs the {scope} scope"),
            ))
        }
    }

    /// 403 unless the caller is a user with `role` or a key with `scope`.
    pub fn require_any(&self, role: Role, scope: Scope) -> Result<(), ApiError> {
        if self.has_role(role) || self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this needs the {role} role or an API key with the {scope} scope"),
            ))
        }
    }
}

/// The credential a request carries, before it is checked.
enum Credential<'a> {
    Jwt(&'a str),
    ApiKey(&'a str),
}

fn credential(headers: &HeaderMap) -> Result<Option<Credential<'_>>, ApiError> {
    if let Some(value) = headers.get("x-api-key") {
        let key = value
            .to_str()
            .map_err(|_| ApiError::new(ErrorCode::InvalidApiKey, "the API key is invalid"))?;
        return Ok(Some(Credential::ApiKey(key.trim())));
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidAuthorization,
            "the Authorization header is invalid",
        )
    })?;
    let Some((scheme, token)) = text.trim().split_once(' ') else {
        return Err(ApiError::new(
            ErrorCode::InvalidAuthorization,
            "expected `Authorization: Bearer TOKEN`",
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::new(
            ErrorCode::InvalidAuthorization,
            "expected `Authorization: Bearer TOKEN`",
        ));
    }
    let token = token.trim();
    if token.starts_with(API_KEY_PREFIX) {
        Ok(Some(Credential::ApiKey(token)))
    } else {
        Ok(Some(Credential::Jwt(token)))
    }
}

/// How old `last_used_at` may get before a request writes it again (saves a write per call).
const TOUCH_EVERY: Duration = Duration::minutes(1);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let now = state.now();
        let caller = match credential(&parts.headers)? {
            None => {
                return Err(ApiError::new(
                    ErrorCode::Unauthenticated,
                    "sign in first: send `Authorization: Bearer TOKEN` or `X-Api-Key`",
                ));
            }
            Some(Credential::Jwt(token)) => {
                let claims = state.settings().auth.keys.verify(token, now)?;
                let user = match state.store().get_user(claims.uid).await {
                    Ok(user) => user,
                    Err(StoreError::NotFound { .. }) => {
                        return Err(ApiError::new(
                            ErrorCode::InvalidToken,
                            "the access token is invalid",
                        ));
                    }
                    Err(e) => return Err(e.into()),
                };
                // A disabled user, a renamed one, or one who signed out since.
                if user.disabled || user.name != claims.sub || user.session_version != claims.sv {
                    return Err(ApiError::new(
                        ErrorCode::InvalidToken,
                        "the access token is invalid",
                    ));
                }
                Caller {
                    name: user.name,
                    kind: CallerKind::User {
                        id: user.id,
                        role: user.role,
                    },
                }
            }
            Some(Credential::ApiKey(key)) => {
                let invalid = || ApiError::new(ErrorCode::InvalidApiKey, "the API key is invalid");
                if !key.starts_with(API_KEY_PREFIX) {
                    return Err(invalid());
                }
                let Some(api_key) = state.store().find_api_key_by_hash(&hash_token(key)).await?
                else {
                    return Err(invalid());
                };
                if api_key.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY)
                    && let Err(e) = state.store().touch_api_key(api_key.id, now).await
                {
                    // Not worth failing the request for; the key itself is valid.
                    tracing::warn!(key_id = api_key.id, error = %e, "record api key use");
                }
                Caller {
                    name: format!("key:{}", api_key.name),
                    kind: CallerKind::ApiKey {
                        id: api_key.id,
                        scopes: api_key.scopes,
                        devices: api_key.devices,
                    },
                }
            }
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// Why a key limited to devices may not use `device` (a 403, or one refused ingest item).
pub fn not_scoped(device: &str) -> String {
    format!("this API key is not scoped to device {device}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_token_should_verify_until_it_expires() {
        let keys = JwtKeys::from_secret(&[7u8; 32]);
        let token = keys
            .issue("ana", 1, 0, t0(), Duration::minutes(15))
            .unwrap();
        let claims = keys.verify(&token, t0() + Duration::minutes(14)).unwrap();
        assert_eq!(claims.sub, "ana");
        let err = keys
            .verify(&token, t0() + Duration::minutes(15))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::TokenExpired);
    }

    #[test]
    fn a_token_signed_with_another_key_should_be_refused() {
        let ours = JwtKeys::from_secret(&[7u8; 32]);
        let theirs = JwtKeys::from_secret(&[8u8; 32]);
        let token = theirs
            .issue("ana", 1, 0, t0(), Duration::minutes(15))
            .unwrap();
        assert_eq!(
            ours.verify(&token, t0()).unwrap_err().code,
            ErrorCode::InvalidToken
        );
    }

    #[test]
    fn api_keys_should_be_prefixed_and_long() {
        let key = new_api_key();
        assert!(key.starts_with(API_KEY_PREFIX));
        assert_eq!(key.len(), API_KEY_PREFIX.len() + 64);
        assert_ne!(key, new_api_key());
    }
}
