//! Who is calling, and whether they may make this call.
//!
//! The transport authenticates (TLS client certificate today, bearer tokens later) and puts a
//! [`Caller`] into the request's extensions; a request without one is anonymous. Authorization
//! is decided here from one table, [`access`], which maps each route to the lowest built-in
//! role that may call it, and from the caller's role as stored in the ledger's governance table
//! (read on every request, so a role change takes effect on the next call).

use crate::error::ApiError;
use crate::routes::paths;
use crate::users::{Role, UserRecord};
use axum::http::Method;
use ledger_core::entry::tables;
use ledger_store::Ledger;

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

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, authenticated or not (the identity service).
    Public,
    /// Users holding at least this role.
    AtLeast(Role),
}

/// The authorization policy: the lowest role allowed to call `method` on the route template
/// `route`. Routes missing here are refused to everyone, so forgetting one fails closed.
pub fn access(method: &Method, route: &str) -> Option<Access> {
    use paths::*;
    let reader = Some(Access::AtLeast(Role::Reader));
    match (method.as_str(), route) {
        ("GET", LEDGER_IDENTITY) => Some(Access::Public),
        ("GET", CONSTITUTION | MEMBERS | ENCLAVE_QUOTES | COLLECTIONS) => reader,
        ("GET", TRANSACTIONS | TRANSACTION | CURRENT | RECEIPT | STATUS) => reader,
        ("POST", TRANSACTIONS) => Some(Access::AtLeast(Role::Contributor)),
        ("GET" | "PATCH" | "DELETE", USER) => Some(Access::AtLeast(Role::Administrator)),
        _ => None,
    }
}

/// The caller's role, read from the ledger's users table.
pub fn role_of(ledger: &Ledger, user_id: &str) -> Result<Option<Role>, ApiError> {
    Ok(ledger
        .governance(tables::USERS, user_id)?
        .and_then(|v| UserRecord::parse(&v))
        .and_then(|r| r.role()))
}

/// Decides whether `caller` may call `method path` (route template `route`).
pub fn authorize(
    ledger: &Ledger,
    caller: &Caller,
    method: &Method,
    route: &str,
    path: &str,
) -> Result<(), ApiError> {
    let required = match access(method, route) {
        Some(Access::Public) => return Ok(()),
        Some(Access::AtLeast(role)) => role,
        None => {
            return Err(ApiError::Internal(format!(
                "{method} {route} has no authorization rule; refusing it"
            )));
        }
    };
    let user_id = caller.user_id().ok_or(ApiError::Unauthenticated)?;
    let denied =
        |why: String| ApiError::NotAllowed(format!("Not allowed to call {method} {path}: {why}"));
    match role_of(ledger, user_id)? {
        Some(role) if role >= required => Ok(()),
        Some(role) => Err(denied(format!(
            "user {user_id} has the role {}, and this call needs {} or higher.",
            role.as_str(),
            required.as_str()
        ))),
        None => {
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
