//! User-defined endpoints (api-version 2024-08-22-preview on): deploying a CCF JavaScript
//! bundle, reading it and its modules, the JavaScript runtime options, and serving the
//! deployed endpoints under `/app/...` with CCF's request and response objects.
//!
//! Deployed endpoints are reached through the router's fallback: a path no built-in route
//! matches is looked up in the bundle (built-in paths cannot be shadowed: `definitions`
//! refuses such bundles). They need no `api-version` (CCF's endpoints have none); each
//! authenticates its caller by its `authn_policies` and authorizes inside its JavaScript, as
//! ACL's samples do.

use super::RequestContext;
use crate::auth::Caller;
use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::programs::definitions::{self, AuthnPolicy, Mode};
use crate::programs::pending::kv_writes;
use crate::programs::{MAX_ATTEMPTS, failed, failure_message};
use crate::response;
use crate::state::ApiState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ledger_js::EndpointRequest;
use ledger_store::WriteRequest;
use serde_json::{Value, json};
use std::sync::Arc;

fn require(ctx: &RequestContext, op: &str) -> ApiResult<()> {
    ctx.version.require(
        ctx.version.has_user_defined_endpoints(),
        op,
        "2024-08-22-preview",
    )
}

/// `GET /app/userDefinedEndpoints`: the deployed bundle (an empty one if none was deployed).
pub async fn get_bundle(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
) -> ApiResult<Response> {
    require(&ctx, "GET /app/userDefinedEndpoints")?;
    let json = match definitions::bundle(&*state.ledger)? {
        Some(bundle) => bundle.json,
        None => json!({"metadata": {"endpoints": {}}, "modules": []}),
    };
    Ok(response::json(state.read_txid()?, json))
}

/// `PUT /app/userDefinedEndpoints`: deploys a bundle, replacing the previous one; 201.
pub async fn put_bundle(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
    headers: HeaderMap,
    request_body: Body,
) -> ApiResult<Response> {
    require(&ctx, "PUT /app/userDefinedEndpoints")?;
    let bytes = body::read(&headers, request_body, state.config.max_body_bytes).await?;
    let json: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::InvalidInput(format!("The bundle is not valid JSON: {e}.")))?;
    let bundle = definitions::parse_bundle(json)?;
    let _guard = state.check_then_write.lock().await;
    if !bundle.is_empty() && !definitions::functions(&*state.ledger)?.is_empty() {
        return Err(ApiError::InvalidInput(
            "User-defined functions exist; a ledger runs either user-defined functions or \
             endpoints. Delete the functions first (GET /app/userDefinedFunctions lists them)."
                .into(),
        ));
    }
    let txid = state
        .commit(WriteRequest::Governance(vec![definitions::bundle_write(
            &bundle,
        )]))
        .await?;
    let mut response = response::empty(txid);
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// `GET /app/userDefinedEndpoints/modules?module_name=m`: `{"name", "module"}`.
pub async fn get_module(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
) -> ApiResult<Response> {
    require(&ctx, "GET /app/userDefinedEndpoints/modules")?;
    let name = ctx.query.get("module_name")?.ok_or_else(|| {
        ApiError::InvalidQueryParameter("The module_name query parameter is required.".into())
    })?;
    let name = name.trim_start_matches('/');
    let bundle = definitions::bundle(&*state.ledger)?;
    let source = bundle
        .as_ref()
        .and_then(|b| b.modules.get(name))
        .ok_or_else(|| ApiError::NotFound(format!("No deployed module is named {name:?}.")))?;
    Ok(response::json(
        state.read_txid()?,
        json!({"name": name, "module": source}),
    ))
}

/// `GET /app/userDefinedEndpoints/runtimeOptions` (also `runTimeOptions`).
pub async fn get_runtime_options(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
) -> ApiResult<Response> {
    require(&ctx, "GET /app/userDefinedEndpoints/runtimeOptions")?;
    let options = definitions::runtime_options(&*state.ledger)?;
    Ok(response::json(state.read_txid()?, options.to_json()))
}

/// `PATCH /app/userDefinedEndpoints/runtimeOptions`: a merge patch of the options; answers
/// the options as they are now.
pub async fn patch_runtime_options(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
    headers: HeaderMap,
    request_body: Body,
) -> ApiResult<Response> {
    require(&ctx, "PATCH /app/userDefinedEndpoints/runtimeOptions")?;
    let bytes = body::read(&headers, request_body, state.config.max_body_bytes).await?;
    let patch = body::json_object(&bytes, r#"{"max_execution_time_ms":2000}"#)?;
    let _guard = state.check_then_write.lock().await;
    let options = definitions::runtime_options(&*state.ledger)?.patched(&patch)?;
    let txid = state
        .commit(WriteRequest::Governance(vec![
            definitions::runtime_options_write(options),
        ]))
        .await?;
    Ok(response::json(txid, options.to_json()))
}

/// Any request no built-in route matched: a deployed endpoint's, or 404.
pub async fn dispatch(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    match serve(&state, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn serve(state: &Arc<ApiState>, request: Request) -> ApiResult<Response> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let not_found = || {
        ApiError::NotFound(format!(
            "There is no operation {method} {path}. Ledger operations live under /app/ (for \
             example GET /app/transactions?api-version=2022-05-13)."
        ))
    };
    let Some(below_app) = path.strip_prefix("/app") else {
        return Err(not_found());
    };
    let Some(bundle) = definitions::bundle(&*state.ledger)? else {
        return Err(not_found());
    };
    let lookup = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    let Some((endpoint, params)) = bundle.route(lookup.as_str(), below_app) else {
        return Err(not_found());
    };
    let endpoint = endpoint.clone();
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous);
    let caller_json = authenticate(state, &caller, &endpoint.authn_policies)?;
    let headers = request.headers().clone();
    let _admitted = match endpoint.mode {
        Mode::ReadWrite => Some(state.admit_write(caller.user_id().unwrap_or_default(), &headers)?),
        Mode::ReadOnly => None,
    };
    let query = request.uri().query().unwrap_or_default().to_owned();
    let url = match request.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let body = body::read_any(&headers, request.into_body(), state.config.max_body_bytes).await?;
    let js_request = EndpointRequest {
        method: method.as_str().to_owned(),
        url,
        route: format!("/app{}", endpoint.path),
        path: path.clone(),
        query,
        hostname: headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        headers: js_headers(&headers),
        params,
        body,
        caller: caller_json,
    };
    let options = definitions::runtime_options(&*state.ledger)?;
    let js_request = Arc::new(js_request);
    let bundle = Arc::new(bundle);
    for _ in 0..MAX_ATTEMPTS {
        let (bundle, request, job_endpoint) =
            (bundle.clone(), js_request.clone(), endpoint.clone());
        let writable = endpoint.mode == Mode::ReadWrite;
        let (execution, reads, snapshot) =
            crate::programs::run_in_view(state, writable, move |view| {
                ledger_js::run_endpoint(
                    &bundle.modules,
                    &job_endpoint.js_module,
                    &job_endpoint.js_function,
                    &request,
                    view,
                    &options.limits(),
                )
            })
            .await?;
        let reply = match execution.outcome {
            Ok(reply) => reply,
            Err(e) => {
                if options.log_exception_details {
                    tracing::info!(endpoint = %endpoint.path, error = %e, "user-defined endpoint failed");
                }
                let name = format!("{}:{}", endpoint.js_module, endpoint.js_function);
                let message = failure_message(&name, &e, options.return_exception_details);
                return Err(failed(message, &e));
            }
        };
        let writes = kv_writes(&execution.writes);
        let txid = match state.commit_kv_writes(&snapshot, &reads, writes).await {
            Ok(Some(txid)) => Some(txid),
            Ok(None) => state.read_txid().ok(),
            Err(None) => continue,
            Err(Some(e)) => return Err(e),
        };
        return Ok(endpoint_response(reply, txid, method == Method::HEAD));
    }
    Err(ApiError::Busy)
}

/// Checks the caller against the endpoint's policies (any one suffices, as in CCF) and builds
/// CCF's `request.caller` for the first that admits it; 401 if none does.
fn authenticate(state: &ApiState, caller: &Caller, policies: &[AuthnPolicy]) -> ApiResult<Value> {
    let now = crate::auth::unix_now();
    let mut refusal = ApiError::Unauthenticated;
    for policy in policies {
        let admitted = match (policy, caller) {
            (AuthnPolicy::NoAuth, _) => Ok(json!({"policy": "no_auth"})),
            (AuthnPolicy::AnyCert | AuthnPolicy::UserCert, Caller::Certificate { pem, .. }) => {
                caller.authenticated_id(now).and_then(|id| {
                    if *policy == AuthnPolicy::UserCert && state.user_record(id)?.is_none() {
                        return Err(ApiError::NotAllowed(format!(
                            "The client certificate {id} is not a user of this ledger."
                        )));
                    }
                    Ok(json!({"policy": policy.name(), "id": id, "cert": pem.as_deref()}))
                })
            }
            (AuthnPolicy::Jwt, Caller::Token { .. }) => caller
                .authenticated_id(now)
                .map(|id| json!({"policy": "jwt", "id": id, "jwt": {"payload": {"oid": id}}})),
            _ => continue,
        };
        match admitted {
            Ok(json) => return Ok(json),
            Err(e) => refusal = e,
        }
    }
    Err(refusal)
}

/// Request headers for JavaScript: lowercased names, repeated ones joined, credentials left
/// out (the caller object says who is calling).
fn js_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        if matches!(name.as_str(), "authorization" | "cookie") {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        match out.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            None => out.push((name.as_str().to_owned(), value.to_owned())),
        }
    }
    out
}

fn endpoint_response(
    reply: ledger_js::EndpointResponse,
    txid: Option<ledger_core::TxId>,
    head: bool,
) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut response = if head {
        status.into_response()
    } else {
        (status, reply.body).into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    if let Some(content_type) = reply
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        headers.insert(axum::http::header::CONTENT_TYPE, content_type);
    }
    if let Some(txid) = txid
        && let Ok(value) = HeaderValue::from_str(&txid.to_string())
    {
        headers.insert(response::TRANSACTION_ID_HEADER, value);
    }
    response
}
