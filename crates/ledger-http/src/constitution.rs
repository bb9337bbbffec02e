//! The constitution served at `GET /app/governance/constitution`.
//!
//! In ACL this is CCF's JavaScript governance script. cledger has no member voting, so instead
//! of imitating one it states the rules this server actually enforces, written as a JavaScript
//! module (comments plus the role table as data) so that tools expecting a script still get
//! one. The role and action tables must match `auth::access` and `crate::roles`; tests check
//! that every route and every action is named.

use ledger_core::hash::sha256;

/// The constitution text.
pub const CONSTITUTION: &str = r#"// cledger constitution
//
// This ledger is a self-hosted, single-node re-implementation of the Azure Confidential
// Ledger data-plane API. It does not run inside a trusted execution environment: there is no
// enclave and no attestation (GET /app/enclaveQuotes reports quoteVersion "Insecure_Virtual").
// The rules below are what this server enforces; there are no proposals and no votes.
//
// Members
//   The ledger has exactly one member: the holder of the service identity key, whose
//   certificate is the service certificate returned by GET /app/governance/members and by
//   GET /ledgerIdentity/{ledgerId}. That certificate is the trust anchor for TLS and for
//   receipts. The member acts out of band (it creates the ledger, issues node certificates
//   and names the first administrators); it has no API of its own.
//
// Users and roles
//   A user is identified by the SHA-256 fingerprint of its TLS client certificate (upper-case
//   hex pairs joined by ':'). Each user holds one or more roles (several through
//   /app/ledgerUsers); a user may call a route when any of its roles allows the route's
//   action (the `actions` table below). The built-in roles:
//     Reader         may call every GET under /app except /app/users/{userId}.
//     Contributor    may also write entries (POST /app/transactions).
//     Administrator  may also read, create, change and delete users and user-defined roles
//                    (/app/users, /app/ledgerUsers, /app/roles); it holds every action.
//   Administrators may define more roles with PUT /app/roles, as lists of the actions below;
//   a user-defined role allows exactly its actions, checked on every request. Built-in role
//   names, in any letter case, cannot be defined, changed or deleted.
//   Nobody grants what it does not hold: granting a role to a user or taking it away needs
//   every action of that role, and adding an action to a role or removing it needs that
//   action (403 InsufficientPrivileges). A change of users or roles is authorized again, with
//   the caller's roles as they are when it commits, so a caller demoted meanwhile is refused.
//   A client certificate is accepted only within its validity period (notBefore..notAfter).
//   Bearer-token users are named by their issuer's user claim (an Entra object id), after
//   "<prefix>:" for an issuer given a principal prefix; a token never names a certificate.
//   GET /ledgerIdentity/{ledgerId} needs no authentication. Anyone else gets 401 (no
//   credentials, an expired or not yet valid certificate) or 403 NotAllowed (a certificate
//   that is not a user, or a role too low).
//   The first administrators are written in the ledger's first (genesis) transaction.
//   The last administrator cannot be removed or demoted.
//
// Every change is a transaction
//   Creating, changing and deleting a user is a governance transaction in the ledger, with
//   its own transaction id and receipt, like an entry. Roles are read from the ledger on every
//   request, so a change applies to the next request.
//
// Limits
//   An entry's contents may hold at most 8192 UTF-8 bytes by default (the operator may raise
//   this to at most 1 MiB). A collection id may hold at most 256 bytes after URL decoding. At
//   most 5000 collections may exist besides the default collection "subledger:0". A collection
//   may have at most 10000 distinct tags; a tag holds 1 to 256 bytes without commas, and one
//   entry at most 64 tags. No collection id, tag, user id or role name may hold a control
//   character, a line or paragraph separator, or a bidirectional formatting character (such
//   as U+202E). A rejected request writes nothing.
//
// Commit and signing
//   A write is answered only once it is committed: durable on disk and covered by a signature
//   transaction. The node signs the Merkle root of the ledger after every group of writes,
//   by default at least every 1000 transactions or 2 milliseconds while writes arrive. A
//   receipt for a transaction is anchored at the first signature after it and never changes.

export const roles = {
  Reader: [
    "GET /app/governance/constitution",
    "GET /app/governance/members",
    "GET /app/enclaveQuotes",
    "GET /app/collections",
    "GET /app/transactions",
    "GET /app/transactions/current",
    "GET /app/transactions/{transactionId}",
    "GET /app/transactions/{transactionId}/receipt",
    "GET /app/transactions/{transactionId}/status",
    "GET /app/transactions/{transactionId}/receipt/cose",
    "GET /app/receipt/cose",
    "GET /app/transactions/consistency",
    "GET /app/transactions/{transactionId}/checkpoint",
    "GET /app/checkpoint",
    "GET /app/collections/tags",
  ],
  Contributor: ["...Reader", "POST /app/transactions", "POST /app/userDefinedFunctions/{functionId}:execute"],
  Administrator: [
    "...Contributor",
    "GET /app/users/{userId}",
    "PATCH /app/users/{userId}",
    "DELETE /app/users/{userId}",
    "GET /app/users",
    "GET /app/ledgerUsers",
    "GET /app/ledgerUsers/{userId}",
    "PATCH /app/ledgerUsers/{userId}",
    "DELETE /app/ledgerUsers/{userId}",
    "GET /app/roles",
    "PUT /app/roles",
    "PATCH /app/roles",
    "DELETE /app/roles",
    "GET /app/userDefinedFunctions",
    "GET /app/userDefinedFunctions/{functionId}",
    "PUT /app/userDefinedFunctions/{functionId}",
    "DELETE /app/userDefinedFunctions/{functionId}",
    "GET /app/userDefinedEndpoints",
    "PUT /app/userDefinedEndpoints",
    "GET /app/userDefinedEndpoints/runtimeOptions",
    "PATCH /app/userDefinedEndpoints/runtimeOptions",
    "GET /app/userDefinedEndpoints/modules",
  ],
};

export const publicRoutes = ["GET /ledgerIdentity/{ledgerId}"];

export const actions = {
  "Microsoft.ConfidentialLedger/ledger/governance/read": ["GET /app/governance/constitution", "GET /app/governance/members"],
  "Microsoft.ConfidentialLedger/ledger/enclaveQuotes/read": ["GET /app/enclaveQuotes"],
  "Microsoft.ConfidentialLedger/ledger/collections/read": ["GET /app/collections", "GET /app/collections/tags"],
  "Microsoft.ConfidentialLedger/ledger/transactions/read": ["GET /app/transactions", "GET /app/transactions/current", "GET /app/transactions/{transactionId}", "GET /app/transactions/{transactionId}/receipt", "GET /app/transactions/{transactionId}/status", "GET /app/transactions/{transactionId}/receipt/cose", "GET /app/receipt/cose", "GET /app/transactions/consistency", "GET /app/transactions/{transactionId}/checkpoint", "GET /app/checkpoint"],
  "Microsoft.ConfidentialLedger/ledger/transactions/write": ["POST /app/transactions"],
  "Microsoft.ConfidentialLedger/ledger/users/read": ["GET /app/users", "GET /app/users/{userId}", "GET /app/ledgerUsers", "GET /app/ledgerUsers/{userId}"],
  "Microsoft.ConfidentialLedger/ledger/users/write": ["PATCH /app/users/{userId}", "PATCH /app/ledgerUsers/{userId}"],
  "Microsoft.ConfidentialLedger/ledger/users/delete": ["DELETE /app/users/{userId}", "DELETE /app/ledgerUsers/{userId}"],
  "Microsoft.ConfidentialLedger/ledger/roles/read": ["GET /app/roles"],
  "Microsoft.ConfidentialLedger/ledger/roles/write": ["PUT /app/roles", "PATCH /app/roles"],
  "Microsoft.ConfidentialLedger/ledger/roles/delete": ["DELETE /app/roles"],
  "Microsoft.ConfidentialLedger/ledger/userDefinedEndpoints/read": ["GET /app/userDefinedEndpoints", "GET /app/userDefinedEndpoints/runtimeOptions", "GET /app/userDefinedEndpoints/modules"],
  "Microsoft.ConfidentialLedger/ledger/userDefinedEndpoints/write": ["PUT /app/userDefinedEndpoints", "PATCH /app/userDefinedEndpoints/runtimeOptions"],
  "Microsoft.ConfidentialLedger/ledger/userDefinedFunctions/read": ["GET /app/userDefinedFunctions", "GET /app/userDefinedFunctions/{functionId}"],
  "Microsoft.ConfidentialLedger/ledger/userDefinedFunctions/write": ["PUT /app/userDefinedFunctions/{functionId}"],
  "Microsoft.ConfidentialLedger/ledger/userDefinedFunctions/delete": ["DELETE /app/userDefinedFunctions/{functionId}"],
  "Microsoft.ConfidentialLedger/ledger/userDefinedFunctions/execute": ["POST /app/userDefinedFunctions/{functionId}:execute", "POST /app/transactions with preHooks or postHooks"],
};

// Deployed endpoints (PUT /app/userDefinedEndpoints) are served under /app/ with the
// authentication their authn_policies name; they authorize inside their JavaScript.
// /app/userDefinedEndpoints/runTimeOptions is another spelling of .../runtimeOptions.
"#;

/// Lower-case hex SHA-256 of [`CONSTITUTION`], served as `digest`.
pub fn digest() -> String {
    sha256(CONSTITUTION.as_bytes()).to_hex()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_every_action() {
        for action in crate::roles::ALL_ACTIONS {
            assert!(
                super::CONSTITUTION.contains(&format!("\"{action}\"")),
                "{action}"
            );
        }
    }
}
