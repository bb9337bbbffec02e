//! The Azure Confidential Ledger REST personality of cledger: the data-plane routes of
//! api-version 2022-05-13 (and the strings of every other published version), their request
//! validation, JSON shapes and errors, ledger users and roles, and authorization.
//!
//! This crate knows nothing about TLS or sockets. [`router`] returns a complete axum app; the
//! transport (`ledger-server`) authenticates each connection and inserts a [`Caller`] into every
//! request's extensions (missing means anonymous). Everything the ledger stores goes through
//! `ledger-store`; writes are answered only after they are committed.
//!
//! Layout, one job per module:
//! * [`error`]: every failure's status, code and `Retry-After`;
//! * [`version`]: `api-version` strings and version-dependent shapes;
//! * [`query`]: query decoding as CCF does it (`%XX`, and `+` is a space) and encoding;
//! * [`auth`]: callers, fingerprints, the role-per-route table;
//! * [`users`]: built-in roles, the stored user format, user ids of tokens;
//! * [`names`]: the characters no collection id, tag, user id or role name may hold;
//! * `grants`: who may grant which roles and actions, checked where the change commits;
//! * [`roles`]: the action vocabulary, built-in role actions, user-defined roles;
//! * `body`, `response`, `paging`: request bodies, success responses, next links;
//! * `programs`: user-defined functions, hooks and endpoints (JavaScript, through `ledger-js`):
//!   what is deployed, execution slots, pending key-value writes and their concurrency control;
//! * `routes`: the route table, the gate (version + authorization) and the handlers.

pub mod auth;
mod body;
pub mod checkpoints;
pub mod config;
mod constitution;
pub mod error;
mod grants;
pub mod idempotency;
pub mod names;
mod paging;
mod programs;
pub mod query;
mod response;
pub mod roles;
mod routes;
mod state;
pub mod users;
pub mod version;

pub use auth::{Authenticated, Caller, certificate_fingerprint};
pub use config::{ApiConfig, ConfigError};
pub use constitution::CONSTITUTION;
pub use error::{ApiError, ErrorInfo};
pub use response::TRANSACTION_ID_HEADER;
pub use routes::paths;
pub use state::ApiState;
pub use version::ApiVersion;

use ledger_store::LedgerHandle;
use std::sync::Arc;

/// The complete app for `ledger` with `config`.
///
/// # Panics
/// If `config` is invalid (see [`ApiConfig::validate`]); use [`try_router`] to handle that.
pub fn router(ledger: Arc<dyn LedgerHandle>, config: ApiConfig) -> axum::Router {
    match try_router(ledger, config) {
        Ok(router) => router,
        Err(e) => panic!("invalid ledger-http configuration: {e}"),
    }
}

/// [`router`], returning configuration errors instead of panicking.
pub fn try_router(
    ledger: Arc<dyn LedgerHandle>,
    config: ApiConfig,
) -> Result<axum::Router, ConfigError> {
    Ok(routes::build(Arc::new(ApiState::new(ledger, config)?)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn constitution_names_every_route() {
        for path in crate::paths::ALL {
            assert!(crate::CONSTITUTION.contains(path), "{path} missing");
        }
    }
}
