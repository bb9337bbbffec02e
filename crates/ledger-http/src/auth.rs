//! Who is calling, and whether they may make this call.
//!
//! The transport authenticates (TLS client certificate today, bearer tokens later) and puts a
//! [`Caller`] into the request's extensions; a request without one is anonymous. Authorization
//! is decided here from one table, [`access`], which maps each route to the action it needs
//! (vocabulary and built-in roles in [`crate::roles`]), and from the caller's roles as stored
//! in the ledger's governance tables (read on every request, so a change to a user or a
//! user-defined role takes effect on the next call). A caller may do what any of its roles
//! allows.

use crate::error::ApiError;
use crate::roles;
use crate::routes::paths;
use crate::users::{Role, UserRecord};
use axum::http::Method;
use ledger_core::entry::tables;
use ledger_store::LedgerHandle;

/// The authenticated identity of a request, inserted as a request extension by the transport.
/// A request without this extension is [`Caller::Anonymous`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A TLS client certificate; `fingerprint` is [`certificate_fingerprint`] of its DER.
    Certificate {
        fingerprint: String,
    },
    /// A verified bearer token (JWT); `user_id` is its configured user claim (`oid` by default).
    Token {
        user_id: String,
    },
    Anonymous,
}

impl Caller {
    /// The ACL user id of the caller, if authenticated.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Caller::Certificate { fingerprint } => Some(fingerprint),
            Caller::Token { user_id } => Some(user_id),
            Caller::Anonymous => None,
        }
    }
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
        ("POST", TRANSACTIONS) => TRANSACTIONS_WRITE,
        ("GET", USER | LEDGER_USER | USERS | LEDGER_USERS) => USERS_READ,
        ("PATCH", USER | LEDGER_USER) => USERS_WRITE,
        ("DELETE", USER | LEDGER_USER) => USERS_DELETE,
        ("GET", ROLES) => ROLES_READ,
        ("PUT" | "PATCH", ROLES) => ROLES_WRITE,
        ("DELETE", ROLES) => ROLES_DELETE,
        (m, route) if route.starts_with("/app/userDefinedEndpoints") => match m {
            "GET" => UDE_READ,
            "PUT" | "PATCH" => UDE_WRITE,
            _ => return None,
        },
        (m, route) if route.starts_with("/app/userDefinedFunctions") => match m {
            "GET" => UDF_READ,
            "PUT" | "POST" => UDF_WRITE,
            "DELETE" => UDF_DELETE,
            _ => return None,
        },
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
    let user_id = caller.user_id().ok_or(ApiError::Unauthenticated)?;
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
    fn fingerprint_format() {
        let fp = certificate_fingerprint(b"");
        // SHA-256 of the empty string.
        assert!(fp.starts_with("E3:B0:C4:42:98:FC:1C:14"));
        assert_eq!(fp.len(), 95);
    }
}
