//! What is deployed: user-defined functions, the endpoint bundle and the JavaScript runtime
//! options, all ledger state (governance writes to `public:cledger.functions` and
//! `public:cledger.programs`, so they are audited, replayed at every open and replicated), and
//! the checks a definition passes before it is written.

use crate::error::{ApiError, ApiResult};
use ledger_core::entry::{TableWrite, tables};
use ledger_store::LedgerHandle;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const BUNDLE_KEY: &str = "bundle";
const RUNTIME_OPTIONS_KEY: &str = "runtime_options";

/// Longest function id. Ids are path segments (`/app/userDefinedFunctions/{id}:execute`), so
/// they hold only characters that need no escaping and no `:`.
pub const MAX_FUNCTION_ID_BYTES: usize = 128;

/// Checks a function id: 1 to 128 of `A-Z a-z 0-9 _ - .`.
pub fn check_function_id(id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > MAX_FUNCTION_ID_BYTES {
        return Err(ApiError::InvalidInput(format!(
            "A function id is 1 to {MAX_FUNCTION_ID_BYTES} characters long; this one has {}.",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(ApiError::InvalidInput(format!(
            "A function id may hold only letters, digits, '_', '-' and '.'; {c:?} is not allowed."
        )));
    }
    Ok(())
}

/// The source of function `id`, if it exists.
pub fn function_code(ledger: &dyn LedgerHandle, id: &str) -> ApiResult<Option<String>> {
    Ok(ledger
        .governance(tables::FUNCTIONS, id)?
        .map(|code| String::from_utf8_lossy(&code).into_owned()))
}

/// Every function, sorted by id.
pub fn functions(ledger: &dyn LedgerHandle) -> ApiResult<Vec<(String, String)>> {
    let mut all: Vec<(String, String)> = ledger
        .governance_table(tables::FUNCTIONS)?
        .into_iter()
        .map(|(id, code)| (id, String::from_utf8_lossy(&code).into_owned()))
        .collect();
    all.sort();
    Ok(all)
}

pub fn function_write(id: &str, code: Option<&str>) -> TableWrite {
    TableWrite {
        table: tables::FUNCTIONS.into(),
        key: id.into(),
        value: code.map(|c| c.as_bytes().to_vec()),
    }
}

/// CCF's JavaScript runtime options (`ccf.gov.msg.type: set_js_runtime_options`), as ACL
/// serves them at `/app/userDefinedEndpoints/runtimeOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOptions {
    pub max_heap_bytes: u64,
    pub max_stack_bytes: u64,
    pub max_execution_time_ms: u64,
    pub log_exception_details: bool,
    pub return_exception_details: bool,
    /// Kept and served for compatibility; every execution gets a fresh interpreter here, so
    /// nothing is cached.
    pub max_cached_interpreters: u64,
}

/// Bounds of each option: QuickJS needs some heap and stack to start at all, and ACL limits
/// an execution to 5 seconds.
const HEAP_BYTES: (u64, u64) = (256 << 10, 256 << 20);
const STACK_BYTES: (u64, u64) = (64 << 10, 8 << 20);
const EXECUTION_MS: (u64, u64) = (1, 5_000);
const CACHED_INTERPRETERS: (u64, u64) = (0, 1 << 20);

impl Default for RuntimeOptions {
    /// ACL's documented defaults for user-defined functions.
    fn default() -> Self {
        RuntimeOptions {
            max_heap_bytes: 10 << 20,
            max_stack_bytes: 1 << 20,
            max_execution_time_ms: 1_000,
            log_exception_details: true,
            return_exception_details: true,
            max_cached_interpreters: 10,
        }
    }
}

impl RuntimeOptions {
    pub fn to_json(self) -> Value {
        json!({
            "max_heap_bytes": self.max_heap_bytes,
            "max_stack_bytes": self.max_stack_bytes,
            "max_execution_time_ms": self.max_execution_time_ms,
            "log_exception_details": self.log_exception_details,
            "return_exception_details": self.return_exception_details,
            "max_cached_interpreters": self.max_cached_interpreters,
        })
    }

    /// Applies the members of `patch` (a JSON merge patch of CCF's names), checking each;
    /// unknown members and values out of bounds are refused, naming them.
    pub fn patched(mut self, patch: &Map<String, Value>) -> ApiResult<RuntimeOptions> {
        for (name, value) in patch {
            let number = |(low, high): (u64, u64)| -> ApiResult<u64> {
                match value.as_u64() {
                    Some(n) if (low..=high).contains(&n) => Ok(n),
                    _ => Err(ApiError::InvalidInput(format!(
                        "Runtime option {name:?} must be an integer from {low} to {high}, not {value}."
                    ))),
                }
            };
            let flag = || -> ApiResult<bool> {
                value.as_bool().ok_or_else(|| {
                    ApiError::InvalidInput(format!(
                        "Runtime option {name:?} must be true or false, not {value}."
                    ))
                })
            };
            match name.as_str() {
                "max_heap_bytes" => self.max_heap_bytes = number(HEAP_BYTES)?,
                "max_stack_bytes" => self.max_stack_bytes = number(STACK_BYTES)?,
                "max_execution_time_ms" => self.max_execution_time_ms = number(EXECUTION_MS)?,
                "max_cached_interpreters" => {
                    self.max_cached_interpreters = number(CACHED_INTERPRETERS)?
                }
                "log_exception_details" => self.log_exception_details = flag()?,
                "return_exception_details" => self.return_exception_details = flag()?,
                other => {
                    return Err(ApiError::InvalidInput(format!(
                        "Unknown runtime option {other:?}; the options are max_heap_bytes, \
                         max_stack_bytes, max_execution_time_ms, log_exception_details, \
                         return_exception_details and max_cached_interpreters."
                    )));
                }
            }
        }
        Ok(self)
    }

    pub fn limits(self) -> ledger_js::Limits {
        ledger_js::Limits {
            max_heap_bytes: usize::try_from(self.max_heap_bytes).unwrap_or(usize::MAX),
            max_stack_bytes: usize::try_from(self.max_stack_bytes).unwrap_or(usize::MAX),
            max_execution_time: Duration::from_millis(self.max_execution_time_ms),
        }
    }
}

/// The ledger's runtime options (the defaults until changed).
pub fn runtime_options(ledger: &dyn LedgerHandle) -> ApiResult<RuntimeOptions> {
    let Some(stored) = ledger.governance(tables::PROGRAMS, RUNTIME_OPTIONS_KEY)? else {
        return Ok(RuntimeOptions::default());
    };
    let value: Value = serde_json::from_slice(&stored)
        .map_err(|e| ApiError::Internal(format!("The stored runtime options are not JSON: {e}")))?;
    let object = value.as_object().ok_or_else(|| {
        ApiError::Internal("The stored runtime options are not a JSON object".into())
    })?;
    RuntimeOptions::default().patched(object)
}

pub fn runtime_options_write(options: RuntimeOptions) -> TableWrite {
    TableWrite {
        table: tables::PROGRAMS.into(),
        key: RUNTIME_OPTIONS_KEY.into(),
        value: Some(options.to_json().to_string().into_bytes()),
    }
}

/// How a deployed endpoint authenticates its callers (CCF's `authn_policies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthnPolicy {
    /// Anyone, authenticated or not.
    NoAuth,
    /// A client certificate registered as a ledger user.
    UserCert,
    /// Any client certificate.
    AnyCert,
    /// A bearer token of a ledger user.
    Jwt,
}

impl AuthnPolicy {
    fn parse(name: &str) -> Option<AuthnPolicy> {
        Some(match name {
            "no_auth" => AuthnPolicy::NoAuth,
            "user_cert" => AuthnPolicy::UserCert,
            "any_cert" => AuthnPolicy::AnyCert,
            "jwt" => AuthnPolicy::Jwt,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AuthnPolicy::NoAuth => "no_auth",
            AuthnPolicy::UserCert => "user_cert",
            AuthnPolicy::AnyCert => "any_cert",
            AuthnPolicy::Jwt => "jwt",
        }
    }
}

/// Whether a deployed endpoint may write (CCF's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    ReadOnly,
}

/// One deployed endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The template as deployed, e.g. `/accounts/{account_name}` (served under `/app`).
    pub path: String,
    pub method: String,
    pub js_module: String,
    pub js_function: String,
    pub authn_policies: Vec<AuthnPolicy>,
    pub mode: Mode,
}

impl Endpoint {
    /// The path parameters if `path` (below `/app`) matches this endpoint's template.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let template: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        let actual: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if template.len() != actual.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (t, a) in template.iter().zip(&actual) {
            match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(name) if !a.is_empty() => {
                    let decoded = percent_encoding::percent_decode_str(a)
                        .decode_utf8()
                        .ok()?
                        .into_owned();
                    params.insert(name.to_owned(), decoded);
                }
                Some(_) => return None,
                None if t == a => {}
                None => return None,
            }
        }
        Some(params)
    }
}

/// A deployed bundle: the JSON as stored (what GET returns) and its parsed endpoints.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub json: Value,
    pub modules: BTreeMap<String, String>,
    pub endpoints: Vec<Endpoint>,
}

impl Bundle {
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.modules.is_empty()
    }

    /// The endpoint for `method` at `path` (below `/app`) and its path parameters.
    pub fn route(&self, method: &str, path: &str) -> Option<(&Endpoint, BTreeMap<String, String>)> {
        self.endpoints
            .iter()
            .filter(|e| e.method == method)
            .find_map(|e| e.matches(path).map(|p| (e, p)))
    }
}

/// The built-in first path segments below `/app`: a deployed endpoint may not shadow them.
const RESERVED_SEGMENTS: [&str; 9] = [
    "transactions",
    "collections",
    "users",
    "ledgerUsers",
    "roles",
    "governance",
    "enclaveQuotes",
    "userDefinedEndpoints",
    "userDefinedFunctions",
];

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

/// Checks a bundle (ACL's `Bundle`: `{"metadata": {"endpoints": {path: {method: {...}}}},
/// "modules": [{"name", "module"}]}`) and parses it. Every problem is named: the path, the
/// method, the member.
pub fn parse_bundle(json: Value) -> ApiResult<Bundle> {
    let bad = |m: String| ApiError::InvalidInput(m);
    let object = json.as_object().ok_or_else(|| {
        bad("The bundle must be a JSON object with \"metadata\" and \"modules\".".into())
    })?;
    if let Some(other) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "metadata" | "modules"))
    {
        return Err(bad(format!(
            "Unknown bundle member {other:?}; a bundle has \"metadata\" and \"modules\"."
        )));
    }
    let mut modules = BTreeMap::new();
    let listed = match object.get("modules") {
        Some(Value::Array(list)) => list.as_slice(),
        None => &[],
        Some(_) => {
            return Err(bad(
                "\"modules\" must be an array of {\"name\", \"module\"}.".into(),
            ));
        }
    };
    for (i, m) in listed.iter().enumerate() {
        let name = m.get("name").and_then(Value::as_str);
        let source = m.get("module").and_then(Value::as_str);
        let (Some(name), Some(source)) = (name, source) else {
            return Err(bad(format!(
                "modules[{i}] must be an object with string members \"name\" and \"module\"."
            )));
        };
        let name = name.trim_start_matches('/');
        if name.is_empty() || crate::names::forbidden_char(name).is_some() {
            return Err(bad(format!("modules[{i}] has an invalid name {name:?}.")));
        }
        if modules.insert(name.to_owned(), source.to_owned()).is_some() {
            return Err(bad(format!("Module {name:?} appears twice.")));
        }
    }
    let endpoints_json = match object.get("metadata").map(|m| m.get("endpoints")) {
        None => None,
        Some(Some(Value::Object(e))) => Some(e),
        Some(_) => {
            return Err(bad(
                "\"metadata\" must be an object with an \"endpoints\" object.".into(),
            ));
        }
    };
    let mut endpoints = Vec::new();
    for (path, methods) in endpoints_json.into_iter().flatten() {
        check_endpoint_path(path)?;
        let methods = methods.as_object().ok_or_else(|| {
            bad(format!(
                "endpoints[{path:?}] must map methods to properties."
            ))
        })?;
        for (method, props) in methods {
            let where_ = format!("endpoints[{path:?}][{method:?}]");
            if !METHODS.contains(&method.as_str()) {
                return Err(bad(format!(
                    "{where_}: unknown method; use one of {}.",
                    METHODS.join(", ")
                )));
            }
            let props = props.as_object().ok_or_else(|| {
                bad(format!(
                    "{where_} must be an object of endpoint properties."
                ))
            })?;
            let text = |name: &str| props.get(name).and_then(Value::as_str);
            let js_module = text("js_module")
                .ok_or_else(|| bad(format!("{where_}: \"js_module\" (a string) is required.")))?
                .trim_start_matches('/')
                .to_owned();
            if !modules.contains_key(&js_module) {
                return Err(bad(format!(
                    "{where_}: module {js_module:?} is not among the bundle's modules."
                )));
            }
            let js_function = text("js_function")
                .filter(|f| !f.is_empty())
                .ok_or_else(|| bad(format!("{where_}: \"js_function\" (a string) is required.")))?
                .to_owned();
            let mode = match text("mode").unwrap_or("readwrite") {
                "readwrite" => Mode::ReadWrite,
                "readonly" => Mode::ReadOnly,
                "historical" => {
                    return Err(bad(format!(
                        "{where_}: mode \"historical\" is not supported by cledger (no historical \
                         state is exposed to JavaScript); use \"readonly\" or \"readwrite\"."
                    )));
                }
                other => {
                    return Err(bad(format!(
                        "{where_}: unknown mode {other:?}; use \"readonly\" or \"readwrite\"."
                    )));
                }
            };
            let policies = props
                .get("authn_policies")
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    bad(format!(
                        "{where_}: \"authn_policies\" (an array) is required."
                    ))
                })?;
            let mut authn_policies = Vec::new();
            for p in policies {
                let name = p.as_str().unwrap_or_default();
                let policy = AuthnPolicy::parse(name).ok_or_else(|| {
                    bad(format!(
                        "{where_}: authentication policy {p} is not supported; use \"no_auth\", \
                         \"user_cert\", \"any_cert\" or \"jwt\"."
                    ))
                })?;
                authn_policies.push(policy);
            }
            if authn_policies.is_empty() {
                return Err(bad(format!(
                    "{where_}: \"authn_policies\" is empty, so no caller could call it; use \
                     [\"no_auth\"] for an endpoint open to anyone."
                )));
            }
            endpoints.push(Endpoint {
                path: path.clone(),
                method: method.to_ascii_uppercase(),
                js_module,
                js_function,
                authn_policies,
                mode,
            });
        }
    }
    Ok(Bundle {
        json,
        modules,
        endpoints,
    })
}

fn check_endpoint_path(path: &str) -> ApiResult<()> {
    let bad = |why: &str| {
        Err(ApiError::InvalidInput(format!(
            "Endpoint path {path:?} {why}."
        )))
    };
    let Some(rest) = path.strip_prefix('/') else {
        return bad("must start with '/'");
    };
    if rest.is_empty() || path.contains("//") || path.ends_with('/') || path.contains(['?', '#']) {
        return bad("must be '/' followed by non-empty segments, without '?' or '#'");
    }
    if crate::names::forbidden_char(path).is_some() {
        return bad("holds a control or formatting character");
    }
    let first = rest.split('/').next().unwrap_or_default();
    if RESERVED_SEGMENTS.contains(&first) {
        return bad("would shadow a built-in route of the ledger");
    }
    Ok(())
}

/// The deployed bundle, if any.
pub fn bundle(ledger: &dyn LedgerHandle) -> ApiResult<Option<Bundle>> {
    let Some(stored) = ledger.governance(tables::PROGRAMS, BUNDLE_KEY)? else {
        return Ok(None);
    };
    let json: Value = serde_json::from_slice(&stored)
        .map_err(|e| ApiError::Internal(format!("The stored bundle is not JSON: {e}")))?;
    parse_bundle(json).map(Some).map_err(|e| {
        ApiError::Internal(format!(
            "The stored bundle no longer parses: {}",
            e.message()
        ))
    })
}

pub fn bundle_write(bundle: &Bundle) -> TableWrite {
    TableWrite {
        table: tables::PROGRAMS.into(),
        key: BUNDLE_KEY.into(),
        value: Some(bundle.json.to_string().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_sample_bundle_parses_and_routes() {
        let bundle = parse_bundle(json!({
          "metadata": {"endpoints": {"/content": {"get": {
            "js_module": "test.js", "js_function": "content", "forwarding_required": "never",
            "redirection_strategy": "none", "authn_policies": ["no_auth"], "mode": "readonly",
            "openapi": {}}}}},
          "modules": [
            {"name": "test.js", "module": "import { foo } from \"./baz/baz.js\";"},
            {"name": "baz/baz.js", "module": "export function foo() { return 1 }"}
          ]
        }))
        .unwrap();
        let (endpoint, params) = bundle.route("GET", "/content").unwrap();
        assert_eq!(endpoint.js_function, "content");
        assert_eq!(endpoint.mode, Mode::ReadOnly);
        assert!(params.is_empty());
        assert!(bundle.route("POST", "/content").is_none());
        assert!(bundle.route("GET", "/content/x").is_none());
    }

    #[test]
    fn path_templates_bind_parameters() {
        let bundle = parse_bundle(json!({
          "metadata": {"endpoints": {"/accounts/{account_name}": {"put": {
            "js_module": "a.js", "js_function": "f", "authn_policies": ["user_cert", "jwt"]}}}},
          "modules": [{"name": "/a.js", "module": ""}]
        }))
        .unwrap();
        let (e, params) = bundle.route("PUT", "/accounts/J%C3%BCrgen").unwrap();
        assert_eq!(params["account_name"], "Jürgen");
        assert_eq!(e.authn_policies, [AuthnPolicy::UserCert, AuthnPolicy::Jwt]);
        assert_eq!(e.mode, Mode::ReadWrite);
        assert!(bundle.route("PUT", "/accounts/").is_none());
    }

    #[test]
    fn bad_bundles_are_refused_naming_the_problem() {
        let refused = |v: Value| match parse_bundle(v) {
            Err(ApiError::InvalidInput(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let endpoint = |path: &str, props: Value| {
            json!({"metadata": {"endpoints": {path: {"get": props}}},
                   "modules": [{"name": "m.js", "module": ""}]})
        };
        let ok = json!({"js_module": "m.js", "js_function": "f", "authn_policies": ["no_auth"]});
        assert!(parse_bundle(endpoint("/x", ok.clone())).is_ok());
        assert!(refused(endpoint("/transactions", ok.clone())).contains("built-in"));
        assert!(refused(endpoint("x", ok.clone())).contains("start with"));
        assert!(refused(endpoint("/a//b", ok.clone())).contains("segments"));
        let mut missing = ok.clone();
        missing["js_module"] = json!("nope.js");
        assert!(refused(endpoint("/x", missing)).contains("not among"));
        let mut policy = ok.clone();
        policy["authn_policies"] = json!(["member_cert"]);
        assert!(refused(endpoint("/x", policy)).contains("not supported"));
        let mut none = ok.clone();
        none["authn_policies"] = json!([]);
        assert!(refused(endpoint("/x", none)).contains("empty"));
        let mut historical = ok;
        historical["mode"] = json!("historical");
        assert!(refused(endpoint("/x", historical)).contains("historical"));
        assert!(refused(json!({"metadata": {}, "modules": [], "extra": 1})).contains("extra"));
        assert!(refused(json!({"modules": [{"name": "a"}]})).contains("modules[0]"));
        // The empty bundle (how ACL switches back to functions) is a bundle.
        assert!(
            parse_bundle(json!({"metadata": {"endpoints": {}}, "modules": []}))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn runtime_options_patch_checks_every_member() {
        let base = RuntimeOptions::default();
        let patched = base
            .patched(
                json!({"max_execution_time_ms": 2000, "log_exception_details": false})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(patched.max_execution_time_ms, 2000);
        assert!(!patched.log_exception_details);
        assert_eq!(patched.max_heap_bytes, base.max_heap_bytes);
        for bad in [
            json!({"max_execution_time_ms": 0}),
            json!({"max_execution_time_ms": 5001}),
            json!({"max_heap_bytes": -1}),
            json!({"max_stack_bytes": "1"}),
            json!({"return_exception_details": 1}),
            json!({"unknown": 1}),
        ] {
            assert!(base.patched(bad.as_object().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn function_ids_are_plain() {
        assert!(check_function_id("validateTransaction").is_ok());
        assert!(check_function_id("a.b-c_1").is_ok());
        for bad in ["", "a:execute", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(check_function_id(bad).is_err(), "{bad:?}");
        }
    }
}
