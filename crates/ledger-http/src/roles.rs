//! Actions and roles: what each route needs, what each role allows.
//!
//! Every authenticated route needs one *action*, named in ACL's vocabulary
//! `Microsoft.ConfidentialLedger/ledger/<resource>/<read|write|delete>` (acl-api.md §2.5; the
//! service publishes only examples, so the full list below is cledger's). A caller may call a
//! route when any of its roles allows the route's action: the union of its roles' actions.
//!
//! | action (prefix `Microsoft.ConfidentialLedger/ledger/`) | routes |
//! |---|---|
//! | `governance/read` | GET `/app/governance/constitution`, `/app/governance/members` |
//! | `enclaveQuotes/read` | GET `/app/enclaveQuotes` |
//! | `collections/read` | GET `/app/collections`, `/app/collections/tags` |
//! | `transactions/read` | GET `/app/transactions`, `/app/transactions/current`, `/{id}`, `/{id}/receipt`, `/{id}/status` |
//! | `transactions/write` | POST `/app/transactions` |
//! | `users/read` | GET `/app/users`, `/app/users/{id}`, `/app/ledgerUsers`, `/app/ledgerUsers/{id}` |
//! | `users/write` | PATCH `/app/users/{id}`, `/app/ledgerUsers/{id}` |
//! | `users/delete` | DELETE `/app/users/{id}`, `/app/ledgerUsers/{id}` |
//! | `roles/read` / `roles/write` / `roles/delete` | GET / PUT, PATCH / DELETE `/app/roles` |
//! | `userDefinedEndpoints/read` / `write` | GET / PUT, PATCH `/app/userDefinedEndpoints[/runtimeOptions,/modules]` |
//! | `userDefinedFunctions/read` / `write` / `delete` | GET / PUT / DELETE `/app/userDefinedFunctions[/{id}]` |
//! | `userDefinedFunctions/execute` | POST `/app/userDefinedFunctions/{id}:execute`, and `preHooks`/`postHooks` on POST `/app/transactions` |
//!
//! Built-in roles: Reader = `governance/read`, `enclaveQuotes/read`, `collections/read`,
//! `transactions/read`; Contributor =
//! Reader + `transactions/write` + `userDefinedFunctions/execute` (ACL: "Contributor role is
//! required to execute a UDF"; creating, reading and deleting one is the Administrator's);
//! Administrator = every action. User-defined roles are stored
//! in `public:cledger.roles` (key = role name, value = JSON array of action names).

use crate::users::{Role, UserRecord};
use ledger_core::entry::{TableWrite, tables};
use ledger_store::{LedgerHandle, StoreError};
use std::collections::BTreeSet;

pub const PREFIX: &str = "Microsoft.ConfidentialLedger/ledger/";

macro_rules! actions {
    ($($name:ident = $suffix:literal),* $(,)?) => {
        $(pub const $name: &str = concat!("Microsoft.ConfidentialLedger/ledger/", $suffix);)*
        /// Every action cledger knows, in a stable order.
        pub const ALL_ACTIONS: &[&str] = &[$($name),*];
    };
}

actions! {
    GOVERNANCE_READ = "governance/read",
    ENCLAVE_QUOTES_READ = "enclaveQuotes/read",
    COLLECTIONS_READ = "collections/read",
    TRANSACTIONS_READ = "transactions/read",
    TRANSACTIONS_WRITE = "transactions/write",
    USERS_READ = "users/read",
    USERS_WRITE = "users/write",
    USERS_DELETE = "users/delete",
    ROLES_READ = "roles/read",
    ROLES_WRITE = "roles/write",
    ROLES_DELETE = "roles/delete",
    UDE_READ = "userDefinedEndpoints/read",
    UDE_WRITE = "userDefinedEndpoints/write",
    UDF_READ = "userDefinedFunctions/read",
    UDF_WRITE = "userDefinedFunctions/write",
    UDF_DELETE = "userDefinedFunctions/delete",
    UDF_EXECUTE = "userDefinedFunctions/execute",
}

/// The actions a built-in role allows.
pub fn builtin_actions(role: Role) -> Vec<&'static str> {
    let reader = [
        GOVERNANCE_READ,
        ENCLAVE_QUOTES_READ,
        COLLECTIONS_READ,
        TRANSACTIONS_READ,
    ];
    match role {
        Role::Reader => reader.to_vec(),
        Role::Contributor => reader
            .into_iter()
            .chain([TRANSACTIONS_WRITE, UDF_EXECUTE])
            .collect(),
        Role::Administrator => ALL_ACTIONS.to_vec(),
    }
}

pub fn is_action(name: &str) -> bool {
    ALL_ACTIONS.contains(&name)
}

/// Longest user-defined role name.
pub const MAX_ROLE_NAME_BYTES: usize = 128;
/// Most user-defined roles.
pub const MAX_ROLES: usize = 1000;

/// The stored actions of a user-defined role.
pub fn custom_role(
    ledger: &dyn LedgerHandle,
    name: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    Ok(ledger
        .governance(tables::ROLES, name)?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

/// Every user-defined role, sorted by name.
pub fn custom_roles(ledger: &dyn LedgerHandle) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    let mut roles: Vec<(String, Vec<String>)> = ledger
        .governance_table(tables::ROLES)?
        .into_iter()
        .filter_map(|(k, v)| serde_json::from_slice(&v).ok().map(|a| (k, a)))
        .collect();
    roles.sort();
    Ok(roles)
}

/// The actions of the role `name`, built-in or user-defined; `None` if there is no such role.
pub fn role_actions(
    ledger: &dyn LedgerHandle,
    name: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    match Role::parse(name) {
        Some(role) => Ok(Some(
            builtin_actions(role)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        )),
        None => custom_role(ledger, name),
    }
}

/// Every action any of `roles` allows (names of roles that do not exist allow nothing).
pub fn actions_of(
    ledger: &dyn LedgerHandle,
    roles: &[String],
) -> Result<BTreeSet<String>, StoreError> {
    let mut actions = BTreeSet::new();
    for name in roles {
        actions.extend(role_actions(ledger, name)?.unwrap_or_default());
    }
    Ok(actions)
}

/// The governance write that stores (or, with `None`, removes) a user-defined role.
pub fn role_write(name: &str, actions: Option<&[String]>) -> TableWrite {
    TableWrite {
        table: tables::ROLES.into(),
        key: name.to_owned(),
        value: actions.map(|a| serde_json::to_vec(a).expect("strings serialize")),
    }
}

/// Whether any of the user's roles grants `action`; stops at the first that does, and
/// allocates nothing for built-in roles (this runs on every request).
pub fn allows(
    ledger: &dyn LedgerHandle,
    record: &UserRecord,
    action: &str,
) -> Result<bool, StoreError> {
    for name in &record.roles {
        let granted = match Role::parse(name) {
            Some(role) => builtin_actions(role).contains(&action),
            None => custom_role(ledger, name)?.is_some_and(|a| a.iter().any(|x| x == action)),
        };
        if granted {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_roles_nest() {
        let r: BTreeSet<_> = builtin_actions(Role::Reader).into_iter().collect();
        let c: BTreeSet<_> = builtin_actions(Role::Contributor).into_iter().collect();
        let a: BTreeSet<_> = builtin_actions(Role::Administrator).into_iter().collect();
        assert!(r.is_subset(&c) && c.is_subset(&a));
        assert!(!r.contains(USERS_READ) && c.contains(TRANSACTIONS_WRITE));
        assert!(ALL_ACTIONS.iter().all(|a| a.starts_with(PREFIX)));
    }
}
