//! Proofs beyond ACL's JSON receipts: COSE receipts (CCF 7's `/receipt/cose`), consistency
//! proofs between two signed states, and the latest C2SP checkpoint with the proof of an entry
//! in it.
//!
//! A COSE receipt is the service key's root signature stored in the signature transaction
//! that covers the entry, with the entry's inclusion proof added (`ledger_core::cose`), so
//! it is the same bytes on every request and after a restart. Errors follow CCF's
//! `/receipt`: a well-formed id that names no committed transaction, or names a signature
//! transaction (its root signature *is* the evidence), is 404; a malformed `transaction_id`
//! query parameter is 400. On ACL's path form a malformed id is 404 `InvalidTransactionId`,
//! as it is for the JSON receipt (see `transactions`).
//!
//! A consistency answer (`GET /app/transactions/consistency?from=&to=`) carries both signed
//! states with their stored COSE root signatures, so a client verifies it with the service
//! certificate alone (`ledger_core::consistency`). Errors: `from` missing or malformed, an id
//! that is not a signature transaction (or names another view), or `from` after `to` is 400;
//! an id past the committed end is 404 `TransactionPendingOrUnknown`.
//!
//! `GET /app/checkpoint` is the latest checkpoint note as C2SP logs serve it (`text/plain`),
//! with the cosignatures the node's publisher collected from witnesses;
//! `GET /app/transactions/{id}/checkpoint` adds the service key's statement naming the
//! checkpoint key and the entry's RFC 6962 inclusion proof in that checkpoint (what an
//! evidence package carries, `ledger_core::witnessed`). Both are 404 `ResourceNotFound` on a
//! node that publishes no checkpoints, or before the first one (or, for an entry, before one
//! covers it).

use super::RequestContext;
use super::transactions::{path_txid, query_txid, require_committed};
use crate::checkpoints::{CheckpointBoard, PublishedCheckpoint};
use crate::error::{ApiError, ApiResult};
use crate::response;
use crate::state::ApiState;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use base64::Engine as _;
use ledger_core::TxId;
use ledger_core::consistency::{ConsistencyResponse, SignedState};
use ledger_core::witnessed::CheckpointEvidence;
use ledger_store::{ConsistencyRefusal, CoseReceipt, SignedTreeHead};
use std::sync::Arc;

/// The media type of a COSE message (RFC 9052 §11.2), which CCF serves receipts as.
const COSE_CONTENT_TYPE: &str = "application/cose";

/// `GET /app/transactions/{transactionId}/receipt/cose`.
pub async fn cose_receipt(
    State(state): State<Arc<ApiState>>,
    _: RequestContext,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    cose_receipt_of(&state, path_txid(segment)?)
}

/// `GET /app/receipt/cose?transaction_id=<txid>`, CCF 7's route.
pub async fn ccf_cose_receipt(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
) -> ApiResult<Response> {
    let txid = query_txid(&ctx.query, "transaction_id")?.ok_or_else(|| {
        ApiError::InvalidQueryParameter(
            "The query parameter 'transaction_id' is required (e.g. transaction_id=2.15).".into(),
        )
    })?;
    cose_receipt_of(&state, txid)
}

fn cose_receipt_of(state: &ApiState, txid: TxId) -> ApiResult<Response> {
    require_committed(state, txid)?;
    let signature_transaction = || {
        ApiError::NotFound(format!(
            "Transaction {txid} is a signature transaction: it has no COSE receipt, its own \
             root signature is the evidence."
        ))
    };
    // The only committed transaction without a receipt is the newest signature.
    let bundle = state
        .ledger
        .receipt(txid)?
        .ok_or_else(signature_transaction)?;
    match bundle.cose {
        CoseReceipt::Ready(bytes) => Ok(response::bytes(
            state.read_txid()?,
            COSE_CONTENT_TYPE,
            bytes,
        )),
        CoseReceipt::SignatureTransaction => Err(signature_transaction()),
        CoseReceipt::NotSigned => Err(ApiError::NotFound(format!(
            "Transaction {txid} is covered by a signature written before this ledger signed \
             roots with COSE: it has no COSE receipt. Its JSON receipt \
             (/app/transactions/{txid}/receipt) verifies."
        ))),
    }
}

/// `GET /app/transactions/consistency?from=<signature txid>[&to=<signature txid>]`.
pub async fn consistency(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
) -> ApiResult<Response> {
    let from = query_txid(&ctx.query, "from")?.ok_or_else(|| {
        ApiError::InvalidQueryParameter(
            "The query parameter 'from' is required: the transaction id of a signature \
             transaction (e.g. from=2.15)."
                .into(),
        )
    })?;
    let to = query_txid(&ctx.query, "to")?;
    let proof = state
        .ledger
        .consistency(from, to)?
        .map_err(|refusal| match refusal {
            ConsistencyRefusal::NotCommitted(txid) => ApiError::TransactionPendingOrUnknown(
                format!("Transaction {txid} is not committed: the ledger has not reached it."),
            ),
            ConsistencyRefusal::WrongView { .. } => {
                ApiError::InvalidTransactionIdParameter(format!("{refusal}."))
            }
            ConsistencyRefusal::NotASignature(_) | ConsistencyRefusal::FromAfterTo { .. } => {
                ApiError::InvalidQueryParameter(format!(
                    "Consistency is proven between signature transactions: {refusal}."
                ))
            }
        })?;
    let body = ConsistencyResponse {
        from: signed_state(proof.from),
        to: signed_state(proof.to),
        proof: proof.proof.iter().map(|h| h.to_hex()).collect(),
    };
    let body = serde_json::to_value(&body).map_err(|e| {
        ApiError::Internal(format!(
            "The consistency proof could not be serialized: {e}"
        ))
    })?;
    Ok(response::json(state.read_txid()?, body))
}

fn signed_state(head: SignedTreeHead) -> SignedState {
    SignedState {
        transaction_id: head.txid.to_string(),
        tree_size: head.txid.seqno(),
        root: head.root.to_hex(),
        signature: head
            .cose_signature
            .map(|s| base64::engine::general_purpose::STANDARD.encode(s)),
    }
}

/// `GET /app/checkpoint`.
pub async fn checkpoint(
    State(state): State<Arc<ApiState>>,
    _: RequestContext,
) -> ApiResult<Response> {
    let latest = latest_checkpoint(&state)?.1;
    Ok(response::bytes(
        state.read_txid()?,
        "text/plain; charset=utf-8",
        latest.note.into_bytes(),
    ))
}

/// `GET /app/transactions/{transactionId}/checkpoint`.
pub async fn entry_checkpoint(
    State(state): State<Arc<ApiState>>,
    _: RequestContext,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let txid = path_txid(segment)?;
    require_committed(&state, txid)?;
    let (board, latest) = latest_checkpoint(&state)?;
    if txid.seqno() >= latest.size {
        return Err(ApiError::NotFound(format!(
            "Transaction {txid} is not in the latest checkpoint yet (tree size {}); the next \
             one covers it.",
            latest.size
        )));
    }
    let path = state
        .ledger
        .rfc6962_inclusion_proof(txid.seqno(), latest.size)?;
    let body = CheckpointEvidence {
        checkpoint: latest.note,
        checkpoint_key: board.key().clone(),
        leaf_index: txid.seqno(),
        proof: path.iter().map(|step| step.hash().to_hex()).collect(),
    };
    let body = serde_json::to_value(&body).map_err(|e| {
        ApiError::Internal(format!(
            "The checkpoint evidence could not be serialized: {e}"
        ))
    })?;
    Ok(response::json(state.read_txid()?, body))
}

fn latest_checkpoint(state: &ApiState) -> ApiResult<(&CheckpointBoard, PublishedCheckpoint)> {
    let board = state.config.checkpoints.as_deref().ok_or_else(|| {
        ApiError::NotFound(
            "This node publishes no checkpoints (see checkpoint_interval_ms in OPERATIONS.md)."
                .into(),
        )
    })?;
    let latest = board.latest().ok_or_else(|| {
        ApiError::NotFound("No checkpoint has been published yet; retry in a few seconds.".into())
    })?;
    Ok((board, latest))
}
