//! [`TokenValidator`]: is this bearer token from an issuer we trust, for us, current, and whose
//! user is it?
//!
//! The order of the checks makes each failure precise and keeps the expensive ones last:
//! shape → algorithm (from a fixed list; `none` and HMAC never) → issuer (picks the trusted
//! issuer, so its keys and audiences apply) → signing key by `kid` (an unknown one triggers a
//! rate-limited key refresh) → the key must allow the algorithm → signature, `exp`/`nbf` (60 s
//! leeway), `aud`, `iss` → tenant pin → user claim. Tokens are never logged or echoed. A token
//! that passed is remembered until its `exp` while its issuer's keys stay the same ([`cache`]),
//! so a client sending one token with every request pays for the signature check once.

use super::IssuerConfig;
use super::cache::{self, VerifiedToken, VerifiedTokens};
use super::keys::{KeyError, KeyStore, SUPPORTED};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A JSON object (a JWT header or claims set).
type Json = Map<String, Value>;

/// Allowed clock difference for `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// Why a token was refused. The `Display` text is what the 401 says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed")]
    Malformed,
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("wrong audience")]
    WrongAudience,
    #[error("tenant mismatch")]
    TenantMismatch,
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// The user claim holds something no principal may be (see `token_principal`).
    #[error("the claim {claim} {reason}")]
    BadPrincipal { claim: String, reason: String },
    #[error("no token issuer is configured on this server")]
    NoIssuers,
}

/// Validates bearer tokens against the configured issuers.
pub struct TokenValidator {
    issuers: Vec<Arc<Issuer>>,
    verified: VerifiedTokens,
}

struct Issuer {
    config: IssuerConfig,
    keys: KeyStore,
}

impl TokenValidator {
    /// Loads every issuer's keys (once, now). Fails if any issuer's keys cannot be loaded.
    pub async fn load(configs: &[IssuerConfig]) -> Result<TokenValidator, KeyError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| KeyError::Fetch {
                source_name: "HTTP client".to_owned(),
                reason: e.to_string(),
            })?;
        let mut issuers = Vec::with_capacity(configs.len());
        for config in configs {
            let source = config.key_source().map_err(|reason| KeyError::Fetch {
                source_name: config.issuer.clone(),
                reason,
            })?;
            let keys = KeyStore::load(source, http.clone()).await?;
            issuers.push(Arc::new(Issuer {
                config: config.clone(),
                keys,
            }));
        }
        Ok(TokenValidator {
            issuers,
            verified: VerifiedTokens::new(cache::CAPACITY),
        })
    }

    /// Checks `token` (the part after `Bearer `); returns the user id.
    pub async fn validate(&self, token: &str) -> Result<String, TokenError> {
        match self.validate_cached(token) {
            Some(user) => Ok(user),
            None => self.validate_uncached(token).await,
        }
    }

    /// Every check of `token`, remembered in the cache if it passes: for a token
    /// [`TokenValidator::validate_cached`] did not find (the bearer layer asks that first).
    pub async fn validate_uncached(&self, token: &str) -> Result<String, TokenError> {
        if self.issuers.is_empty() {
            return Err(TokenError::NoIssuers);
        }
        let now = crate::http::auth::unix_now();
        let verified = self.verify(token).await?;
        let user = verified.user.clone();
        self.verified.insert(token, verified, now);
        Ok(user)
    }

    /// The user id of `token` if it passed every check before and would still pass them now
    /// (the cache of verified tokens), found without waiting for anything; `None` means only
    /// [`TokenValidator::validate`] can say.
    pub fn validate_cached(&self, token: &str) -> Option<String> {
        let now = crate::http::auth::unix_now();
        let (user, issuer) = self
            .verified
            .get(token, now, |i| self.issuers[i].keys.current())?;
        // As a full check would: keys past their age are refreshed in the background.
        self.refresh_if_stale(&self.issuers[issuer]);
        Some(user)
    }

    fn refresh_if_stale(&self, issuer: &Arc<Issuer>) {
        if issuer.keys.stale() {
            // Refresh in the background; this request uses the keys we have.
            let issuer = Arc::clone(issuer);
            tokio::spawn(async move {
                issuer.keys.refresh().await;
            });
        }
    }

    /// Every check, in the order of the module docs.
    async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let (header, claims) = peek(token)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(TokenError::Malformed)?;
        let alg = SUPPORTED
            .into_iter()
            .find(|a| alg_name(*a) == alg)
            .ok_or(TokenError::UnsupportedAlgorithm)?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::MissingClaim("iss".to_owned()))?;
        let issuer_index = self
            .issuers
            .iter()
            .position(|i| i.config.issuer == iss)
            .ok_or(TokenError::WrongIssuer)?;
        let issuer = &self.issuers[issuer_index];
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(TokenError::Malformed),
        };
        self.refresh_if_stale(issuer);
        let mut keys = issuer.keys.current();
        if keys.find(kid).is_none() && issuer.keys.refresh().await {
            keys = issuer.keys.current();
        }
        let key = keys.find(kid).ok_or(TokenError::UnknownKey)?;
        if !key.algorithms.contains(&alg) {
            return Err(TokenError::UnsupportedAlgorithm);
        }

        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&issuer.config.audiences);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                    TokenError::UnsupportedAlgorithm
                }
                ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
                _ => TokenError::Malformed,
            })?;
        let claims = data.claims;
        if let Some(tenant) = &issuer.config.tenant_id {
            match claims.get("tid").and_then(Value::as_str) {
                Some(tid) if tid.eq_ignore_ascii_case(tenant) => {}
                Some(_) => return Err(TokenError::TenantMismatch),
                None => return Err(TokenError::MissingClaim("tid".to_owned())),
            }
        }
        let claim = &issuer.config.user_claim;
        let user = match claims.get(claim).and_then(Value::as_str) {
            Some(user) if !user.is_empty() => {
                crate::http::users::token_principal(issuer.config.principal_prefix.as_deref(), user)
                    .map_err(|e| TokenError::BadPrincipal {
                        claim: claim.clone(),
                        reason: e.to_string(),
                    })?
            }
            _ => return Err(TokenError::MissingClaim(claim.clone())),
        };
        // Required and checked by `decode`: a number of seconds.
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| TokenError::MissingClaim("exp".to_owned()))?;
        Ok(VerifiedToken {
            user,
            issuer: issuer_index,
            keys,
            valid_until: exp.saturating_add(LEEWAY_SECS),
        })
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::PS256 => "PS256",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        _ => "",
    }
}

/// The header and claims of a compact JWS, unverified (only to route it to its issuer).
fn peek(token: &str) -> Result<(Json, Json), TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let part = |s: &str| -> Result<Json, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
    };
    Ok((part(h)?, part(p)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_rejects_bad_shapes() {
        for t in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.e30.x",
            "e30.!!.x",
            "bnVsbA.e30.x",
        ] {
            assert_eq!(peek(t).unwrap_err(), TokenError::Malformed, "{t}");
        }
        let (h, c) = peek("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.").unwrap();
        assert_eq!(h["alg"], "none");
        assert_eq!(c["iss"], "x");
    }

    #[tokio::test]
    async fn none_and_hmac_are_refused_before_any_key_lookup() {
        let v = Arc::new(TokenValidator {
            issuers: vec![Arc::new(Issuer {
                config: IssuerConfig {
                    issuer: "x".into(),
                    audiences: vec!["a".into()],
                    jwks_file: None,
                    jwks_url: None,
                    oidc_discovery: None,
                    user_claim: "oid".into(),
                    tenant_id: None,
                    principal_prefix: None,
                },
                keys: KeyStore::empty_for_tests(),
            })],
            verified: VerifiedTokens::new(cache::CAPACITY),
        });
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for alg in ["none", "HS256", "RS512", "EdDSA"] {
            let t = format!(
                "{}.{}.",
                b64(&format!(r#"{{"alg":"{alg}"}}"#)),
                b64(r#"{"iss":"x"}"#)
            );
            assert_eq!(
                v.validate(&t).await.unwrap_err(),
                TokenError::UnsupportedAlgorithm
            );
        }
        let t = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"iss":"y"}"#)
        );
        assert_eq!(v.validate(&t).await.unwrap_err(), TokenError::WrongIssuer);
        let t = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256","kid":"k"}"#),
            b64(r#"{"iss":"x"}"#)
        );
        assert_eq!(v.validate(&t).await.unwrap_err(), TokenError::UnknownKey);
    }
}
