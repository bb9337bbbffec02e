//! User-defined endpoints (ACL 2024-08-22-preview): a CCF JavaScript app bundle.
//!
//! Owns the conversion of an HTTP request into CCF's `Request` object and of the returned
//! CCF response object into an [`EndpointResponse`], with CCF's body rules.

use std::collections::BTreeMap;
use std::rc::Rc;

use rquickjs::{ArrayBuffer, Value};

use crate::engine::{self, Imports, normalize};
use crate::error::ScriptError;
use crate::function::load_export;
use crate::host::bin_to_bytes;
use crate::limits::{Limits, MAX_OUTPUT_BYTES};
use crate::{Execution, KvSource};

/// The HTTP request an endpoint sees (as CCF's `Request` object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointRequest {
    /// HTTP method, e.g. "GET".
    pub method: String,
    /// The full request target, path and query.
    pub url: String,
    /// The route template that matched, e.g. "/records/{id}".
    pub route: String,
    /// The path without the query.
    pub path: String,
    /// The query string without "?".
    pub query: String,
    /// The Host the client asked for.
    pub hostname: String,
    /// Request headers; names are lowercased and repeated headers joined with ", ".
    pub headers: Vec<(String, String)>,
    /// Path parameters from the route template.
    pub params: BTreeMap<String, String>,
    /// The request body.
    pub body: Vec<u8>,
    /// Installed as `request.caller`; built by the caller.
    pub caller: serde_json::Value,
}

/// The HTTP response an endpoint produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointResponse {
    /// `statusCode`, 200 when absent.
    pub status: u16,
    /// Headers the script set, except `content-type` (see `content_type`).
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
    /// The script's `content-type` header if it set one, otherwise the type implied by the
    /// body (`text/plain`, `application/octet-stream`, `application/json`); `None` when
    /// there is no body and no header.
    pub content_type: Option<String>,
}

fn request_meta(request: &EndpointRequest) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in &request.headers {
        let name = name.to_ascii_lowercase();
        let joined = match headers.get(&name).and_then(|v| v.as_str()) {
            Some(prev) => format!("{prev}, {value}"),
            None => value.clone(),
        };
        headers.insert(name, joined.into());
    }
    serde_json::json!({
        "method": request.method,
        "url": request.url,
        "route": request.route,
        "path": request.path,
        "query": request.query,
        "hostname": request.hostname,
        "headers": headers,
        "params": request.params,
        "caller": request.caller,
    })
}

/// Runs export `export` of `module` in the bundle `modules` with the CCF request object
/// and converts the returned CCF response object.
pub fn run_endpoint(
    modules: &BTreeMap<String, String>,
    module: &str,
    export: &str,
    request: &EndpointRequest,
    kv: &dyn KvSource,
    limits: &Limits,
) -> Execution<EndpointResponse> {
    let bundle: BTreeMap<String, String> = modules
        .iter()
        .filter_map(|(name, src)| Some((normalize(name)?, src.clone())))
        .collect();
    let entry = normalize(module).unwrap_or_else(|| module.to_owned());
    let source = bundle.get(&entry).cloned();
    let meta = request_meta(request).to_string();
    let body = request.body.clone();
    engine::execute(
        kv,
        limits,
        Imports::Bundle(Rc::new(bundle)),
        move |ctx, env| {
            let source = source.ok_or_else(|| ScriptError::ModuleNotFound {
                name: entry.clone(),
            })?;
            let func = load_export(ctx, env, &entry, &source, export)?;
            let meta = ctx.json_parse(meta).map_err(|e| env.classify(ctx, e))?;
            let body = ArrayBuffer::new(ctx.clone(), body).map_err(|e| env.classify(ctx, e))?;
            let req: Value = env
                .helper("makeRequest")?
                .call((meta, body))
                .map_err(|e| env.classify(ctx, e))?;
            let returned: Value = func.call((req,)).map_err(|e| env.classify(ctx, e))?;
            let returned = env.settle(ctx, returned)?;
            let converted: Value = env
                .helper("convertResponse")?
                .call((returned,))
                .map_err(|e| env.classify(ctx, e))?;
            if let Some(problem) = converted.as_string() {
                return Err(ScriptError::InvalidResponse {
                    message: problem.to_string().unwrap_or_default(),
                });
            }
            let internal = |e: rquickjs::Error| ScriptError::Internal {
                message: format!("response conversion: {e}"),
            };
            let parts = converted
                .into_array()
                .ok_or_else(|| internal(rquickjs::Error::new_from_js("value", "array")))?;
            let status: u16 = parts.get(0).map_err(internal)?;
            let headers: Vec<Vec<String>> = parts.get(1).map_err(internal)?;
            let content_type: Option<String> = parts.get(2).map_err(internal)?;
            let bin: String = parts.get(3).map_err(internal)?;
            if bin.len() > 2 * MAX_OUTPUT_BYTES {
                // Each byte is at most two UTF-8 bytes in the binary string; anything longer is over.
                return Err(ScriptError::OutputTooLarge {
                    what: "response body",
                    limit: MAX_OUTPUT_BYTES,
                });
            }
            let body = bin_to_bytes(&bin);
            if body.len() > MAX_OUTPUT_BYTES {
                return Err(ScriptError::OutputTooLarge {
                    what: "response body",
                    limit: MAX_OUTPUT_BYTES,
                });
            }
            let headers = headers
                .into_iter()
                .filter_map(|h| match <[String; 2]>::try_from(h) {
                    Ok([n, v]) => Some((n, v)),
                    Err(_) => None,
                })
                .collect();
            Ok(EndpointResponse {
                status,
                headers,
                body,
                content_type,
            })
        },
    )
}
