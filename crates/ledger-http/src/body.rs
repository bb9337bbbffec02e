//! Request bodies: a hard size cap, the media type, and JSON objects with specific complaints.
//!
//! The cap is enforced while reading (a `Content-Length` that is too big is refused before
//! anything is read), so an oversized body costs at most the cap in memory. The media type is
//! checked only when one is sent: SDKs send `application/json` or, for user PATCHes,
//! `application/merge-patch+json`; anything else (say, a form) is a mistake worth naming.

use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};

/// The size the request declares in `Content-Length`, if it declares a readable one.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads the whole JSON body, refusing another media type with 415 and more than `limit`
/// bytes with 413.
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Vec<u8>> {
    check_media_type(headers)?;
    read_any(headers, body, limit).await
}

/// Reads the whole body of any media type (a deployed endpoint's), refusing more than `limit`
/// bytes with 413.
pub async fn read_any(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Vec<u8>> {
    if declared_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<LengthLimitError>() => Err(ApiError::BodyTooLarge { limit }),
        Err(e) => Err(ApiError::InvalidInput(format!(
            "The request body could not be read: {e}"
        ))),
    }
}

fn check_media_type(headers: &HeaderMap) -> ApiResult<()> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "application/merge-patch+json" => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "The request body must be JSON (Content-Type: application/json), not {:?}.",
            value.to_str().unwrap_or("(not text)")
        ))),
    }
}

/// Parses `bytes` as a JSON object; `example` shows the expected shape in error messages.
pub fn json_object(bytes: &[u8], example: &str) -> ApiResult<Map<String, Value>> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            ApiError::InvalidInput(format!("The request body is empty; expected {example}."))
        } else {
            ApiError::InvalidInput(format!(
                "The request body is not valid JSON ({e}); expected {example}."
            ))
        }
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::InvalidInput(format!(
            "The request body must be a JSON object like {example}, not {}.",
            kind(&other)
        ))),
    }
}

/// "a string", "a number", ...: for messages about a value of the wrong type.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
