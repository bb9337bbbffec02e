//! Successful responses: compact JSON, `Content-Type: application/json` exactly, and the
//! `x-ms-ccf-transaction-id` header every 2xx must carry (acl-api.md §1.3). Object keys come
//! out sorted because `serde_json::Value` maps are ordered maps, as CCF's are.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ledger_core::TxId;
use serde_json::Value;

pub const TRANSACTION_ID_HEADER: HeaderName = HeaderName::from_static("x-ms-ccf-transaction-id");

/// 200 with `body`, served at (or written by) transaction `txid`.
pub fn json(txid: TxId, body: Value) -> Response {
    with_txid(
        txid,
        (StatusCode::OK, body.to_string()).into_response(),
        true,
    )
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
    if let Ok(mut value) = HeaderValue::from_str(&txid.to_string()) {
        // Nearly unique per response: not worth a slot in HTTP/2's header compression table.
        value.set_sensitive(true);
        headers.insert(TRANSACTION_ID_HEADER, value);
    }
    response
}
