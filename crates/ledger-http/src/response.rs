//! Successful responses: compact JSON, `Content-Type: application/json` exactly, and the
//! `x-ms-ccf-transaction-id` header every 2xx must carry (acl-api.md §1.3). Object keys come
//! out sorted because `serde_json::Value` maps are ordered maps, as CCF's are.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ledger_core::TxId;
use serde_json::Value;

pub const TRANSACTION_ID_HEADER: HeaderName = HeaderName::from_static("x-ms-ccf-transaction-id");

/// 200 with `body`, served at (or written by) transaction `txid`. Serialized straight into
/// the body's buffer (`Value`'s `Display` goes through `fmt`, and `(StatusCode, String)` would
/// set a text content type only to have it replaced).
pub fn json(txid: TxId, body: Value) -> Response {
    match serde_json::to_vec(&body) {
        Ok(bytes) => with_txid(txid, Response::new(bytes.into()), true),
        // A `Value` has only string keys, so this is not reached; answered, not panicked.
        Err(e) => crate::error::ApiError::Internal(format!("The answer cannot be written: {e}."))
            .into_response(),
    }
}

/// 200 with the bytes of a `content_type` document, served at transaction `txid`.
pub fn bytes(txid: TxId, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = with_txid(txid, (StatusCode::OK, body).into_response(), false);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// 200 with an empty body, written by transaction `txid`.
pub fn empty(txid: TxId) -> Response {
    with_txid(txid, StatusCode::OK.into_response(), false)
}

/// 204 with an empty body, written by transaction `txid`.
pub fn no_content(txid: TxId) -> Response {
    with_txid(txid, StatusCode::NO_CONTENT.into_response(), false)
}

fn with_txid(txid: TxId, mut response: Response, is_json: bool) -> Response {
    let headers = response.headers_mut();
    if is_json {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Ok(mut value) = HeaderValue::try_from(txid.to_string()) {
        // Nearly unique per response: not worth a slot in HTTP/2's header compression table.
        value.set_sensitive(true);
        headers.insert(TRANSACTION_ID_HEADER, value);
    }
    response
}
