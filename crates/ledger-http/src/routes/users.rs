//! `GET/PATCH/DELETE /app/users/{userId}` (2022-05-13 shape: one `assignedRole`).
//!
//! The user id arrives raw (`5F:23:...`, as Python sends it) or percent-encoded (`5F%3A23...`,
//! as .NET sends it); the router decodes both. Changes are governance transactions answered
//! after commit with their own txid. They run under the check-then-write lock because each
//! first checks that the ledger keeps at least one administrator.

use super::RequestContext;
use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::response;
use crate::state::ApiState;
use crate::users::{self, MAX_USER_ID_BYTES, Role, UserRecord};
use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use ledger_core::entry::tables;
use ledger_store::WriteRequest;
use serde_json::{Value, json};
use std::sync::Arc;

fn user_id(segment: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let id = segment
        .map_err(|e| ApiError::InvalidInput(format!("Bad user id: {e}")))?
        .0;
    if id.is_empty() || id.len() > MAX_USER_ID_BYTES || id.chars().any(char::is_control) {
        return Err(ApiError::InvalidInput(format!(
            "A user id is a certificate fingerprint or an Entra object id: 1 to \
             {MAX_USER_ID_BYTES} bytes without control characters."
        )));
    }
    Ok(users::normalize_user_id(&id))
}

fn record(state: &ApiState, id: &str) -> ApiResult<Option<UserRecord>> {
    Ok(state
        .ledger
        .governance(tables::USERS, id)?
        .and_then(|v| UserRecord::parse(&v)))
}

fn user_json(id: &str, role: &str) -> Value {
    json!({"assignedRole": role, "userId": id})
}

fn unknown_user(id: &str) -> ApiError {
    ApiError::NotFound(format!("{id} is not a user of this ledger."))
}

/// Refuses to take the Administrator role from `id` if no other user holds it.
fn keep_an_administrator(state: &ApiState, id: &str) -> ApiResult<()> {
    let others = state
        .ledger
        .governance_table(tables::USERS)?
        .iter()
        .filter(|(key, value)| {
            key != id
                && UserRecord::parse(value).and_then(|r| r.role()) == Some(Role::Administrator)
        })
        .count();
    if others == 0 {
        return Err(ApiError::LastAdministrator(format!(
            "{id} is the ledger's only administrator; make another user an Administrator first."
        )));
    }
    Ok(())
}

pub async fn get(
    State(state): State<Arc<ApiState>>,
    Extension(_): Extension<RequestContext>,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = user_id(segment)?;
    let record = record(&state, &id)?.ok_or_else(|| unknown_user(&id))?;
    let role = match (record.role(), record.roles.first()) {
        (Some(role), _) => role.as_str().to_owned(),
        (None, Some(other)) => other.clone(),
        (None, None) => return Err(unknown_user(&id)),
    };
    Ok(response::json(state.read_txid()?, user_json(&id, &role)))
}

/// Creates the user or changes its role (a JSON merge patch of `{"assignedRole"}`).
pub async fn patch(
    State(state): State<Arc<ApiState>>,
    Extension(_): Extension<RequestContext>,
    segment: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    request_body: Body,
) -> ApiResult<Response> {
    let id = user_id(segment)?;
    let bytes = body::read(&headers, request_body, state.config.max_body_bytes).await?;
    let object = body::json_object(&bytes, r#"{"assignedRole":"Reader"}"#)?;
    let requested = match object.get("assignedRole") {
        None => None,
        Some(Value::String(name)) => Some(Role::parse(name).ok_or_else(|| {
            ApiError::InvalidInput(format!(
                "'{name}' is not a role; use Administrator, Contributor or Reader."
            ))
        })?),
        Some(Value::Null) => {
            return Err(ApiError::InvalidInput(
                "A user must have a role; to remove the user, use DELETE.".into(),
            ));
        }
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "\"assignedRole\" must be a string, not {}.",
                body::kind(other)
            )));
        }
    };
    let _guard = state.check_then_write.lock().await;
    let current = record(&state, &id)?.and_then(|r| r.role());
    let role = match (requested, current) {
        (Some(role), _) | (None, Some(role)) => role,
        (None, None) => {
            return Err(ApiError::InvalidInput(format!(
                "{id} is not a user yet; \"assignedRole\" is required to create it."
            )));
        }
    };
    if current == Some(Role::Administrator) && role != Role::Administrator {
        keep_an_administrator(&state, &id)?;
    }
    let txid = state
        .commit(WriteRequest::Governance(vec![users::user_write(&id, role)]))
        .await?;
    Ok(response::json(txid, user_json(&id, role.as_str())))
}

pub async fn delete(
    State(state): State<Arc<ApiState>>,
    Extension(_): Extension<RequestContext>,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = user_id(segment)?;
    let _guard = state.check_then_write.lock().await;
    let record = record(&state, &id)?.ok_or_else(|| unknown_user(&id))?;
    if record.role() == Some(Role::Administrator) {
        keep_an_administrator(&state, &id)?;
    }
    let txid = state
        .commit(WriteRequest::Governance(vec![users::user_removal(&id)]))
        .await?;
    Ok(response::no_content(txid))
}
