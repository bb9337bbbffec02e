//! Simple user-defined functions (ACL 2024-12-09-preview).
//!
//! Owns the function calling convention: one ES module, no imports, a global `context`,
//! string arguments, and the rule that turns a return value into an optional string.

use rquickjs::function::Args;
use rquickjs::{Ctx, Function, Module, Value};

use crate::engine::{self, Env, Imports};
use crate::error::ScriptError;
use crate::limits::{Limits, MAX_OUTPUT_BYTES};
use crate::{Execution, KvSource};

/// What a function returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionResult {
    /// `None` for `undefined`; a string as is; anything else as `JSON.stringify(value)`
    /// (or `String(value)` when that throws or gives `undefined`).
    pub return_value: Option<String>,
}

/// Evaluates an entry module and returns its export `name` if it is a function.
pub(crate) fn load_export<'js>(
    ctx: &Ctx<'js>,
    env: &Env<'js>,
    module_name: &str,
    source: &str,
    name: &str,
) -> Result<Function<'js>, ScriptError> {
    let declared = Module::declare(ctx.clone(), module_name, source).map_err(|e| {
        match env.classify(ctx, e) {
            ScriptError::Thrown { message, .. } => ScriptError::Compile { message },
            other => other,
        }
    })?;
    let (module, promise) = declared.eval().map_err(|e| env.classify(ctx, e))?;
    env.settle(ctx, promise.into_value())?;
    let missing = || ScriptError::MissingExport {
        name: name.to_owned(),
    };
    let namespace = module.namespace().map_err(|_| missing())?;
    let export: Value = namespace.get(name).map_err(|_| missing())?;
    export.into_function().ok_or_else(missing)
}

/// Runs a simple UDF: `code` is one ES module (imports are refused), `export` names the
/// entry function, `arguments` are passed as separate string arguments and `context` is
/// installed as the global `context`.
pub fn run_function(
    function_id: &str,
    code: &str,
    export: &str,
    arguments: &[String],
    context: &serde_json::Value,
    kv: &dyn KvSource,
    limits: &Limits,
) -> Execution<FunctionResult> {
    // Stack traces name the function as ACL's do: "at main (validateTransaction:1:67)".
    let module_name = if function_id.is_empty() || function_id.contains('\0') {
        "function".to_owned()
    } else {
        function_id.to_owned()
    };
    let context_json = context.to_string();
    engine::execute(kv, limits, Imports::Refuse, move |ctx, env| {
        let parsed = ctx
            .json_parse(context_json)
            .map_err(|e| env.classify(ctx, e))?;
        ctx.globals()
            .set("context", parsed)
            .map_err(|e| env.classify(ctx, e))?;
        let func = load_export(ctx, env, &module_name, code, export)?;
        let mut args = Args::new(ctx.clone(), arguments.len());
        args.push_args(arguments.iter().map(String::as_str))
            .map_err(|e| env.classify(ctx, e))?;
        let value: Value = func.call_arg(args).map_err(|e| env.classify(ctx, e))?;
        let value = env.settle(ctx, value)?;
        let formatted: Option<String> = env
            .helper("formatReturn")?
            .call((value,))
            .map_err(|e| env.classify(ctx, e))?;
        if formatted
            .as_ref()
            .is_some_and(|s| s.len() > MAX_OUTPUT_BYTES)
        {
            return Err(ScriptError::OutputTooLarge {
                what: "return value",
                limit: MAX_OUTPUT_BYTES,
            });
        }
        Ok(FunctionResult {
            return_value: formatted,
        })
    })
}
