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
//!
//! Version-dependent behaviour (acl-api.md §2.8, §2.9):
//! * Application claims follow policy (a): a write made with a claims-capable api-version
//!   (`2023-01-18-preview`, or `2026-02-23` and later) records a `LedgerEntryV1` claim with a
//!   fresh random key; other writes have a zero claims digest. The receipt always carries the
//!   entry's real `claimsDigest`; `applicationClaims` is shown only when the receipt is asked
//!   for with a claims-capable version.
//! * Tags (`tags=a,b` on write, `tag=x` on list, `GET /app/collections/tags`) exist from
//!   2024-12-09-preview on. With older versions `tags`/`tag` are refused with 400
//!   `InvalidQueryParameterValue` rather than ignored: silently dropping a tag or a filter
//!   would store or return something other than what the client asked for.
//! * Hooks (`preHooks`, `postHooks` in the body, 2024-12-09-preview on): each names a
//!   user-defined function, run in order (pre-hooks, then post-hooks) before the entry is
//!   submitted; what they write to application tables is part of the entry's transaction.
//!   The first failing hook fails the write with ACL's 500 `InternalError` and nothing is
//!   written. With an older api-version they are refused (400), not ignored: silently
//!   skipping a validation hook would store what it should have refused.

use super::{RequestContext, functions};
use crate::auth::unix_now;
use crate::body;
use crate::config::MAX_COLLECTION_ID_BYTES;
use crate::error::{ApiError, ApiResult};
use crate::idempotency;
use crate::names;
use crate::paging::{self, PAGE_SIZE};
use crate::programs::definitions;
use crate::programs::pending::{ReadSet, Snapshot, SubmitError, kv_writes};
use crate::programs::{FunctionCall, MAX_ATTEMPTS, MAX_HOOKS};
use crate::query::QueryParams;
use crate::response;
use crate::state::ApiState;
use crate::version::ApiVersion;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use ledger_core::TxId;
use ledger_core::entry::KvWrite;
use ledger_core::entry::{ApplicationEntry, DEFAULT_COLLECTION, IdempotencyRecord};
use ledger_core::hash::Hash32;
use ledger_core::receipt::ReceiptResponse;
use ledger_store::{EntryRecord, TxStatus, WriteRequest};
use serde_json::{Value, json};
use std::sync::Arc;

/// `collectionId`, or the default collection when it is absent or empty. Every route that
/// takes a collection id reads it here, so a write and a read refuse the same ids.
fn collection_id(query: &QueryParams) -> ApiResult<String> {
    let id = match query.get("collectionId")? {
        Some(id) if !id.is_empty() => id,
        _ => DEFAULT_COLLECTION,
    };
    names::check(id).map_err(|why| {
        ApiError::InvalidInput(format!(
            "The collection id {why}; {}. Nothing was done.",
            names::RULE
        ))
    })?;
    Ok(id.to_owned())
}

fn entry_json(record: &EntryRecord) -> Value {
    json!({
        "collectionId": record.entry.collection_id,
        "contents": record.entry.contents,
        "transactionId": record.txid.to_string(),
    })
}

/// Most distinct tags per collection (acl-api.md §2.8).
pub const MAX_TAGS_PER_COLLECTION: usize = 10_000;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// Most tags on one entry.
pub const MAX_TAGS_PER_ENTRY: usize = 64;
// Checked here first, with ACL's errors; the store's own limits are looser (`ledger_store::limits`).
const _: () = assert!(MAX_TAG_BYTES <= ledger_store::limits::MAX_TAG_BYTES);
const _: () = assert!(MAX_TAGS_PER_ENTRY <= ledger_store::limits::MAX_TAGS_PER_ENTRY);
/// Most tags per page of `GET /app/collections/tags`.
const TAGS_PAGE: usize = 1000;

/// Refuses a version-specific parameter the requested version does not have.
fn refuse_param(version: ApiVersion, name: &str) -> ApiError {
    ApiError::InvalidQueryParameter(format!(
        "The query parameter '{name}' does not exist in api-version {}; tags need \
         api-version 2024-12-09-preview or later.",
        version.as_str()
    ))
}

fn check_tag(tag: &str) -> ApiResult<()> {
    if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
        return Err(ApiError::InvalidQueryParameter(format!(
            "A tag holds 1 to {MAX_TAG_BYTES} bytes; one given holds {}.",
            tag.len()
        )));
    }
    names::check(tag)
        .map_err(|why| ApiError::InvalidQueryParameter(format!("A tag {why}; {}.", names::RULE)))
}

/// The `tags` of a write: comma-separated, each valid, duplicates dropped, order kept.
fn write_tags(ctx: &RequestContext) -> ApiResult<Vec<String>> {
    let Some(raw) = ctx.query.get("tags")? else {
        return Ok(Vec::new());
    };
    if !ctx.version.has_tags() {
        return Err(refuse_param(ctx.version, "tags"));
    }
    let mut tags: Vec<String> = Vec::new();
    for tag in raw.split(',') {
        check_tag(tag)?;
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    if tags.len() > MAX_TAGS_PER_ENTRY {
        return Err(ApiError::InvalidQueryParameter(format!(
            "An entry may have at most {MAX_TAGS_PER_ENTRY} tags; {} were given.",
            tags.len()
        )));
    }
    Ok(tags)
}

/// The `tag` filter of a list.
fn filter_tag(ctx: &RequestContext) -> ApiResult<Option<String>> {
    let Some(tag) = ctx.query.get("tag")? else {
        return Ok(None);
    };
    if !ctx.version.has_tags() {
        return Err(refuse_param(ctx.version, "tag"));
    }
    check_tag(tag)?;
    Ok(Some(tag.to_owned()))
}

/// The transaction id of a path segment (see the module docs for the 404).
pub(super) fn path_txid(segment: Result<Path<String>, PathRejection>) -> ApiResult<TxId> {
    let text = segment.map(|Path(s)| s).unwrap_or_default();
    TxId::parse(&text).map_err(|e| ApiError::InvalidTransactionId(e.to_string()))
}

/// A transaction id query parameter.
pub(super) fn query_txid(query: &QueryParams, name: &str) -> ApiResult<Option<TxId>> {
    query
        .get(name)?
        .map(|text| {
            TxId::parse(text)
                .map_err(|e| ApiError::InvalidTransactionIdParameter(format!("{name}: {e}")))
        })
        .transpose()
}

/// Fails unless `txid` is committed (see the module docs for the codes).
pub(super) fn require_committed(state: &ApiState, txid: TxId) -> ApiResult<()> {
    match state.ledger.try_status(txid)? {
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
    ctx: RequestContext,
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
    let _admitted = state.admit_write(ctx.caller.user_id().unwrap_or_default(), &headers)?;
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
    let tags = write_tags(&ctx)?;
    let claims_key = if ctx.version.has_application_claims() {
        Some(ledger_store::crypto::random_key().map_err(|e| {
            ApiError::Internal(format!("No random key for the application claim: {e}"))
        })?)
    } else {
        None
    };
    let key_digest = match idempotency::request_key(
        &headers,
        state.config.client_request_id_is_idempotency_key,
    )? {
        Some(key) => Some(idempotency::key_digest(
            ctx.caller.user_id().unwrap_or_default(),
            &key,
        )),
        None => None,
    };
    // Held until this write is answered: a concurrent retry waits, then finds it.
    let _key_guard = match key_digest {
        Some(digest) => Some(state.idempotency_locks.lock(digest).await),
        None => None,
    };
    let now = unix_now();
    if let Some(digest) = key_digest
        && let Some(original) = earlier_write(&state, &digest, now).await?
    {
        return replay(&state, original, &collection, &contents, &tags);
    }
    let hooks = hook_calls(&state, &ctx, &headers, &object, &collection, &contents)?;
    // Tags never disappear, so a write whose tags all exist already cannot exceed the cap.
    let mut new_tags = false;
    for tag in &tags {
        new_tags |= !state.ledger.has_tag(&collection, tag)?;
    }
    let mut attempts = 0;
    let txid = loop {
        attempts += 1;
        let run = run_hooks(&state, &hooks).await?;
        let kv_writes = run.as_ref().map(|r| r.writes.clone()).unwrap_or_default();
        let write = WriteRequest::Entry(ApplicationEntry {
            collection_id: collection.clone(),
            contents: contents.clone(),
            tags: tags.clone(),
            claims_key,
            idempotency: key_digest.map(|key_digest| IdempotencyRecord {
                key_digest,
                unix_secs: now,
            }),
            kv_writes,
        });
        match commit_entry(&state, write, &collection, &tags, new_tags, run).await {
            Ok(txid) => break txid,
            Err(None) if attempts < MAX_ATTEMPTS => continue,
            Err(None) => return Err(ApiError::Busy),
            Err(Some(e)) => return Err(e),
        }
    };
    Ok(response::json(txid, json!({"collectionId": collection})))
}

/// The hooks of a write (`preHooks`, then `postHooks`), ready to run; empty when it has none.
fn hook_calls(
    state: &Arc<ApiState>,
    ctx: &RequestContext,
    headers: &HeaderMap,
    object: &serde_json::Map<String, Value>,
    collection: &str,
    contents: &str,
) -> ApiResult<Vec<FunctionCall>> {
    let mut calls = Vec::new();
    let mut authorized = None;
    for member in ["preHooks", "postHooks"] {
        let hooks = match object.get(member) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(hooks)) => hooks,
            Some(other) => {
                return Err(ApiError::InvalidInput(format!(
                    "\"{member}\" must be an array of {{\"functionId\": \"...\"}}, not {}.",
                    body::kind(other)
                )));
            }
        };
        if hooks.is_empty() {
            continue;
        }
        ctx.version.require(
            ctx.version.has_user_defined_functions(),
            &format!("POST /app/transactions with {member}"),
            "2024-12-09-preview",
        )?;
        if hooks.len() > MAX_HOOKS {
            return Err(ApiError::InvalidInput(format!(
                "\"{member}\" has {} hooks; a write may have at most {MAX_HOOKS}.",
                hooks.len()
            )));
        }
        // Once per request, at the first hook: running hooks is running functions, so the
        // caller needs that action too; and the ledger's runtime options are their base.
        let base = match authorized {
            Some(base) => base,
            None => {
                crate::auth::authorize(
                    &*state.ledger,
                    &ctx.caller,
                    &axum::http::Method::POST,
                    super::paths::FUNCTION,
                    &ctx.path,
                    |id| state.user_record(id),
                )?;
                *authorized.insert(definitions::runtime_options(&*state.ledger)?)
            }
        };
        for (i, hook) in hooks.iter().enumerate() {
            let at = format!("{member}[{i}]");
            let hook = hook.as_object().ok_or_else(|| {
                ApiError::InvalidInput(format!(
                    "{at} must be an object {{\"functionId\": \"...\"}}."
                ))
            })?;
            if let Some(other) = hook
                .keys()
                .find(|k| !matches!(k.as_str(), "functionId" | "properties"))
            {
                return Err(ApiError::InvalidInput(format!(
                    "{at} has an unknown member {other:?}; a hook is {{\"functionId\", \"properties\"}}."
                )));
            }
            let id = hook
                .get("functionId")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::InvalidInput(format!("{at} needs \"functionId\", a string."))
                })?;
            let code = definitions::function_code(&*state.ledger, id)?.ok_or_else(|| {
                ApiError::InvalidInput(format!("{at}: there is no user-defined function {id:?}."))
            })?;
            let properties = match hook.get("properties") {
                None | Some(Value::Null) => serde_json::Map::new(),
                Some(Value::Object(p)) => p.clone(),
                Some(other) => {
                    return Err(ApiError::InvalidInput(format!(
                        "{at}: \"properties\" must be an object, not {}.",
                        body::kind(other)
                    )));
                }
            };
            let context = functions::request_context(ctx, headers, Some((collection, contents)));
            calls.push(functions::function_call(
                id,
                code,
                &properties,
                base,
                context,
            )?);
        }
    }
    Ok(calls)
}

/// What a request's hooks did: the snapshot they ran from, what they wrote and read.
struct HooksDone {
    snapshot: Snapshot,
    writes: Vec<KvWrite>,
    reads: ReadSet,
}

/// Runs the hooks on an execution thread; `None` when there are none.
async fn run_hooks(state: &Arc<ApiState>, hooks: &[FunctionCall]) -> ApiResult<Option<HooksDone>> {
    if hooks.is_empty() {
        return Ok(None);
    }
    let snapshot = state.programs.pending.begin();
    let job_state = state.clone();
    let calls = hooks.to_vec();
    let run = state
        .programs
        .run(move || {
            crate::programs::run_hooks(&*job_state.ledger, &job_state.programs.pending, &calls)
        })
        .await??;
    Ok(Some(HooksDone {
        snapshot,
        writes: kv_writes(&run.writes),
        reads: run.reads,
    }))
}

/// Commits the entry (with its hooks' writes when `hooks` is the run of them); `Err(None)`
/// when the hooks must run again because the tables they read changed meanwhile.
async fn commit_entry(
    state: &Arc<ApiState>,
    write: WriteRequest,
    collection: &str,
    tags: &[String],
    new_tags: bool,
    hooks: Option<HooksDone>,
) -> Result<TxId, Option<ApiError>> {
    let submit = |write: WriteRequest| async {
        match &hooks {
            None => state.commit(write).await.map_err(Some),
            Some(done) => state
                .commit_programmed(&done.snapshot, &done.reads, write, &done.writes)
                .await
                .map_err(|e| match e {
                    SubmitError::Conflict => None,
                    SubmitError::Refused(e) => Some(crate::state::append_error(e)),
                }),
        }
    };
    if !new_tags && (collection == DEFAULT_COLLECTION || state.collection_known(collection)) {
        submit(write).await
    } else {
        // Possibly a new collection or new tags: count and write under the lock, so two
        // requests cannot both create collection (or tag) number max+1.
        let _guard = state.check_then_write.lock().await;
        let api = |e: ApiError| Some(e);
        let existing = state.ledger.collections().map_err(|e| api(e.into()))?;
        let exists = existing.iter().any(|(id, _)| *id == collection);
        let others = existing
            .iter()
            .filter(|(id, _)| id != DEFAULT_COLLECTION)
            .count();
        if !exists && collection != DEFAULT_COLLECTION && others >= state.config.max_collections {
            return Err(api(ApiError::CollectionCapacityExceeded {
                limit: state.config.max_collections,
            }));
        }
        if new_tags {
            let mut added = 0;
            for tag in tags {
                added += usize::from(
                    !state
                        .ledger
                        .has_tag(collection, tag)
                        .map_err(|e| api(e.into()))?,
                );
            }
            if state
                .ledger
                .tags(collection)
                .map_err(|e| api(e.into()))?
                .len()
                + added
                > MAX_TAGS_PER_COLLECTION
            {
                return Err(api(ApiError::TagCapacityExceeded {
                    limit: MAX_TAGS_PER_COLLECTION,
                }));
            }
        }
        let txid = submit(write).await?;
        state.remember_collection(collection);
        Ok(txid)
    }
}

/// The committed write made earlier with this key, within the retention window.
async fn earlier_write(
    state: &Arc<ApiState>,
    digest: &Hash32,
    now: u64,
) -> ApiResult<Option<TxId>> {
    let Some((txid, written)) = state.ledger.idempotent_write(digest)? else {
        return Ok(None);
    };
    if now.saturating_sub(written) > state.config.idempotency_retention_secs {
        return Ok(None);
    }
    if state.ledger.status(txid) != TxStatus::Committed {
        // Durable but not signed yet (e.g. recovered at startup): it commits shortly.
        let ledger = state.ledger.clone();
        let status = tokio::task::spawn_blocking(move || {
            ledger.wait_committed(txid, std::time::Duration::from_secs(10))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("waiting for commit: {e}")))?;
        if status != TxStatus::Committed {
            return Err(ApiError::StorageUnavailable(format!(
                "The write made earlier with this idempotency key ({txid}) is not committed \
                 yet; retry shortly."
            )));
        }
    }
    Ok(Some(txid))
}

/// Answers a retried write with its original transaction, if the retry asks for the same write.
fn replay(
    state: &ApiState,
    txid: TxId,
    collection: &str,
    contents: &str,
    tags: &[String],
) -> ApiResult<Response> {
    let original = state.ledger.entry(txid)?.ok_or_else(|| {
        ApiError::Internal(format!(
            "the idempotency index names {txid}, which wrote no entry"
        ))
    })?;
    let e = &original.entry;
    if e.collection_id != collection || e.contents != contents || e.tags != tags {
        return Err(ApiError::IdempotencyKeyReused(format!(
            "This idempotency key was used for a different write ({txid}); use a new key for a \
             new write."
        )));
    }
    let mut response = response::json(txid, json!({"collectionId": e.collection_id}));
    response.headers_mut().insert(
        axum::http::HeaderName::from_static("idempotent-replayed"),
        axum::http::HeaderValue::from_static("true"),
    );
    Ok(response)
}

/// `GET /app/transactions`: entries of one collection in an inclusive range, 100 per page (fewer
/// when their contents exceed [`paging::PAGE_CONTENT_BYTES`]).
pub async fn list(State(state): State<Arc<ApiState>>, ctx: RequestContext) -> ApiResult<Response> {
    let collection = collection_id(&ctx.query)?;
    let tag = filter_tag(&ctx)?;
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
    let mut records = state.ledger.entries(
        &collection,
        tag.as_deref(),
        from_seqno,
        to.seqno(),
        PAGE_SIZE + 1,
    )?;
    let on_page = paging::entries_on_page(
        records.iter().map(|r| r.entry.contents.len()),
        PAGE_SIZE,
        paging::PAGE_CONTENT_BYTES,
    );
    let more = records.len() > on_page;
    records.truncate(on_page);
    let entries: Vec<Value> = records.iter().map(entry_json).collect();
    let mut page = serde_json::Map::new();
    page.insert("entries".into(), Value::Array(entries));
    page.insert("state".into(), Value::String("Ready".into()));
    if more && let Some(last) = records.last() {
        let next = format!("{}.{}", last.txid.view(), last.txid.seqno() + 1);
        let to = to.to_string();
        let mut params = vec![
            ("collectionId", collection.as_str()),
            ("fromTransactionId", next.as_str()),
            ("toTransactionId", to.as_str()),
        ];
        if let Some(tag) = &tag {
            params.push(("tag", tag.as_str()));
        }
        let link = paging::link(ctx.version, crate::routes::paths::TRANSACTIONS, &params);
        paging::insert_next_link(&mut page, ctx.version, link);
    }
    Ok(response::json(state.read_txid()?, Value::Object(page)))
}

/// `GET /app/transactions/{transactionId}`.
pub async fn entry(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
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
    ctx: RequestContext,
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
        application_claims: if ctx.version.has_application_claims() {
            bundle.application_claims
        } else {
            None
        },
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
    _: RequestContext,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let txid = path_txid(segment)?;
    let status = match state.ledger.try_status(txid)? {
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
    ctx: RequestContext,
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

/// `GET /app/collections/tags?collectionId=c`: the collection's distinct tags, sorted, up to
/// 1000 per page (continuation `afterTag`). An unknown collection has no tags.
pub async fn collection_tags(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
) -> ApiResult<Response> {
    ctx.version.require(
        ctx.version.has_tags(),
        "GET /app/collections/tags",
        "2024-12-09-preview",
    )?;
    let collection = collection_id(&ctx.query)?;
    let after = ctx.query.get("afterTag")?.map(str::to_owned);
    let mut tags: Vec<String> = state
        .ledger
        .tags(&collection)?
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(tag, _)| tag)
        .filter(|t| after.as_deref().is_none_or(|a| t.as_str() > a))
        .collect();
    tags.sort();
    let more = tags.len() > TAGS_PAGE;
    tags.truncate(TAGS_PAGE);
    let mut page = serde_json::Map::new();
    if more && let Some(last) = tags.last() {
        let link = paging::link(
            ctx.version,
            crate::routes::paths::COLLECTION_TAGS,
            &[("collectionId", &collection), ("afterTag", last)],
        );
        paging::insert_next_link(&mut page, ctx.version, link);
    }
    page.insert(
        "tags".into(),
        Value::Array(tags.into_iter().map(Value::String).collect()),
    );
    Ok(response::json(state.read_txid()?, Value::Object(page)))
}
