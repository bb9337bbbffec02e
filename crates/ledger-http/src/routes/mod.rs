//! The route table, and the gate every routed request passes before its handler runs.
//!
//! The gate decodes the query string, checks `api-version`, and authorizes the caller
//! (`auth::authorize`), in that order, before any handler does work. Handlers receive the
//! result as a [`RequestContext`] extension; a route with no authorization rule never gets
//! one, so its handler cannot run (it fails closed with 500 rather than open).

mod endpoints;
mod functions;
mod governance;
mod identity;
mod proofs;
mod roles;
mod transactions;
mod users;

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::query::QueryParams;
use crate::state::ApiState;
use crate::version::ApiVersion;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

/// Route templates, shared with the authorization table and the constitution.
pub mod paths {
    pub const CONSTITUTION: &str = "/app/governance/constitution";
    pub const MEMBERS: &str = "/app/governance/members";
    pub const ENCLAVE_QUOTES: &str = "/app/enclaveQuotes";
    pub const COLLECTIONS: &str = "/app/collections";
    pub const TRANSACTIONS: &str = "/app/transactions";
    pub const CURRENT: &str = "/app/transactions/current";
    pub const CONSISTENCY: &str = "/app/transactions/consistency";
    pub const TRANSACTION: &str = "/app/transactions/{transactionId}";
    pub const RECEIPT: &str = "/app/transactions/{transactionId}/receipt";
    pub const STATUS: &str = "/app/transactions/{transactionId}/status";
    pub const COSE_RECEIPT: &str = "/app/transactions/{transactionId}/receipt/cose";
    pub const ENTRY_CHECKPOINT: &str = "/app/transactions/{transactionId}/checkpoint";
    pub const CHECKPOINT: &str = "/app/checkpoint";
    /// CCF 7's built-in route (`?transaction_id=`); CCF's clients send no `api-version`.
    pub const CCF_COSE_RECEIPT: &str = "/app/receipt/cose";
    pub const USER: &str = "/app/users/{userId}";
    pub const LEDGER_IDENTITY: &str = "/ledgerIdentity/{ledgerId}";
    pub const USERS: &str = "/app/users";
    pub const LEDGER_USERS: &str = "/app/ledgerUsers";
    pub const LEDGER_USER: &str = "/app/ledgerUsers/{userId}";
    pub const COLLECTION_TAGS: &str = "/app/collections/tags";
    pub const ROLES: &str = "/app/roles";
    pub const FUNCTIONS: &str = "/app/userDefinedFunctions";
    /// Also `POST /app/userDefinedFunctions/{functionId}:execute` (the id ends in `:execute`).
    pub const FUNCTION: &str = "/app/userDefinedFunctions/{functionId}";

    pub const ENDPOINTS: &str = "/app/userDefinedEndpoints";
    pub const RUNTIME_OPTIONS: &str = "/app/userDefinedEndpoints/runtimeOptions";
    /// The spelling of ACL's own documentation (`curl … /runTimeOptions`).
    pub const RUNTIME_OPTIONS_ALIAS: &str = "/app/userDefinedEndpoints/runTimeOptions";
    pub const MODULES: &str = "/app/userDefinedEndpoints/modules";

    /// Routes CCF itself serves, called by CCF's tools without an `api-version`.
    pub const CCF_NATIVE: [&str; 1] = [CCF_COSE_RECEIPT];

    pub const ALL: [&str; 27] = [
        CONSTITUTION,
        MEMBERS,
        ENCLAVE_QUOTES,
        COLLECTIONS,
        TRANSACTIONS,
        CURRENT,
        CONSISTENCY,
        TRANSACTION,
        RECEIPT,
        STATUS,
        COSE_RECEIPT,
        CCF_COSE_RECEIPT,
        ENTRY_CHECKPOINT,
        CHECKPOINT,
        USER,
        LEDGER_IDENTITY,
        USERS,
        LEDGER_USERS,
        LEDGER_USER,
        COLLECTION_TAGS,
        ROLES,
        FUNCTIONS,
        FUNCTION,
        ENDPOINTS,
        RUNTIME_OPTIONS,
        RUNTIME_OPTIONS_ALIAS,
        MODULES,
    ];
}

/// What the gate established about a request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub version: ApiVersion,
    pub query: QueryParams,
    /// Who is calling, and what was authorized: `method` (GET for HEAD) on the route template
    /// `route` at `path`. Changes of users and roles authorize it again where they commit
    /// (`crate::grants`).
    pub caller: Caller,
    pub method: Method,
    pub route: String,
    pub path: String,
}

pub fn build(state: Arc<ApiState>) -> Router {
    use paths::*;
    let router = Router::new()
        .route(CONSTITUTION, get(governance::constitution))
        .route(MEMBERS, get(governance::members))
        .route(ENCLAVE_QUOTES, get(governance::enclave_quotes))
        .route(COLLECTIONS, get(governance::collections))
        .route(
            TRANSACTIONS,
            get(transactions::list).post(transactions::create),
        )
        .route(CURRENT, get(transactions::current))
        .route(CONSISTENCY, get(proofs::consistency))
        .route(TRANSACTION, get(transactions::entry))
        .route(RECEIPT, get(transactions::receipt))
        .route(STATUS, get(transactions::status))
        .route(COSE_RECEIPT, get(proofs::cose_receipt))
        .route(CCF_COSE_RECEIPT, get(proofs::ccf_cose_receipt))
        .route(ENTRY_CHECKPOINT, get(proofs::entry_checkpoint))
        .route(CHECKPOINT, get(proofs::checkpoint))
        .route(
            USER,
            get(users::get).patch(users::patch).delete(users::delete),
        )
        .route(LEDGER_IDENTITY, get(identity::ledger_identity))
        .route(USERS, get(users::list))
        .route(LEDGER_USERS, get(users::list_multi))
        .route(
            LEDGER_USER,
            get(users::get_multi)
                .patch(users::patch_multi)
                .delete(users::delete_multi),
        )
        .route(COLLECTION_TAGS, get(transactions::collection_tags))
        .route(
            ROLES,
            get(roles::get)
                .put(roles::put)
                .patch(roles::patch)
                .delete(roles::delete),
        )
        .route(FUNCTIONS, get(functions::list))
        .route(
            FUNCTION,
            get(functions::get)
                .put(functions::put)
                .delete(functions::delete)
                .post(functions::post),
        );
    let router = [RUNTIME_OPTIONS, RUNTIME_OPTIONS_ALIAS]
        .into_iter()
        .fold(router, |r, path| {
            r.route(
                path,
                get(endpoints::get_runtime_options).patch(endpoints::patch_runtime_options),
            )
        });
    router
        .route(
            ENDPOINTS,
            get(endpoints::get_bundle).put(endpoints::put_bundle),
        )
        .route(MODULES, get(endpoints::get_module))
        .route_layer(middleware::from_fn_with_state(state.clone(), gate))
        .method_not_allowed_fallback(method_not_allowed)
        // Deployed endpoints first; a path none of them matches is 404.
        .fallback(endpoints::dispatch)
        .with_state(state)
}

/// Listings are blocking work that can take long: up to a page of entries read from the
/// segments and decrypted, or a scan of an index table. On a multi-threaded runtime they run
/// under `block_in_place`, which first hands this worker's other tasks to another thread, so
/// a slow listing (a cold page cache, a long scan) does not hold up the requests queued behind
/// it on the same worker (six clients of a slow `/current` slowed `/healthz` from 4 to 93 ms).
/// Single reads (an entry, a status, a receipt, `/current`, now indexed) stay inline: doing the
/// same for every read cost 30% of read throughput on two cores (16,500 → 11,200 reads by
/// txid/s), the hand-off costing more than such a read. Writes only wait for the writer thread.
/// (A current-thread runtime, as in tests, has no other thread to hand tasks to: inline.)
async fn gate(state: State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let listing = matches!(*request.method(), Method::GET | Method::HEAD)
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|route| LISTINGS.contains(&route.as_str()));
    match Handle::try_current() {
        Ok(runtime) if listing && runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| runtime.block_on(checked(state, request, next)))
        }
        _ => checked(state, request, next).await,
    }
}

/// The routes whose GET lists (see [`gate`]).
const LISTINGS: [&str; 6] = [
    paths::TRANSACTIONS,
    paths::COLLECTIONS,
    paths::COLLECTION_TAGS,
    paths::USERS,
    paths::LEDGER_USERS,
    paths::ROLES,
];

/// Authorizes the request (the route's action, the caller's roles) and runs its handler.
async fn checked(State(state): State<Arc<ApiState>>, mut request: Request, next: Next) -> Response {
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    // HEAD is answered by the GET handler, so it is allowed exactly when GET is.
    let policy_method = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    let access = auth::access(&policy_method, &route);
    if access.is_none() {
        // Not a route/method pair of ours (e.g. the 405 fallback): no context, no handler.
        return next.run(request).await;
    }
    let checked = (|| {
        let query = QueryParams::parse(request.uri().query())?;
        let version = match query.get("api-version")? {
            None if paths::CCF_NATIVE.contains(&route.as_str()) => ApiVersion::LATEST,
            given => ApiVersion::from_query(given)?,
        };
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous);
        let path = request.uri().path().to_owned();
        auth::authorize(
            &*state.ledger,
            &caller,
            &policy_method,
            &route,
            &path,
            |id| state.user_record(id),
        )?;
        Ok::<_, ApiError>(RequestContext {
            version,
            query,
            caller,
            method: policy_method,
            route,
            path,
        })
    })();
    match checked {
        Ok(context) => {
            request.extensions_mut().insert(context);
            let mut response = next.run(request).await;
            if matches!(access, Some(auth::Access::Action(_))) {
                // Authorized as a user of the ledger: the transport trusts the connection more.
                response.extensions_mut().insert(auth::Authenticated);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not supported on {}.", uri.path()))
}
