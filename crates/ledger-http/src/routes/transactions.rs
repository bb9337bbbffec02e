//! Ledger entries: write, list, read one, read the newest, status and receipt.
//!
//! Error choices (why each, acl-api.md §1.5, §2.2.5–2.2.10, §6.1):
//! * A transaction id in the *path* that cannot name a transaction (malformed, or its seqno
//!   belongs to another view) is 404 `InvalidTransactionId`: the resource cannot exist, and
//!   the Python poller stops on exactly that status and code instead of spinning.
//! * A malformed id in the *query* (`fromTransactionId`, `toTransactionId`) is a bad request:
//!   400 `InvalidTransactionId`.
//! * A well-formed id not committed yet, or beyond the ledger's end, is 404
//!   `TransactionPendingOrUnknown` (CCF's historical-query code). The status poller tolerates
//!   early 404s; writes are answered only after commit, so a txid a client got from a POST is
//!   never in this state.
//! * A committed transaction that wrote no entry to the requested collection (a governance or
//!   signature transaction, or an entry of another collection) is 404 `ResourceNotFound`.
//! * A receipt for the newest signature transaction does not exist until the next signature;
//!   it is 404 `TransactionPendingOrUnknown` rather than `Loading`, because on an idle ledger
//!   no further signature comes and a Loading answer would make the SDK poll forever.
//!
//! Every read is served at the last committed transaction, which the header names.

use super::RequestContext;
use crate::body;
use crate::config::MAX_COLLECTION_ID_BYTES;
use crate::error::{ApiError, ApiResult};
use crate::paging::{self, PAGE_SIZE};
use crate::query::QueryParams;
use crate::response;
use crate::state::ApiState;
use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use ledger_core::TxId;
use ledger_core::entry::{ApplicationEntry, DEFAULT_COLLECTION};
use ledger_core::receipt::ReceiptResponse;
use ledger_store::{EntryRecord, TxStatus, WriteRequest};
use serde_json::{Value, json};
use std::sync::Arc;

/// `collectionId`, or the default collection when it is absent or empty.
fn collection_id(query: &QueryParams) -> ApiResult<String> {
    Ok(match query.get("collectionId")? {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => DEFAULT_COLLECTION.to_owned(),
    })
}

fn entry_json(record: &EntryRecord) -> Value {
    json!({
        "collectionId": record.entry.collection_id,
        "contents": record.entry.contents,
        "transactionId": record.txid.to_string(),
    })
}

/// The transaction id of a path segment (see the module docs for the 404).
fn path_txid(segment: Result<Path<String>, PathRejection>) -> ApiResult<TxId> {
    let text = segment.map(|Path(s)| s).unwrap_or_default();
    TxId::parse(&text).map_err(|e| ApiError::InvalidTransactionId(e.to_string()))
}

/// A transaction id query parameter.
fn query_txid(query: &QueryParams, name: &str) -> ApiResult<Option<TxId>> {
    query
        .get(name)?
        .map(|text| {
            TxId::parse(text)
                .map_err(|e| ApiError::InvalidTransactionIdParameter(format!("{name}: {e}")))
        })
        .transpose()
}

/// Fails unless `txid` is committed (see the module docs for the codes).
fn require_committed(state: &ApiState, txid: TxId) -> ApiResult<()> {
    match state.ledger.status(txid) {
        TxStatus::Committed => Ok(()),
        TxStatus::Pending | TxStatus::Unknown => Err(pending_or_unknown(txid)),
        TxStatus::Invalid => Err(wrong_view(txid)),
    }
}

fn pending_or_unknown(txid: TxId) -> ApiError {
    ApiError::TransactionPendingOrUnknown(format!(
        "Transaction {txid} is not committed: it is pending, or the ledger has not reached it yet."
    ))
}

fn wrong_view(txid: TxId) -> ApiError {
    ApiError::InvalidTransactionId(format!(
        "Transaction {txid} does not exist: its sequence number belongs to a transaction of another view."
    ))
}

/// `POST /app/transactions`: answered once the entry is committed.
pub async fn create(
    State(state): State<Arc<ApiState>>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
    request_body: Body,
) -> ApiResult<Response> {
    let collection = collection_id(&ctx.query)?;
    if collection.len() > MAX_COLLECTION_ID_BYTES {
        return Err(ApiError::CollectionIdTooLong {
            size: collection.len(),
            limit: MAX_COLLECTION_ID_BYTES,
        });
    }
    let bytes = body::read(&headers, request_body, state.config.max_body_bytes).await?;
    let object = body::json_object(&bytes, r#"{"contents":"..."}"#)?;
    let contents = match object.get("contents") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "\"contents\" must be a string, not {}.",
                body::kind(other)
            )));
        }
        None => {
            return Err(ApiError::InvalidInput(
                "The request body has no \"contents\" field; send {\"contents\":\"...\"}.".into(),
            ));
        }
    };
    if contents.len() > state.config.max_entry_bytes {
        return Err(ApiError::EntryTooLarge {
            size: contents.len(),
            limit: state.config.max_entry_bytes,
        });
    }
    let write = WriteRequest::Entry(ApplicationEntry {
        collection_id: collection.clone(),
        contents,
        tags: Vec::new(),
        claims_key: None,
    });
    let txid = if collection == DEFAULT_COLLECTION || state.collection_known(&collection) {
        state.commit(write).await?
    } else {
        // Possibly a new collection: count and write under the lock, so two requests cannot
        // both create collection number max+1.
        let _guard = state.check_then_write.lock().await;
        let existing = state.ledger.collections()?;
        let exists = existing.iter().any(|(id, _)| *id == collection);
        let others = existing
            .iter()
            .filter(|(id, _)| id != DEFAULT_COLLECTION)
            .count();
        if !exists && others >= state.config.max_collections {
            return Err(ApiError::CollectionCapacityExceeded {
                limit: state.config.max_collections,
            });
        }
        let txid = state.commit(write).await?;
        state.remember_collection(&collection);
        txid
    };
    Ok(response::json(txid, json!({"collectionId": collection})))
}

/// `GET /app/transactions`: entries of one collection in an inclusive range, 100 per page.
pub async fn list(
    State(state): State<Arc<ApiState>>,
    Extension(ctx): Extension<RequestContext>,
) -> ApiResult<Response> {
    let collection = collection_id(&ctx.query)?;
    let from = query_txid(&ctx.query, "fromTransactionId")?;
    // Without an end, the range ends at the last committed transaction, pinned in the link so
    // later writes do not shift the pages.
    let to = match query_txid(&ctx.query, "toTransactionId")? {
        Some(to) => to,
        None => state.read_txid()?,
    };
    let from_seqno = from.map_or(1, TxId::seqno);
    if from_seqno > to.seqno() {
        return Err(ApiError::InvalidQueryParameter(format!(
            "fromTransactionId ({}) is after toTransactionId ({to}).",
            from.map_or_else(String::new, |f| f.to_string())
        )));
    }
    let mut records =
        state
            .ledger
            .entries(&collection, None, from_seqno, to.seqno(), PAGE_SIZE + 1)?;
    let more = records.len() > PAGE_SIZE;
    records.truncate(PAGE_SIZE);
    let entries: Vec<Value> = records.iter().map(entry_json).collect();
    let mut page = serde_json::Map::new();
    page.insert("entries".into(), Value::Array(entries));
    page.insert("state".into(), Value::String("Ready".into()));
    if more && let Some(last) = records.last() {
        let next = format!("{}.{}", last.txid.view(), last.txid.seqno() + 1);
        let link = paging::link(
            ctx.version,
            crate::routes::paths::TRANSACTIONS,
            &[
                ("collectionId", &collection),
                ("fromTransactionId", &next),
                ("toTransactionId", &to.to_string()),
            ],
        );
        paging::insert_next_link(&mut page, ctx.version, link);
    }
    Ok(response::json(state.read_txid()?, Value::Object(page)))
}

/// `GET /app/transactions/{transactionId}`.
pub async fn entry(
    State(state): State<Arc<ApiState>>,
    Extension(ctx): Extension<RequestContext>,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let txid = path_txid(segment)?;
    let collection = collection_id(&ctx.query)?;
    require_committed(&state, txid)?;
    let record = state
        .ledger
        .entry(txid)?
        .filter(|r| r.entry.collection_id == collection)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "Transaction {txid} wrote no entry to the collection '{collection}'."
            ))
        })?;
    let body = json!({"entry": entry_json(&record), "state": "Ready"});
    Ok(response::json(state.read_txid()?, body))
}

/// `GET /app/transactions/{transactionId}/receipt`.
pub async fn receipt(
    State(state): State<Arc<ApiState>>,
    Extension(_): Extension<RequestContext>,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let txid = path_txid(segment)?;
    require_committed(&state, txid)?;
    let bundle = state.ledger.receipt(txid)?.ok_or_else(|| {
        ApiError::TransactionPendingOrUnknown(format!(
            "Transaction {txid} is the newest signature; its receipt exists once the next \
             signature is written."
        ))
    })?;
    let body = ReceiptResponse {
        application_claims: None,
        receipt: Some(bundle.receipt),
        state: "Ready".into(),
        transaction_id: txid.to_string(),
    };
    let body = serde_json::to_value(&body)
        .map_err(|e| ApiError::Internal(format!("The receipt could not be serialized: {e}")))?;
    Ok(response::json(state.read_txid()?, body))
}

/// `GET /app/transactions/{transactionId}/status`.
pub async fn status(
    State(state): State<Arc<ApiState>>,
    Extension(_): Extension<RequestContext>,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let txid = path_txid(segment)?;
    let status = match state.ledger.status(txid) {
        TxStatus::Committed => "Committed",
        TxStatus::Pending => "Pending",
        TxStatus::Unknown => return Err(pending_or_unknown(txid)),
        TxStatus::Invalid => return Err(wrong_view(txid)),
    };
    let body = json!({"state": status, "transactionId": txid.to_string()});
    Ok(response::json(state.read_txid()?, body))
}

/// `GET /app/transactions/current`: the newest entry; `transactionId` is the read txid
/// (acl-api.md §2.2.10), the same as the header.
pub async fn current(
    State(state): State<Arc<ApiState>>,
    Extension(ctx): Extension<RequestContext>,
) -> ApiResult<Response> {
    let collection = collection_id(&ctx.query)?;
    let record = state.ledger.latest_entry(&collection)?.ok_or_else(|| {
        ApiError::NotFound(format!("The collection '{collection}' has no entries."))
    })?;
    let read = state.read_txid()?;
    let body = json!({
        "collectionId": record.entry.collection_id,
        "contents": record.entry.contents,
        "transactionId": read.to_string(),
    });
    Ok(response::json(read, body))
}
