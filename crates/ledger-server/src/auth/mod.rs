//! Bearer-token (JWT/OIDC) users, the way Entra ID authenticates callers of Azure confidential
//! ledger: `Authorization: Bearer <JWT>` next to (and overriding) TLS client certificates.
//!
//! Why it lives here and not in `ledger-http`: authentication is the transport's job (like the
//! client certificate, read by the accept loop); `ledger-http` only sees the resulting
//! [`Caller::Token`](crate::http::Caller) and authorizes it from the users table like any user.
//!
//! * [`IssuerConfig`]: one trusted issuer, as configured (`[[jwt_issuers]]` / `--jwt-*`);
//! * [`keys`]: where an issuer's signing keys come from, and their cache (refresh, backoff);
//! * [`validate`]: [`TokenValidator`], the checks a token must pass, each with its own error;
//! * [`cache`]: tokens that passed them, so a client's repeated token is verified once;
//! * [`layer`]: the middleware that turns a header into a caller, or into a 401.

pub mod cache;
pub mod keys;
pub mod layer;
pub mod validate;

pub use validate::{TokenError, TokenValidator};

use serde::Deserialize;
use std::path::PathBuf;

/// The claim that names the user unless configured otherwise (Entra ID's object id).
pub const DEFAULT_USER_CLAIM: &str = "oid";

pub fn default_user_claim() -> String {
    DEFAULT_USER_CLAIM.to_owned()
}

/// One trusted token issuer. Exactly one of `jwks_file`, `jwks_url`, `oidc_discovery` says
/// where its signing keys are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` of its tokens, e.g. `https://login.microsoftonline.com/<tenant>/v2.0`.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    #[serde(default, alias = "audience")]
    pub audiences: Vec<String>,
    /// A local JWKS file (re-read on an unknown `kid`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// An OpenID discovery document URL (`{issuer}/.well-known/openid-configuration`); its
    /// `jwks_uri` is used.
    #[serde(default)]
    pub oidc_discovery: Option<String>,
    /// The claim holding the user id. Default `oid`.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// When set, the token's `tid` must equal it.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// When set, this issuer's principals are `<principal_prefix>:<claim>`, so that they never
    /// collide with another issuer's; at most one issuer goes without (its principals are the
    /// bare claim, e.g. Entra object ids as ACL registers them, and may not hold ':').
    /// See [`crate::http::users::token_principal`].
    #[serde(default)]
    pub principal_prefix: Option<String>,
}

impl IssuerConfig {
    /// Where the keys come from; errors name the setting.
    pub fn key_source(&self) -> Result<keys::KeySource, String> {
        match (&self.jwks_file, &self.jwks_url, &self.oidc_discovery) {
            (Some(f), None, None) => Ok(keys::KeySource::File(f.clone())),
            (None, Some(u), None) => Ok(keys::KeySource::JwksUrl(u.clone())),
            (None, None, Some(u)) => Ok(keys::KeySource::Discovery(u.clone())),
            (None, None, None) => Err(format!(
                "token issuer {:?}: give one key source: jwks_file, jwks_url or oidc_discovery \
                 (--jwt-jwks-file, --jwt-jwks-url, --jwt-oidc-discovery)",
                self.issuer
            )),
            _ => Err(format!(
                "token issuer {:?}: give only one of jwks_file, jwks_url, oidc_discovery \
                 (--jwt-jwks-file, --jwt-jwks-url, --jwt-oidc-discovery)",
                self.issuer
            )),
        }
    }

    /// Checks the settings of this issuer; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.issuer.trim().is_empty() {
            return Err("a token issuer needs a non-empty issuer (--jwt-issuer)".to_owned());
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            return Err(format!(
                "token issuer {:?}: give at least one non-empty audience (--jwt-audience)",
                self.issuer
            ));
        }
        if self.user_claim.is_empty() {
            return Err(format!(
                "token issuer {:?}: user_claim must not be empty",
                self.issuer
            ));
        }
        if let Some(prefix) = &self.principal_prefix {
            crate::http::users::check_principal_prefix(prefix)
                .map_err(|e| format!("token issuer {:?}: {e}", self.issuer))?;
        }
        match self.key_source()? {
            keys::KeySource::File(_) => Ok(()),
            keys::KeySource::JwksUrl(u) | keys::KeySource::Discovery(u) => {
                keys::check_url(&u).map_err(|e| format!("token issuer {:?}: {e}", self.issuer))
            }
        }
    }
}

/// Checks that no two `issuers` can name the same principal: at most one has no
/// `principal_prefix`, and no two share one.
pub fn check_namespaces(issuers: &[IssuerConfig]) -> Result<(), String> {
    for (i, a) in issuers.iter().enumerate() {
        for b in &issuers[i + 1..] {
            match (&a.principal_prefix, &b.principal_prefix) {
                (None, None) => {
                    return Err(format!(
                        "token issuers {:?} and {:?} would share one namespace of principals \
                         (a token of one could name a user of the other): give every issuer \
                         but one a principal_prefix (its users are then registered as \
                         <principal_prefix>:<claim>)",
                        a.issuer, b.issuer
                    ));
                }
                (Some(x), Some(y)) if x == y => {
                    return Err(format!(
                        "token issuers {:?} and {:?} have the same principal_prefix {x:?}; \
                         each issuer needs its own",
                        a.issuer, b.issuer
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}
