//! Ledger users and their roles, as stored in the governance table `public:cledger.users`.
//!
//! This module is the one place the stored format is defined: key = user id (a certificate
//! fingerprint or an Entra object id), value = JSON `{"roles":["Administrator"]}`. Roles are a
//! list so that multi-role users (`/app/ledgerUsers`, 2024-12-09-preview) fit without a format
//! change; names this version does not know (future user-defined roles) are kept and ignored.
//! Every change is a governance transaction, so the ledger itself records who could do what.

use ledger_core::entry::{TableWrite, tables};
use serde::{Deserialize, Serialize};

/// The built-in ACL roles, lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Reader,
    Contributor,
    Administrator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Contributor, Role::Administrator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "Administrator",
            Role::Contributor => "Contributor",
            Role::Reader => "Reader",
        }
    }

    /// Exact, case-sensitive, as the service's enum `ConfidentialLedgerUserRoleName`.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether `name` is a built-in role's name in any letter case: such a name is never given
    /// to a user-defined role, since `administrator` holding a few actions would mislead
    /// whoever reads a user's roles.
    pub fn is_builtin_name(name: &str) -> bool {
        Role::ALL
            .iter()
            .any(|r| r.as_str().eq_ignore_ascii_case(name))
    }
}

/// The stored value of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub roles: Vec<String>,
}

impl UserRecord {
    pub fn parse(bytes: &[u8]) -> Option<UserRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// The highest built-in role held; what `assignedRole` shows and what authorization uses.
    pub fn role(&self) -> Option<Role> {
        self.roles.iter().filter_map(|r| Role::parse(r)).max()
    }
}

/// The governance write that gives `user_id` exactly `role`.
pub fn user_write(user_id: &str, role: Role) -> TableWrite {
    let record = UserRecord {
        roles: vec![role.as_str().to_owned()],
    };
    TableWrite {
        table: tables::USERS.into(),
        key: user_id.to_owned(),
        value: Some(serde_json::to_vec(&record).expect("a list of strings serializes")),
    }
}

/// The governance write that gives `user_id` exactly `roles` (multi-role users; built-in or
/// user-defined role names, duplicates dropped, order kept).
pub fn user_roles_write(user_id: &str, roles: &[String]) -> TableWrite {
    let mut names: Vec<String> = Vec::new();
    for role in roles {
        if !names.contains(role) {
            names.push(role.clone());
        }
    }
    TableWrite {
        table: tables::USERS.into(),
        key: user_id.to_owned(),
        value: Some(
            serde_json::to_vec(&UserRecord { roles: names }).expect("a list of strings serializes"),
        ),
    }
}

/// The governance write that removes `user_id`.
pub fn user_removal(user_id: &str) -> TableWrite {
    TableWrite {
        table: tables::USERS.into(),
        key: user_id.to_owned(),
        value: None,
    }
}

/// Longest user id accepted (an Entra object id is 36 bytes, a fingerprint 95).
pub const MAX_USER_ID_BYTES: usize = 256;

/// Whether `id` has the shape of a certificate fingerprint (32 hex pairs joined by `:`, in any
/// letter case): the ids of certificate users, and only theirs.
pub fn is_fingerprint(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 95
        && bytes.chunks(3).all(|c| {
            c[0].is_ascii_hexdigit()
                && c[1].is_ascii_hexdigit()
                && c.get(2).is_none_or(|&b| b == b':')
        })
}

/// The stored form of a user id: certificate fingerprints in any letter case become the
/// upper-case form [`crate::certificate_fingerprint`] computes, so an administrator who types
/// one in lower case still grants the certificate access. Other ids are kept as given.
pub fn normalize_user_id(id: &str) -> String {
    if is_fingerprint(id) {
        id.to_ascii_uppercase()
    } else {
        id.to_owned()
    }
}

/// Separates an issuer's `principal_prefix` from the claim in a token principal.
pub const PRINCIPAL_SEPARATOR: char = ':';

/// Longest `principal_prefix`.
pub const MAX_PRINCIPAL_PREFIX_BYTES: usize = 32;

/// Why a bearer token's user claim cannot be a principal. The text follows "the claim oid".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    #[error("is empty")]
    Empty,
    #[error("makes a user id longer than {MAX_USER_ID_BYTES} bytes")]
    TooLong,
    #[error("{0}")]
    ForbiddenCharacter(String),
    #[error(
        "holds ':', which only an issuer's principal_prefix puts in a token principal \
         (certificate fingerprints are never token principals)"
    )]
    Separator,
    #[error("has the form of a certificate fingerprint, which is never a token principal")]
    Fingerprint,
}

/// The user id of a bearer token's principal: the value of its issuer's user claim, after
/// `prefix:` when the issuer has a `principal_prefix`.
///
/// Why this shape: certificate users are their fingerprints, and Entra users (as in ACL) their
/// object ids, GUIDs. A token must never name a certificate user, and two issuers must never
/// name the same user, or one issuer (or whoever controls its claims) could act as the other's
/// users. So ':' — which every fingerprint holds — appears in a token principal only right
/// after a prefix, and prefixes hold no ':': the text before the first ':' names the issuer,
/// no principal of an unprefixed issuer holds one, and no principal is a fingerprint. At most
/// one issuer may go without a prefix (the server's settings check that), so that an Entra
/// tenant's users keep their bare object ids, as in ACL.
pub fn token_principal(prefix: Option<&str>, claim: &str) -> Result<String, PrincipalError> {
    if claim.is_empty() {
        return Err(PrincipalError::Empty);
    }
    crate::names::check(claim).map_err(PrincipalError::ForbiddenCharacter)?;
    let id = match prefix {
        Some(prefix) => format!("{prefix}{PRINCIPAL_SEPARATOR}{claim}"),
        None if claim.contains(PRINCIPAL_SEPARATOR) => return Err(PrincipalError::Separator),
        None => claim.to_owned(),
    };
    if id.len() > MAX_USER_ID_BYTES {
        return Err(PrincipalError::TooLong);
    }
    // Unreachable with a prefix check_principal_prefix accepts; kept as the last word.
    if is_fingerprint(&id) {
        return Err(PrincipalError::Fingerprint);
    }
    Ok(id)
}

/// Checks an issuer's `principal_prefix`: 1 to [`MAX_PRINCIPAL_PREFIX_BYTES`] ASCII letters,
/// digits, `.`, `_` or `-` (so never a ':'), and not two hex digits, which followed by ':'
/// could begin a certificate fingerprint.
pub fn check_principal_prefix(prefix: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if prefix.is_empty()
        || prefix.len() > MAX_PRINCIPAL_PREFIX_BYTES
        || !prefix.chars().all(allowed)
    {
        return Err(format!(
            "principal_prefix {prefix:?} must hold 1 to {MAX_PRINCIPAL_PREFIX_BYTES} ASCII \
             letters, digits, '.', '_' or '-'"
        ));
    }
    if prefix.len() == 2 && prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "principal_prefix {prefix:?} is two hexadecimal digits, which could begin a \
             certificate fingerprint; choose another"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_format() {
        let w = user_write("AB", Role::Contributor);
        assert_eq!(w.table, "public:cledger.users");
        assert_eq!(
            w.value.as_deref(),
            Some(&br#"{"roles":["Contributor"]}"#[..])
        );
        let r = UserRecord::parse(br#"{"roles":["custom","Reader","Contributor"]}"#).unwrap();
        assert_eq!(r.role(), Some(Role::Contributor));
    }

    #[test]
    fn token_principals_never_collide_with_fingerprints_or_each_other() {
        let guid = "a3e5d7f1-0000-4000-8000-00000000abcd";
        assert_eq!(token_principal(None, guid).unwrap(), guid);
        assert_eq!(
            token_principal(Some("partner"), guid).unwrap(),
            format!("partner:{guid}")
        );
        let fingerprint = ["AB"; 32].join(":");
        for claim in [
            fingerprint.clone(),
            fingerprint.to_lowercase(),
            "partner:x".into(),
        ] {
            assert_eq!(
                token_principal(None, &claim),
                Err(PrincipalError::Separator),
                "{claim}"
            );
        }
        // With a prefix any claim is allowed, and the result is never a fingerprint.
        let id = token_principal(Some("partner"), &fingerprint).unwrap();
        assert!(!is_fingerprint(&id));
        assert_eq!(
            token_principal(Some("AB"), &["CD"; 31].join(":")),
            Err(PrincipalError::Fingerprint)
        );
        assert!(check_principal_prefix("AB").is_err());
        for bad in ["", "a:b", "a b", "é", &"x".repeat(33)] {
            assert!(check_principal_prefix(bad).is_err(), "{bad:?}");
        }
        for good in ["partner", "v1", "idp.example", "x_y-z", "ABC"] {
            assert_eq!(check_principal_prefix(good), Ok(()), "{good:?}");
        }
        assert_eq!(token_principal(None, ""), Err(PrincipalError::Empty));
        assert_eq!(
            token_principal(None, &"x".repeat(257)),
            Err(PrincipalError::TooLong)
        );
        assert!(matches!(
            token_principal(None, "a\u{202E}b"),
            Err(PrincipalError::ForbiddenCharacter(m)) if m.contains("U+202E")
        ));
    }

    #[test]
    fn normalizes_fingerprints_only() {
        let lower = ["ab"; 32].join(":");
        assert_eq!(normalize_user_id(&lower), ["AB"; 32].join(":"));
        let guid = "a3e5d7f1-0000-4000-8000-00000000abcd";
        assert_eq!(normalize_user_id(guid), guid);
    }
}
