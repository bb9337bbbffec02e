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

/// The stored form of a user id: certificate fingerprints in any letter case become the
/// upper-case form [`crate::certificate_fingerprint`] computes, so an administrator who types
/// one in lower case still grants the certificate access. Other ids are kept as given.
pub fn normalize_user_id(id: &str) -> String {
    let bytes = id.as_bytes();
    let is_fingerprint = bytes.len() == 95
        && bytes.chunks(3).all(|c| {
            c[0].is_ascii_hexdigit()
                && c[1].is_ascii_hexdigit()
                && c.get(2).is_none_or(|&b| b == b':')
        });
    if is_fingerprint {
        id.to_ascii_uppercase()
    } else {
        id.to_owned()
    }
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
    fn normalizes_fingerprints_only() {
        let lower = ["ab"; 32].join(":");
        assert_eq!(normalize_user_id(&lower), ["AB"; 32].join(":"));
        let guid = "a3e5d7f1-0000-4000-8000-00000000abcd";
        assert_eq!(normalize_user_id(guid), guid);
    }
}
