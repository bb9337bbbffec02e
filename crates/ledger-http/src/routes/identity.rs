//! The identity service (`GET /ledgerIdentity/{ledgerId}`), served by the ledger itself so a
//! client can fetch the certificate to pin without a separate host (acl-api.md §3). It needs
//! no authentication: it hands out only the public service certificate.

use super::RequestContext;
use crate::error::{ApiError, ApiResult};
use crate::response;
use crate::state::ApiState;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

pub async fn ledger_identity(
    State(state): State<Arc<ApiState>>,
    _: RequestContext,
    ledger_id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let ledger_id = ledger_id.map(|Path(id)| id).unwrap_or_default();
    if ledger_id != state.config.ledger_id {
        return Err(ApiError::NotFound(format!(
            "This server holds the ledger '{}', not '{ledger_id}'.",
            state.config.ledger_id
        )));
    }
    let body = json!({
        "ledgerId": state.config.ledger_id,
        "ledgerTlsCertificate": state.config.service_cert_pem,
    });
    Ok(response::json(state.read_txid()?, body))
}
