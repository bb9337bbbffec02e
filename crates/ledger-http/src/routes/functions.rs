//! User-defined functions (api-version 2024-12-09-preview): create or replace, read, list and
//! delete them (governance writes), and run one (`POST /app/userDefinedFunctions/{id}:execute`).
//! Hooks on writes are run by `transactions::create` through the same [`FunctionCall`].

use super::RequestContext;
use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::paging;
use crate::programs::definitions::{self, RuntimeOptions};
use crate::programs::pending::kv_writes;
use crate::programs::{FunctionCall, MAX_ATTEMPTS};
use crate::response;
use crate::state::ApiState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ledger_js::LogLevel;
use ledger_store::WriteRequest;
use serde_json::{Map, Value, json};
use std::sync::Arc;

const EXECUTE_SUFFIX: &str = ":execute";

fn require(ctx: &RequestContext, op: &str) -> ApiResult<()> {
    ctx.version.require(
        ctx.version.has_user_defined_functions(),
        op,
        "2024-12-09-preview",
    )
}

fn unknown_function(id: &str) -> ApiError {
    ApiError::NotFound(format!("There is no user-defined function {id:?}."))
}

fn function_json(id: &str, code: &str) -> Value {
    json!({"id": id, "code": code})
}

/// User-defined functions and endpoints exclude each other (as in ACL): a ledger runs one
/// kind of user code.
fn endpoints_deployed(state: &ApiState) -> ApiResult<bool> {
    Ok(definitions::bundle(&*state.ledger)?.is_some_and(|b| !b.is_empty()))
}

/// `GET /app/userDefinedFunctions`: functions by id, a page at a time (at most 100, and no
/// more code than 1 MiB unless one function alone is larger), with `nextLink` to the rest
/// (`?after=<last id>`).
pub async fn list(State(state): State<Arc<ApiState>>, ctx: RequestContext) -> ApiResult<Response> {
    require(&ctx, "GET /app/userDefinedFunctions")?;
    let after = ctx.query.get("after")?.map(str::to_owned);
    let all = definitions::functions(&*state.ledger)?;
    let rest: Vec<&(String, String)> = all
        .iter()
        .filter(|(id, _)| after.as_ref().is_none_or(|a| id > a))
        .collect();
    let count = paging::entries_on_page(
        rest.iter().map(|(_, code)| code.len()),
        paging::PAGE_SIZE,
        paging::PAGE_CONTENT_BYTES,
    );
    let functions: Vec<Value> = rest[..count]
        .iter()
        .map(|(id, code)| function_json(id, code))
        .collect();
    let mut page = Map::new();
    page.insert("functions".into(), Value::Array(functions));
    if count < rest.len()
        && let Some((last, _)) = rest[..count].last()
    {
        let link = paging::link(ctx.version, super::paths::FUNCTIONS, &[("after", last)]);
        paging::insert_next_link(&mut page, ctx.version, link);
    }
    Ok(response::json(state.read_txid()?, Value::Object(page)))
}

/// `GET /app/userDefinedFunctions/{id}`
pub async fn get(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require(&ctx, "GET /app/userDefinedFunctions/{functionId}")?;
    let code =
        definitions::function_code(&*state.ledger, &id)?.ok_or_else(|| unknown_function(&id))?;
    Ok(response::json(
        state.read_txid()?,
        function_json(&id, &code),
    ))
}

/// `PUT /app/userDefinedFunctions/{id}` with `{"code": "..."}`: 201 when created, 200 when
/// replaced, with the function.
pub async fn put(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
    Path(id): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> ApiResult<Response> {
    require(&ctx, "PUT /app/userDefinedFunctions/{functionId}")?;
    definitions::check_function_id(&id)?;
    let bytes = body::read(&headers, request_body, state.config.max_body_bytes).await?;
    let object = body::json_object(&bytes, r#"{"code":"export function main() { ... }"}"#)?;
    if let Some(other) = object.keys().find(|k| !matches!(k.as_str(), "code" | "id")) {
        return Err(ApiError::InvalidInput(format!(
            "Unknown member {other:?}; a function is {{\"code\": \"...\"}}."
        )));
    }
    let code = match object.get("code") {
        Some(Value::String(code)) if !code.trim().is_empty() => code.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::InvalidInput("\"code\" is empty.".into()));
        }
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "\"code\" must be a string of JavaScript, not {}.",
                body::kind(other)
            )));
        }
        None => {
            return Err(ApiError::InvalidInput(
                "The request body has no \"code\"; send {\"code\": \"export function main() { ... }\"}."
                    .into(),
            ));
        }
    };
    if let Some(Value::String(given)) = object.get("id")
        && *given != id
    {
        return Err(ApiError::InvalidInput(format!(
            "The body names function {given:?} but the path names {id:?}."
        )));
    }
    let _guard = state.check_then_write.lock().await;
    if endpoints_deployed(&state)? {
        return Err(ApiError::InvalidInput(
            "User-defined endpoints are deployed; a ledger runs either user-defined functions or \
             endpoints. Deploy an empty bundle ({\"metadata\":{\"endpoints\":{}},\"modules\":[]}) \
             to switch to functions."
                .into(),
        ));
    }
    let existed = definitions::function_code(&*state.ledger, &id)?.is_some();
    let txid = state
        .commit(WriteRequest::Governance(vec![definitions::function_write(
            &id,
            Some(&code),
        )]))
        .await?;
    let mut response = response::json(txid, function_json(&id, &code));
    if !existed {
        *response.status_mut() = StatusCode::CREATED;
    }
    Ok(response)
}

/// `DELETE /app/userDefinedFunctions/{id}`: 204. The function stays in the ledger's history.
pub async fn delete(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require(&ctx, "DELETE /app/userDefinedFunctions/{functionId}")?;
    let _guard = state.check_then_write.lock().await;
    if definitions::function_code(&*state.ledger, &id)?.is_none() {
        return Err(unknown_function(&id));
    }
    let txid = state
        .commit(WriteRequest::Governance(vec![definitions::function_write(
            &id, None,
        )]))
        .await?;
    Ok(response::no_content(txid))
}

/// `POST /app/userDefinedFunctions/{id}:execute` (axum sees `{id}:execute` as the id).
pub async fn post(
    State(state): State<Arc<ApiState>>,
    ctx: RequestContext,
    Path(id): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> ApiResult<Response> {
    let Some(id) = id.strip_suffix(EXECUTE_SUFFIX) else {
        return Err(ApiError::MethodNotAllowed(format!(
            "POST is not an operation of /app/userDefinedFunctions/{id}; to run the function, \
             POST /app/userDefinedFunctions/{id}:execute."
        )));
    };
    require(&ctx, "POST /app/userDefinedFunctions/{functionId}:execute")?;
    let _admitted = state.admit_write(ctx.caller.user_id().unwrap_or_default(), &headers)?;
    let bytes = body::read(&headers, request_body, state.config.max_body_bytes).await?;
    let properties = if bytes.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        body::json_object(
            &bytes,
            r#"{"arguments":["a"],"exportedFunctionName":"main"}"#,
        )?
    };
    let code =
        definitions::function_code(&*state.ledger, id)?.ok_or_else(|| unknown_function(id))?;
    let base = definitions::runtime_options(&*state.ledger)?;
    let call = function_call(
        id,
        code,
        &properties,
        base,
        request_context(&ctx, &headers, None),
    )?;
    let call = Arc::new(call);
    for _ in 0..MAX_ATTEMPTS {
        let job = call.clone();
        let (execution, reads, snapshot) =
            crate::programs::run_in_view(&state, true, move |view| job.run(view)).await?;
        let mut result = match &execution.outcome {
            Ok(result) => {
                let mut r = json!({"status": "Succeeded", "result": {}});
                if let Some(value) = &result.return_value {
                    r["result"]["returnValue"] = json!(value);
                }
                r
            }
            Err(e) => json!({"status": "Failed", "error": {"message": call.failure_message(e)}}),
        };
        result["logs"] = execution.logs.iter().map(log_json).collect();
        let writes = kv_writes(&execution.writes);
        match state.commit_kv_writes(&snapshot, &reads, writes).await {
            Ok(Some(txid)) => return Ok(response::json(txid, result)),
            Ok(None) => return Ok((StatusCode::OK, axum::Json(result)).into_response()),
            Err(None) => continue,
            Err(Some(e)) => return Err(e),
        }
    }
    Err(ApiError::Busy)
}

fn log_json(line: &ledger_js::LogLine) -> Value {
    let level = match line.level {
        LogLevel::Debug => "debug",
        LogLevel::Log => "log",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    json!({"level": level, "message": line.message})
}

/// The `context.request` a function sees: the method, path, query and headers of the request
/// that ran it (without credentials).
pub fn request_context(
    ctx: &RequestContext,
    headers: &HeaderMap,
    entry: Option<(&str, &str)>,
) -> Value {
    let headers: Map<String, Value> = headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "authorization" | "cookie"))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), json!(value.to_str().ok()?))))
        .collect();
    let mut context = json!({
        "request": {
            "method": ctx.method.as_str(),
            "path": ctx.path,
            "route": ctx.route,
            "query": ctx.query.pairs().iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<String, Value>>(),
            "headers": headers,
        },
        "userId": ctx.caller.user_id(),
    });
    if let Some((collection, contents)) = entry {
        context["collectionId"] = json!(collection);
        context["contents"] = json!(contents);
    }
    context
}

/// A call of function `id` with ACL's execution properties (`arguments`,
/// `exportedFunctionName`, `runtimeOptions`), each checked.
pub fn function_call(
    id: &str,
    code: String,
    properties: &Map<String, Value>,
    base: RuntimeOptions,
    context: Value,
) -> ApiResult<FunctionCall> {
    if let Some(other) = properties.keys().find(|k| {
        !matches!(
            k.as_str(),
            "arguments" | "exportedFunctionName" | "runtimeOptions"
        )
    }) {
        return Err(ApiError::InvalidInput(format!(
            "Unknown execution property {other:?}; the properties are arguments, \
             exportedFunctionName and runtimeOptions."
        )));
    }
    let arguments = match properties.get("arguments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| {
                a.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::InvalidInput(format!(
                        "\"arguments\" must be an array of strings; {a} is not a string."
                    ))
                })
            })
            .collect::<ApiResult<_>>()?,
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "\"arguments\" must be an array of strings, not {}.",
                body::kind(other)
            )));
        }
    };
    let export = match properties.get("exportedFunctionName") {
        None | Some(Value::Null) => "main".to_owned(),
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "\"exportedFunctionName\" must be a non-empty string, not {other}."
            )));
        }
    };
    let options = match properties.get("runtimeOptions") {
        None | Some(Value::Null) => base,
        Some(Value::Object(patch)) => base.patched(patch)?,
        Some(other) => {
            return Err(ApiError::InvalidInput(format!(
                "\"runtimeOptions\" must be an object, not {}.",
                body::kind(other)
            )));
        }
    };
    Ok(FunctionCall {
        id: id.to_owned(),
        code,
        export,
        arguments,
        context,
        options,
    })
}
