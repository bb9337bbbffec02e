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
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Either, Map, Ready, ready};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

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

/// A handler takes the context by value: the gate inserted it for that handler alone, so it
/// is moved out of the request, where axum's `Extension` would clone it (its strings and
/// query pairs: an allocation each, on every request). Missing only if a route was mounted
/// outside the gate: a bug, answered 500.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        parts.extensions.remove::<RequestContext>().ok_or_else(|| {
            ApiError::Internal(format!(
                "{} {} was not authorized by the gate; this is a bug.",
                parts.method,
                parts.uri.path()
            ))
        })
    }
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
        .route_layer(GateLayer(state.clone()))
        .method_not_allowed_fallback(method_not_allowed)
        // Deployed endpoints first; a path none of them matches is 404.
        .fallback(endpoints::dispatch)
        .with_state(state)
}

/// The gate in front of every route's handler: authorization and the request's context
/// ([`admit`]), and listings moved off their worker.
///
/// Listings are blocking work that can take long: up to a page of entries read from the
/// segments and decrypted, or a scan of an index table. On a multi-threaded runtime they run
/// under `block_in_place`, which first hands this worker's other tasks to another thread, so
/// a slow listing (a cold page cache, a long scan) does not hold up the requests queued behind
/// it on the same worker (six clients of a slow `/current` slowed `/healthz` from 4 to 93 ms).
/// Single reads (an entry, a status, a receipt, `/current`, now indexed) stay inline: doing the
/// same for every read cost 30% of read throughput on two cores (16,500 → 11,200 reads by
/// txid/s), the hand-off costing more than such a read. Writes only wait for the writer thread.
/// (A current-thread runtime, as in tests, has no other thread to hand tasks to: inline.)
///
/// A tower service written out rather than `axum::middleware::from_fn`: [`admit`] awaits
/// nothing, so everything but a listing goes on to the handler's own future, where `from_fn`
/// boxed every request's future and cloned the handler's service for it.
#[derive(Clone)]
struct Gate<S> {
    state: Arc<ApiState>,
    handler: S,
}

#[derive(Clone)]
struct GateLayer(Arc<ApiState>);

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, handler: S) -> Gate<S> {
        Gate {
            state: self.0.clone(),
            handler,
        }
    }
}

type Answer = Result<Response, Infallible>;

/// What the gate does to the handler's answer (see [`admit`]).
type Marking = fn(Answer) -> Answer;

impl<S> tower::Service<Request> for Gate<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    /// The handler's future, a refusal, or a listing run whole under `block_in_place`.
    type Future =
        Either<Map<S::Future, Marking>, Either<Ready<Answer>, BoxFuture<'static, Answer>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.handler.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let listing = matches!(*request.method(), Method::GET | Method::HEAD)
            && request
                .extensions()
                .get::<MatchedPath>()
                .is_some_and(|route| LISTINGS.contains(&route.as_str()));
        // Only a listing needs the runtime's handle (each lookup clones it).
        let listing_runtime = listing
            .then(|| Handle::try_current().ok())
            .flatten()
            .filter(|runtime| runtime.runtime_flavor() == RuntimeFlavor::MultiThread);
        match listing_runtime {
            Some(runtime) => {
                // `poll_ready` readied `self.handler`: that one goes with this request, a clone
                // stays for the next (tower's rule for services called from a future).
                let ready_handler = self.handler.clone();
                let mut handler = std::mem::replace(&mut self.handler, ready_handler);
                let state = self.state.clone();
                Either::Right(Either::Right(Box::pin(async move {
                    tokio::task::block_in_place(|| {
                        runtime.block_on(async move {
                            match admit(&state, &mut request) {
                                Ok(marking) => marking(handler.call(request).await),
                                Err(refusal) => Ok(refusal.into_response()),
                            }
                        })
                    })
                })))
            }
            None => match admit(&self.state, &mut request) {
                Ok(marking) => Either::Left(self.handler.call(request).map(marking)),
                Err(refusal) => Either::Right(Either::Left(ready(Ok(refusal.into_response())))),
            },
        }
    }
}

/// The routes whose GET lists (see [`Gate`]).
const LISTINGS: [&str; 6] = [
    paths::TRANSACTIONS,
    paths::COLLECTIONS,
    paths::COLLECTION_TAGS,
    paths::USERS,
    paths::LEDGER_USERS,
    paths::ROLES,
];

/// Authorizes the request (the route's action, the caller's roles) and gives it its
/// [`RequestContext`]; says what to do to the handler's answer, or refuses.
fn admit(state: &ApiState, request: &mut Request) -> Result<Marking, ApiError> {
    let unchanged: Marking = |answer| answer;
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return Ok(unchanged);
    };
    // HEAD is answered by the GET handler, so it is allowed exactly when GET is.
    let policy_method = if request.method() == Method::HEAD {
        Method::GET
    } else {
        request.method().clone()
    };
    let Some(access) = auth::access(&policy_method, &route) else {
        // Not a route/method pair of ours (e.g. the 405 fallback): no context, no handler.
        return Ok(unchanged);
    };
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
    request.extensions_mut().insert(RequestContext {
        version,
        query,
        caller,
        method: policy_method,
        route,
        path,
    });
    Ok(match access {
        // Authorized as a user of the ledger: the transport trusts the connection more.
        auth::Access::Action(_) => |answer: Answer| {
            answer.map(|mut response| {
                response.extensions_mut().insert(auth::Authenticated);
                response
            })
        },
        _ => unchanged,
    })
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not supported on {}.", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// The context is the gate's to give: a handler mounted outside it gets a 500 that says
    /// so, not a panic and not an empty context.
    #[tokio::test]
    async fn a_handler_outside_the_gate_answers_500() {
        async fn handler(ctx: RequestContext) -> String {
            ctx.path
        }
        let router: Router = Router::new().route("/unguarded", get(handler));
        let request = Request::builder()
            .uri("/unguarded")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "InternalError");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("GET /unguarded was not authorized by the gate"),
            "{body}"
        );
    }
}
