//! User-defined roles at `/app/roles` (2024-08-22-preview on; acl-api.md §2.5).
//!
//! * `GET ?roleName=r`: one `Role` in 2024-08-22-preview, an array of `Role` from
//!   2024-12-09-preview on. Without `roleName` (from 2024-12-09-preview on) every role,
//!   built-in ones first. Built-in roles are shown with the actions they allow.
//! * `PUT` (create or replace) and `PATCH` (replace the actions of existing roles) take a
//!   JSON array of `{"roleName","roleActions":[...]}` (or `{"roles":[...]}`); 200 with no body,
//!   or from 2026-02-23 on 200 with `{"roles":[...]}`.
//! * `DELETE ?roleName=r`: 200, or 204 from 2026-02-23 on. A role still assigned to a user
//!   cannot be deleted (400 `InvalidInput` naming the users' count), so no user silently
//!   loses access.
//!
//! Built-in role names (in any letter case) cannot be defined, changed or deleted. A caller
//! may only give a role, or take from it, actions its own roles allow, checked against the
//! state the change commits on (`crate::grants`). Every action must be one of
//! [`crate::roles::ALL_ACTIONS`]; an unknown one is refused rather than stored, because an
//! action the server never checks would look like a permission and be none.
//! Every change is one governance transaction.

use super::RequestContext;
use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::grants::Grantor;
use crate::response;
use crate::roles::{self, ALL_ACTIONS, MAX_ROLE_NAME_BYTES, MAX_ROLES};
use crate::state::ApiState;
use crate::users::{Role, UserRecord};
use crate::version::ApiVersion;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use ledger_core::entry::tables;
use ledger_store::WriteRequest;
use serde_json::{Value, json};
use std::sync::Arc;

fn require(ctx: &RequestContext, op: &str) -> ApiResult<()> {
    ctx.version.require(
        ctx.version.has_user_defined_endpoints(),
        op,
        "2024-08-22-preview",
    )
}

fn role_json(name: &str, actions: &[String]) -> Value {
    json!({"roleActions": actions, "roleName": name})
}

fn builtin(role: Role) -> (String, Vec<String>) {
    (
        role.as_str().to_owned(),
        roles::builtin_actions(role)
            .into_iter()
            .map(str::to_owned)
            .collect(),
    )
}

fn lookup(state: &ApiState, name: &str) -> ApiResult<Option<(String, Vec<String>)>> {
    if let Some(role) = Role::parse(name) {
        return Ok(Some(builtin(role)));
    }
    Ok(roles::custom_role(&*state.ledger, name)?.map(|a| (name.to_owned(), a)))
}

fn unknown_role(name: &str) -> ApiError {
    ApiError::NotFound(format!("There is no role named '{name}'."))
}

fn role_name_param(ctx: &RequestContext) -> ApiResult<Option<String>> {
    Ok(ctx.query.get("roleName")?.map(str::to_owned))
}

pub async fn get(State(state): State<Arc<ApiState>>, ctx: RequestContext) -> ApiResult<Response> {
    require(&ctx, "GET /app/roles")?;
    let single = ctx.version == ApiVersion::V2024_08_22Preview;
    let body = match role_name_param(&ctx)? {
        Some(name) => {
            let (name, actions) = lookup(&state, &name)?.ok_or_else(|| unknown_role(&name))?;
            let role = role_json(&name, &actions);
            if single { role } else { json!([role]) }
        }
        None if single => {
            return Err(ApiError::InvalidQueryParameter(
                "GET /app/roles needs ?roleName= in api-version 2024-08-22-preview.".into(),
            ));
        }
        None => {
            let mut all: Vec<(String, Vec<String>)> = Role::ALL.into_iter().map(builtin).collect();
            all.extend(roles::custom_roles(&*state.ledger)?);
            Value::Array(all.iter().map(|(n, a)| role_json(n, a)).collect())
        }
    };
    Ok(response::json(state.read_txid()?, body))
}

/// Parses and validates the body of PUT/PATCH: a list of (name, actions).
fn parse_roles(bytes: &[u8]) -> ApiResult<Vec<(String, Vec<String>)>> {
    let example = r#"[{"roleName":"auditor","roleActions":["Microsoft.ConfidentialLedger/ledger/transactions/read"]}]"#;
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::InvalidInput(format!(
            "The request body is not valid JSON ({e}); expected {example}."
        ))
    })?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("roles") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(ApiError::InvalidInput(format!(
                    "The request body must be a JSON array of roles like {example}."
                )));
            }
        },
        other => {
            return Err(ApiError::InvalidInput(format!(
                "The request body must be a JSON array of roles like {example}, not {}.",
                body::kind(&other)
            )));
        }
    };
    if items.is_empty() {
        return Err(ApiError::InvalidInput(format!(
            "The request body names no role; expected {example}."
        )));
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for item in items {
        let name = item
            .get("roleName")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::InvalidInput(format!(
                    "Every role needs a string \"roleName\": {example}."
                ))
            })?;
        if name.is_empty() || name.len() > MAX_ROLE_NAME_BYTES {
            return Err(ApiError::InvalidInput(format!(
                "A role name holds 1 to {MAX_ROLE_NAME_BYTES} bytes."
            )));
        }
        crate::names::check(name).map_err(|why| {
            ApiError::InvalidInput(format!("The role name {why}; {}.", crate::names::RULE))
        })?;
        if Role::is_builtin_name(name) {
            return Err(ApiError::InvalidInput(format!(
                "'{name}' is a built-in role (in any letter case); it cannot be defined or \
                 changed."
            )));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(ApiError::InvalidInput(format!(
                "The role '{name}' is given twice."
            )));
        }
        let raw = item
            .get("roleActions")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ApiError::InvalidInput(format!(
                    "The role '{name}' needs an array \"roleActions\": {example}."
                ))
            })?;
        let mut actions: Vec<String> = Vec::new();
        for action in raw {
            let action = action.as_str().ok_or_else(|| {
                ApiError::InvalidInput(format!("\"roleActions\" of '{name}' must hold strings."))
            })?;
            if !roles::is_action(action) {
                return Err(ApiError::InvalidInput(format!(
                    "'{action}' is not an action cledger knows. Actions: {}.",
                    ALL_ACTIONS.join(", ")
                )));
            }
            if !actions.iter().any(|a| a == action) {
                actions.push(action.to_owned());
            }
        }
        out.push((name.to_owned(), actions));
    }
    Ok(out)
}

async fn upsert(
    state: Arc<ApiState>,
    ctx: RequestContext,
    headers: HeaderMap,
    request_body: Body,
    must_exist: bool,
) -> ApiResult<Response> {
    let bytes = body::read(&headers, request_body, state.config.max_body_bytes).await?;
    let given = parse_roles(&bytes)?;
    let _guard = state.check_then_write.lock().await;
    let grantor = Grantor::under_lock(&state, &ctx)?;
    let existing = roles::custom_roles(&*state.ledger)?;
    for (name, actions) in &given {
        let before = existing
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.as_slice())
            .unwrap_or_default();
        grantor.may_change_actions(name, before, actions)?;
    }
    let mut added = 0;
    for (name, _) in &given {
        let exists = existing.iter().any(|(n, _)| n == name);
        if must_exist && !exists {
            return Err(unknown_role(name));
        }
        if !exists {
            added += 1;
        }
    }
    if existing.len() + added > MAX_ROLES {
        return Err(ApiError::InvalidInput(format!(
            "A ledger may have at most {MAX_ROLES} user-defined roles."
        )));
    }
    let writes = given
        .iter()
        .map(|(name, actions)| roles::role_write(name, Some(actions)))
        .collect();
    let txid = state.commit(WriteRequest::Governance(writes)).await?;
    if ctx.version >= ApiVersion::V2026_02_23 {
        let list: Vec<Value> = given.iter().map(|(n, a)| role_json(n, a)).collect();
        Ok(response::json(txid, json!({"roles": list})))
    } else {
        Ok(response::empty(txid))
    }
}

/// `PUT /app/roles`: creates or replaces roles.
pub async fn put(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
    headers: HeaderMap,
    request_body: Body,
) -> ApiResult<Response> {
    require(&ctx, "PUT /app/roles")?;
    upsert(state, ctx, headers, request_body, false).await
}

/// `PATCH /app/roles`: replaces the actions of existing roles.
pub async fn patch(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
    headers: HeaderMap,
    request_body: Body,
) -> ApiResult<Response> {
    require(&ctx, "PATCH /app/roles")?;
    upsert(state, ctx, headers, request_body, true).await
}

/// `DELETE /app/roles?roleName=r`.
pub async fn delete(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
) -> ApiResult<Response> {
    require(&ctx, "DELETE /app/roles")?;
    let name = role_name_param(&ctx)?.ok_or_else(|| {
        ApiError::InvalidQueryParameter("DELETE /app/roles needs ?roleName=.".into())
    })?;
    let _guard = state.check_then_write.lock().await;
    let grantor = Grantor::under_lock(&state, &ctx)?;
    let custom = roles::custom_role(&*state.ledger, &name)?;
    // A user-defined role named like a built-in one in another letter case can only come from
    // an older version; it may be deleted.
    if Role::parse(&name).is_some() || (Role::is_builtin_name(&name) && custom.is_none()) {
        return Err(ApiError::InvalidInput(format!(
            "'{name}' is a built-in role; it cannot be deleted."
        )));
    }
    let actions = custom.ok_or_else(|| unknown_role(&name))?;
    grantor.may_delete_role(&name, &actions)?;
    let holders = state
        .ledger
        .governance_table(tables::USERS)?
        .iter()
        .filter(|(_, v)| UserRecord::parse(v).is_some_and(|r| r.roles.contains(&name)))
        .count();
    if holders > 0 {
        return Err(ApiError::InvalidInput(format!(
            "The role '{name}' is assigned to {holders} user(s); take it from them first \
             (PATCH /app/ledgerUsers/{{userId}})."
        )));
    }
    let txid = state
        .commit(WriteRequest::Governance(vec![roles::role_write(
            &name, None,
        )]))
        .await?;
    if ctx.version >= ApiVersion::V2026_02_23 {
        Ok(response::no_content(txid))
    } else {
        Ok(response::empty(txid))
    }
}
