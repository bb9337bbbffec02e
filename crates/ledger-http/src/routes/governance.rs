//! Read-only facts about the ledger: its constitution, its member, its (absent) enclave, and
//! its collections. None of them is paged in practice: each list fits one page, so no
//! `nextLink` is sent (the item arrays are always present, as the Python pagers require).

use super::RequestContext;
use crate::error::ApiResult;
use crate::response;
use crate::state::ApiState;
use axum::extract::State;
use axum::response::Response;
use ledger_core::entry::DEFAULT_COLLECTION;
use serde_json::json;
use std::sync::Arc;

pub async fn constitution(
    State(state): State<Arc<ApiState>>,
    _: RequestContext,
) -> ApiResult<Response> {
    let body = json!({"digest": state.constitution_digest, "script": crate::CONSTITUTION});
    Ok(response::json(state.read_txid()?, body))
}

/// The one member is the holder of the service identity key (see the constitution).
pub async fn members(State(state): State<Arc<ApiState>>, _: RequestContext) -> ApiResult<Response> {
    let body = json!({"members": [{
        "certificate": state.config.service_cert_pem,
        "id": state.member_id,
    }]});
    Ok(response::json(state.read_txid()?, body))
}

/// Honest about the platform: no TEE, so no quote, and a quote version that says so.
pub async fn enclave_quotes(
    State(state): State<Arc<ApiState>>,
    _: RequestContext,
) -> ApiResult<Response> {
    let node_id = &state.config.node_id;
    let body = json!({
        "currentNodeId": node_id,
        "enclaveQuotes": {node_id.as_str(): {
            "nodeId": node_id,
            "quoteVersion": "Insecure_Virtual",
            "raw": "",
        }},
    });
    Ok(response::json(state.read_txid()?, body))
}

/// Every collection with an entry, plus the default one, which always exists.
pub async fn collections(
    State(state): State<Arc<ApiState>>,
    _: RequestContext,
) -> ApiResult<Response> {
    let stored = state.ledger.collections()?;
    let ids = std::iter::once(DEFAULT_COLLECTION).chain(
        stored
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| *id != DEFAULT_COLLECTION),
    );
    let list: Vec<_> = ids.map(|id| json!({"collectionId": id})).collect();
    Ok(response::json(
        state.read_txid()?,
        json!({"collections": list}),
    ))
}
