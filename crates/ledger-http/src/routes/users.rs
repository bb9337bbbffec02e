//! `GET/PATCH/DELETE /app/users/{userId}` (2022-05-13 shape: one `assignedRole`), the user
//! list `GET /app/users` (2024-01-26-preview on; item member `users`, then `ledgerUsers`), and
//! the multi-role users of 2024-12-09-preview on: `GET /app/ledgerUsers` and
//! `GET/PATCH/DELETE /app/ledgerUsers/{userId}` with `assignedRoles`.
//!
//! A user's stored record is a list of roles; what it may do is the union of what its roles
//! allow, which for the built-in roles (each includes the one below) is its highest role.
//! That highest role is what the single-role `assignedRole` shows.
//!
//! The user id arrives raw (`5F:23:...`, as Python sends it) or percent-encoded (`5F%3A23...`,
//! as .NET sends it); the router decodes both. Changes are governance transactions answered
//! after commit with their own txid. They run under the check-then-write lock because each
//! first checks, against the state it commits on, that the caller still may make it and
//! grants or takes away only roles it holds (`crate::grants`), and that the ledger keeps at
//! least one administrator.

use super::RequestContext;
use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::grants::Grantor;
use crate::paging;
use crate::response;
use crate::state::ApiState;
use crate::users::{self, MAX_USER_ID_BYTES, Role, UserRecord};
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
    if id.is_empty() || id.len() > MAX_USER_ID_BYTES {
        return Err(ApiError::InvalidInput(format!(
            "A user id is a certificate fingerprint or an Entra object id: 1 to \
             {MAX_USER_ID_BYTES} bytes."
        )));
    }
    crate::names::check(&id).map_err(|why| {
        ApiError::InvalidInput(format!("The user id {why}; {}.", crate::names::RULE))
    })?;
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
    _: RequestContext,
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
    ctx: RequestContext,
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
    let grantor = Grantor::under_lock(&state, &ctx)?;
    let stored = record(&state, &id)?;
    let current = stored.as_ref().and_then(UserRecord::role);
    let role = match (requested, current) {
        (Some(role), _) | (None, Some(role)) => role,
        (None, None) => {
            return Err(ApiError::InvalidInput(format!(
                "{id} is not a user yet; \"assignedRole\" is required to create it."
            )));
        }
    };
    // The record becomes exactly [role]: any other role the user held is taken away.
    let before = stored.map(|r| r.roles).unwrap_or_default();
    grantor.may_change_roles(&state, &id, &before, &[role.as_str().to_owned()])?;
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
    ctx: RequestContext,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = user_id(segment)?;
    let _guard = state.check_then_write.lock().await;
    let grantor = Grantor::under_lock(&state, &ctx)?;
    let record = record(&state, &id)?.ok_or_else(|| unknown_user(&id))?;
    grantor.may_change_roles(&state, &id, &record.roles, &[])?;
    if record.role() == Some(Role::Administrator) {
        keep_an_administrator(&state, &id)?;
    }
    let txid = state
        .commit(WriteRequest::Governance(vec![users::user_removal(&id)]))
        .await?;
    Ok(response::no_content(txid))
}

/// One page of users and the link to the next.
type UserPage = (Vec<(String, UserRecord)>, Option<String>);

/// Most users per page of the user lists.
const USERS_PAGE: usize = 100;

/// The role shown as `assignedRole`: the highest built-in role, else the first stored name.
fn single_role(record: &UserRecord) -> Option<String> {
    match (record.role(), record.roles.first()) {
        (Some(role), _) => Some(role.as_str().to_owned()),
        (None, Some(other)) => Some(other.clone()),
        (None, None) => None,
    }
}

/// One page of users after the `afterUserId` continuation (ids sorted as stored), with the
/// next link if more follow.
fn user_page(state: &ApiState, ctx: &RequestContext, path: &str) -> ApiResult<UserPage> {
    let after = ctx.query.get("afterUserId")?.map(str::to_owned);
    let mut all: Vec<(String, UserRecord)> = state
        .ledger
        .governance_table(tables::USERS)?
        .into_iter()
        .filter_map(|(id, v)| UserRecord::parse(&v).map(|r| (id, r)))
        .filter(|(id, r)| !r.roles.is_empty() && after.as_deref().is_none_or(|a| id.as_str() > a))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let more = all.len() > USERS_PAGE;
    all.truncate(USERS_PAGE);
    let link = match (more, all.last()) {
        (true, Some((last, _))) => Some(paging::link(
            ctx.version,
            path,
            &[("afterUserId", last.as_str())],
        )),
        _ => None,
    };
    Ok((all, link))
}

/// `GET /app/users`: every user with its single `assignedRole`, under the item member the
/// version names (`users` or `ledgerUsers`).
pub async fn list(State(state): State<Arc<ApiState>>, ctx: RequestContext) -> ApiResult<Response> {
    let Some(key) = ctx.version.users_list_key() else {
        return Err(ctx
            .version
            .require(false, "GET /app/users", "2024-01-26-preview")
            .unwrap_err());
    };
    let (page, link) = user_page(&state, &ctx, crate::routes::paths::USERS)?;
    let items: Vec<Value> = page
        .iter()
        .filter_map(|(id, r)| single_role(r).map(|role| user_json(id, &role)))
        .collect();
    let mut body = serde_json::Map::new();
    body.insert(key.into(), Value::Array(items));
    if let Some(link) = link {
        paging::insert_next_link(&mut body, ctx.version, link);
    }
    Ok(response::json(state.read_txid()?, Value::Object(body)))
}

fn multi_json(id: &str, record: &UserRecord) -> Value {
    json!({"assignedRoles": record.roles, "userId": id})
}

fn require_multi(ctx: &RequestContext, operation: &str) -> ApiResult<()> {
    ctx.version.require(
        ctx.version.has_ledger_users(),
        operation,
        "2024-12-09-preview",
    )
}

/// `GET /app/ledgerUsers`.
pub async fn list_multi(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
) -> ApiResult<Response> {
    require_multi(&ctx, "GET /app/ledgerUsers")?;
    let (page, link) = user_page(&state, &ctx, crate::routes::paths::LEDGER_USERS)?;
    let items: Vec<Value> = page.iter().map(|(id, r)| multi_json(id, r)).collect();
    let mut body = serde_json::Map::new();
    body.insert("ledgerUsers".into(), Value::Array(items));
    if let Some(link) = link {
        paging::insert_next_link(&mut body, ctx.version, link);
    }
    Ok(response::json(state.read_txid()?, Value::Object(body)))
}

/// `GET /app/ledgerUsers/{userId}`.
pub async fn get_multi(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    require_multi(&ctx, "GET /app/ledgerUsers/{userId}")?;
    let id = user_id(segment)?;
    let record = record(&state, &id)?
        .filter(|r| !r.roles.is_empty())
        .ok_or_else(|| unknown_user(&id))?;
    Ok(response::json(state.read_txid()?, multi_json(&id, &record)))
}

/// `PATCH /app/ledgerUsers/{userId}`: creates the user or replaces its roles (a JSON merge
/// patch of `{"assignedRoles": [...]}`; arrays are replaced whole by a merge patch).
pub async fn patch_multi(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
    segment: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    request_body: Body,
) -> ApiResult<Response> {
    require_multi(&ctx, "PATCH /app/ledgerUsers/{userId}")?;
    let id = user_id(segment)?;
    let bytes = body::read(&headers, request_body, state.config.max_body_bytes).await?;
    let object = body::json_object(&bytes, r#"{"assignedRoles":["Reader"]}"#)?;
    let requested: Option<Vec<String>> = match object.get("assignedRoles") {
        None => None,
        Some(Value::Array(items)) => {
            let mut names = Vec::new();
            for item in items {
                let name = item.as_str().ok_or_else(|| {
                    ApiError::InvalidInput(format!(
                        "\"assignedRoles\" must hold role names, not {}.",
                        body::kind(item)
                    ))
                })?;
                names.push(name.to_owned());
            }
            if names.is_empty() {
                return Err(ApiError::InvalidInput(
                    "A user must have at least one role; to remove the user, use DELETE.".into(),
                ));
            }
            Some(names)
        }
        Some(Value::Null) => {
            return Err(ApiError::InvalidInput(
                "A user must have a role; to remove the user, use DELETE.".into(),
            ));
        }
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "\"assignedRoles\" must be an array of role names, not {}.",
                body::kind(other)
            )));
        }
    };
    let _guard = state.check_then_write.lock().await;
    let grantor = Grantor::under_lock(&state, &ctx)?;
    if let Some(names) = &requested {
        for name in names {
            if Role::parse(name).is_none()
                && crate::roles::custom_role(&*state.ledger, name)?.is_none()
            {
                return Err(ApiError::InvalidInput(format!(
                    "'{name}' is not a role; use Administrator, Contributor, Reader or a role \
                     defined with PUT /app/roles."
                )));
            }
        }
    }
    let current = record(&state, &id)?;
    let roles: Vec<String> = match (requested, &current) {
        (Some(roles), _) => roles,
        (None, Some(r)) => r.roles.clone(),
        (None, None) => {
            return Err(ApiError::InvalidInput(format!(
                "{id} is not a user yet; \"assignedRoles\" is required to create it."
            )));
        }
    };
    let before = current
        .as_ref()
        .map(|r| r.roles.as_slice())
        .unwrap_or_default();
    grantor.may_change_roles(&state, &id, before, &roles)?;
    let was_admin = current.as_ref().and_then(UserRecord::role) == Some(Role::Administrator);
    if was_admin && !roles.iter().any(|r| r == Role::Administrator.as_str()) {
        keep_an_administrator(&state, &id)?;
    }
    let write = users::user_roles_write(&id, &roles);
    let stored = write
        .value
        .as_deref()
        .and_then(UserRecord::parse)
        .ok_or_else(|| ApiError::Internal("user record did not round-trip".into()))?;
    let txid = state.commit(WriteRequest::Governance(vec![write])).await?;
    Ok(response::json(txid, multi_json(&id, &stored)))
}

/// `DELETE /app/ledgerUsers/{userId}`: 204, like `DELETE /app/users/{userId}`.
pub async fn delete_multi(
    state: State<Arc<ApiState>>,
    ctx: RequestContext,
    segment: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    require_multi(&ctx, "DELETE /app/ledgerUsers/{userId}")?;
    delete(state, ctx, segment).await
}
