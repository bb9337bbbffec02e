//! ACL operations cledger deliberately does not implement: user-defined endpoints (a CCF
//! JavaScript bundle), their runtime options and modules, user-defined functions, and
//! user-defined roles. All answer 501 `NotSupported` with a message saying why, after the
//! usual gate (api-version, then Administrator), so a client learns the gap immediately
//! instead of getting a 404 that looks like a typo.

use super::RequestContext;
use crate::error::ApiError;
use axum::Extension;
use axum::extract::MatchedPath;
use axum::http::Method;

pub async fn answer(
    ctx: Option<Extension<RequestContext>>,
    method: Method,
    route: MatchedPath,
) -> ApiError {
    let route = route.as_str();
    // No context: the gate has no rule for this method here (e.g. DELETE on the bundle).
    let Some(Extension(ctx)) = ctx else {
        return ApiError::MethodNotAllowed(format!("{method} is not an operation of {route}."));
    };
    ApiError::NotSupported(format!(
        "{method} {route} (api-version {}): cledger does not run JavaScript, so user-defined \
         endpoints, runtime options, modules and user-defined functions are not supported.",
        ctx.version.as_str()
    ))
}
