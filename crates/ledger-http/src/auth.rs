//! Who is calling, and whether they may make this call.
//!
//! The transport authenticates (TLS client certificate, bearer token) and puts a [`Caller`]
//! into the request's extensions; a request without one is anonymous. Whether the credentials
//! are acceptable now (a certificate's validity period) is decided here, on every request.
//! Authorization is decided here from one table, [`access`], which maps each route to the
//! action it needs (vocabulary and built-in roles in [`crate::roles`]), and from the caller's
//! roles as stored in the ledger's governance tables (read on every request, so a change to a
//! user or a user-defined role takes effect on the next call). A caller may do what any of its
//! roles allows.

use crate::error::ApiError;
use crate::roles;
use crate::routes::paths;
use crate::users::{Role, UserRecord};
use axum::http::Method;
use ledger_core::entry::tables;
use ledger_core::x509::Cert;
pub use ledger_core::x509::Validity;
use ledger_store::LedgerHandle;
use std::sync::Arc;

/// The authenticated identity of a request, inserted as a request extension by the transport.
/// A request without this extension is [`Caller::Anonymous`]. Its strings are shared (`Arc`):
/// a caller is cloned into every request of its connection and again by the layers and
/// handlers that read it, where a copy of each string would cost an allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A TLS client certificate (build it with [`Caller::from_certificate`]): `fingerprint` is
    /// [`certificate_fingerprint`] of its DER, `validity` its validity period, or `None` when
    /// the DER does not parse as X.509 (refused: its period is unknown). The period is checked
    /// on every request, because a connection may outlive its certificate.
    Certificate {
        fingerprint: Arc<str>,
        validity: Option<Validity>,
        /// The certificate as PEM, for user-defined endpoints (`request.caller.cert`); `None`
        /// when the DER does not parse.
        pem: Option<Arc<str>>,
    },
    /// A verified bearer token (JWT); `user_id` is [`crate::users::token_principal`] of its
    /// issuer's user claim (`oid` by default).
    Token {
        user_id: Arc<str>,
    },
    Anonymous,
}

impl Caller {
    /// The caller a TLS client certificate (DER) makes.
    pub fn from_certificate(der: &[u8]) -> Caller {
        let cert = Cert::from_der(der).ok();
        Caller::Certificate {
            fingerprint: certificate_fingerprint(der).into(),
            validity: cert.as_ref().map(|cert| cert.validity()),
            pem: cert.map(|cert| cert.to_pem().into()),
        }
    }

    /// The ACL user id of the caller, if it presented credentials (valid or not).
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Caller::Certificate { fingerprint, .. } => Some(fingerprint),
            Caller::Token { user_id } => Some(user_id),
            Caller::Anonymous => None,
        }
    }

    /// The ACL user id of the caller if its credentials are acceptable at `now` (Unix
    /// seconds); otherwise 401 `InvalidAuthenticationInfo` saying why: none were presented, the
    /// client certificate is expired or not yet valid (as CCF refuses user certificates), or a
    /// token names a certificate user (the transport never builds one; this is the last word).
    pub fn authenticated_id(&self, now: u64) -> Result<&str, ApiError> {
        match self {
            Caller::Anonymous => Err(ApiError::Unauthenticated),
            Caller::Certificate {
                fingerprint,
                validity,
                ..
            } => {
                check_validity(validity.as_ref(), now)?;
                Ok(fingerprint)
            }
            Caller::Token { user_id } if crate::users::is_fingerprint(user_id) => {
                Err(ApiError::InvalidCredentials(
                    "A bearer token's principal has the form of a certificate fingerprint; \
                     certificate users are reached with their certificate only."
                        .into(),
                ))
            }
            Caller::Token { user_id } => Ok(user_id),
        }
    }
}

/// Refuses a client certificate outside its validity period (RFC 5280 §4.1.2.5: valid from
/// notBefore to notAfter, both inclusive). No leeway: certificates made by cledger start an
/// hour early for clock skew, and an expired one must stop working when it expires.
fn check_validity(validity: Option<&Validity>, now: u64) -> Result<(), ApiError> {
    let Some(validity) = validity else {
        return Err(ApiError::InvalidCredentials(
            "The client certificate cannot be read as an X.509 certificate, so its validity \
             period is unknown; use a certificate that standard tools can parse."
                .into(),
        ));
    };
    if now > validity.not_after_unix {
        return Err(ApiError::InvalidCredentials(format!(
            "The client certificate expired on {}. Use a current certificate; a new \
             certificate has a new fingerprint, which an administrator registers with PATCH \
             /app/users/{{userId}}.",
            rfc3339(validity.not_after_unix)
        )));
    }
    if now < validity.not_before_unix {
        return Err(ApiError::InvalidCredentials(format!(
            "The client certificate is not valid before {} (its notBefore); check the clock \
             of the machine that made it.",
            rfc3339(validity.not_before_unix)
        )));
    }
    Ok(())
}

/// `secs` since the Unix epoch as RFC 3339 UTC, e.g. `2021-03-04T00:00:00Z`.
fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} s after 1970-01-01T00:00:00Z"))
}

/// Seconds since the Unix epoch now (0 for a clock before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The ACL user id of a certificate: SHA-256 of its DER encoding as upper-case hex pairs joined
/// by `:`, like `openssl x509 -noout -fingerprint -sha256` prints it (acl-api.md §4.3).
pub fn certificate_fingerprint(der: &[u8]) -> String {
    let digest = ledger_core::hash::sha256(der);
    let mut out = String::with_capacity(95);
    for (i, b) in digest.0.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// Marks a response to a request that was authorized as a user of the ledger (not merely a
/// public route): the transport then counts the connection as authenticated (it may use the
/// connection slots kept for users, and is no longer limited as an unknown client).
#[derive(Clone, Copy, Debug)]
pub struct Authenticated;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, authenticated or not (the identity service).
    Public,
    /// Users one of whose roles allows this action (see [`crate::roles`]).
    Action(&'static str),
}

/// The authorization policy: the action needed to call `method` on the route template
/// `route`. Routes missing here are refused to everyone, so forgetting one fails closed.
pub fn access(method: &Method, route: &str) -> Option<Access> {
    use crate::roles::*;
    use paths::*;
    let action = match (method.as_str(), route) {
        ("GET", LEDGER_IDENTITY) => return Some(Access::Public),
        ("GET", CONSTITUTION | MEMBERS) => GOVERNANCE_READ,
        ("GET", ENCLAVE_QUOTES) => ENCLAVE_QUOTES_READ,
        ("GET", COLLECTIONS | COLLECTION_TAGS) => COLLECTIONS_READ,
        ("GET", TRANSACTIONS | TRANSACTION | CURRENT | RECEIPT | STATUS) => TRANSACTIONS_READ,
        ("GET", COSE_RECEIPT | CCF_COSE_RECEIPT | CONSISTENCY) => TRANSACTIONS_READ,
        ("GET", ENTRY_CHECKPOINT | CHECKPOINT) => TRANSACTIONS_READ,
        ("POST", TRANSACTIONS) => TRANSACTIONS_WRITE,
        ("GET", USER | LEDGER_USER | USERS | LEDGER_USERS) => USERS_READ,
        ("PATCH", USER | LEDGER_USER) => USERS_WRITE,
        ("DELETE", USER | LEDGER_USER) => USERS_DELETE,
        ("GET", ROLES) => ROLES_READ,
        ("PUT" | "PATCH", ROLES) => ROLES_WRITE,
        ("DELETE", ROLES) => ROLES_DELETE,
        ("GET", ENDPOINTS | RUNTIME_OPTIONS | RUNTIME_OPTIONS_ALIAS | MODULES) => UDE_READ,
        ("PUT", ENDPOINTS) => UDE_WRITE,
        ("PATCH", RUNTIME_OPTIONS | RUNTIME_OPTIONS_ALIAS) => UDE_WRITE,
        ("GET", FUNCTIONS | FUNCTION) => UDF_READ,
        ("PUT", FUNCTION) => UDF_WRITE,
        ("DELETE", FUNCTION) => UDF_DELETE,
        // Only `{id}:execute`; the handler refuses any other POST.
        ("POST", FUNCTION) => UDF_EXECUTE,
        _ => return None,
    };
    Some(Access::Action(action))
}

/// The caller's stored user record, read from the ledger's users table.
pub fn record_of(ledger: &dyn LedgerHandle, user_id: &str) -> Result<Option<UserRecord>, ApiError> {
    Ok(ledger
        .governance(tables::USERS, user_id)?
        .and_then(|v| UserRecord::parse(&v)))
}

/// The caller's highest built-in role, read from the ledger's users table.
pub fn role_of(ledger: &dyn LedgerHandle, user_id: &str) -> Result<Option<Role>, ApiError> {
    Ok(record_of(ledger, user_id)?.and_then(|r| r.role()))
}

/// Decides whether `caller` may call `method path` (route template `route`). `record_of`
/// returns a user's stored record (the gate passes a cached [`record_of`]).
pub fn authorize(
    ledger: &dyn LedgerHandle,
    caller: &Caller,
    method: &Method,
    route: &str,
    path: &str,
    record_of: impl FnOnce(&str) -> Result<Option<UserRecord>, ApiError>,
) -> Result<(), ApiError> {
    let required = match access(method, route) {
        Some(Access::Public) => return Ok(()),
        Some(Access::Action(action)) => action,
        None => {
            return Err(ApiError::Internal(format!(
                "{method} {route} has no authorization rule; refusing it"
            )));
        }
    };
    let user_id = caller.authenticated_id(unix_now())?;
    let denied =
        |why: String| ApiError::NotAllowed(format!("Not allowed to call {method} {path}: {why}"));
    match record_of(user_id)? {
        Some(record) if !record.roles.is_empty() => {
            if roles::allows(ledger, &record, required)? {
                Ok(())
            } else {
                Err(denied(format!(
                    "user {user_id} has the roles [{}], and none of them allows the action \
                     {required}.",
                    record.roles.join(", ")
                )))
            }
        }
        _ => {
            let who = match caller {
                Caller::Token { .. } => "the token's principal",
                _ => "the client certificate with fingerprint",
            };
            Err(denied(format!(
                "{who} {user_id} is not a user of this ledger \
                 (an administrator can add it with PATCH /app/users/{user_id})."
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_accepted_within_their_validity_period_only() {
        let validity = Validity {
            not_before_unix: 1_000,
            not_after_unix: 2_000,
        };
        let caller = Caller::Certificate {
            fingerprint: "F".into(),
            validity: Some(validity),
            pem: None,
        };
        for now in [1_000, 1_500, 2_000] {
            assert_eq!(caller.authenticated_id(now), Ok("F"));
        }
        let message = |now| match caller.authenticated_id(now) {
            Err(e @ ApiError::InvalidCredentials(_)) => e.message(),
            other => panic!("{other:?}"),
        };
        assert!(message(2_001).contains("expired on 1970-01-01T00:33:20Z"));
        assert!(message(999).contains("not valid before 1970-01-01T00:16:40Z"));
        let unreadable = Caller::Certificate {
            fingerprint: "F".into(),
            validity: None,
            pem: None,
        };
        assert!(matches!(
            unreadable.authenticated_id(1_500),
            Err(ApiError::InvalidCredentials(_))
        ));
        assert!(matches!(
            Caller::from_certificate(b"not a certificate"),
            Caller::Certificate { validity: None, .. }
        ));
        assert_eq!(
            Caller::Anonymous.authenticated_id(1_500),
            Err(ApiError::Unauthenticated)
        );
        let token = Caller::Token {
            user_id: ["ab"; 32].join(":").into(),
        };
        assert!(matches!(
            token.authenticated_id(1_500),
            Err(ApiError::InvalidCredentials(_))
        ));
    }

    #[test]
    fn fingerprint_format() {
        let fp = certificate_fingerprint(b"");
        // SHA-256 of the empty string.
        assert!(fp.starts_with("E3:B0:C4:42:98:FC:1C:14"));
        assert_eq!(fp.len(), 95);
    }
}
