//! The middleware in front of the `ledger-http` router: `Authorization: Bearer <jwt>` → a
//! verified [`Caller::Token`] (replacing the connection's certificate caller), or a 401
//! `InvalidAuthenticationInfo` saying which check failed. Requests without a bearer token pass
//! through untouched, so certificate users work as before.
//!
//! Axum middleware (rather than code in the accept loop) because validation is per request
//! (HTTP/2 multiplexes requests with different tokens over one connection) and may await a key
//! refresh.

use super::{TokenError, TokenValidator};
use crate::http::Caller;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// Wraps `router` so bearer tokens are validated by `validator`.
pub fn with_bearer_auth(router: axum::Router, validator: Arc<TokenValidator>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(validator, bearer_auth))
}

async fn bearer_auth(
    State(validator): State<Arc<TokenValidator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = match bearer_token(request.headers()) {
        None => return next.run(request).await,
        Some(Err(e)) => return unauthorized(&e),
        Some(Ok(token)) => token,
    };
    match validator.validate(&token).await {
        Ok(user_id) => {
            request.extensions_mut().insert(Caller::Token { user_id });
            next.run(request).await
        }
        Err(e) => unauthorized(&e),
    }
}

/// `None` when there is no `Authorization: Bearer` header (other schemes are ignored).
fn bearer_token(headers: &axum::http::HeaderMap) -> Option<Result<String, TokenError>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err(TokenError::Malformed));
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    if token.is_empty() {
        return Some(Err(TokenError::Malformed));
    }
    Some(Ok(token.to_owned()))
}

fn unauthorized(error: &TokenError) -> Response {
    let body = serde_json::json!({
        "error": {
            "code": "InvalidAuthenticationInfo",
            "message": format!("Invalid bearer token: {error}"),
        }
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn header_parsing() {
        assert!(bearer_token(&HeaderMap::new()).is_none());
        assert!(bearer_token(&with("Basic abc")).is_none());
        assert_eq!(
            bearer_token(&with("Bearer a.b.c")),
            Some(Ok("a.b.c".into()))
        );
        assert_eq!(
            bearer_token(&with("bearer  a.b.c ")),
            Some(Ok("a.b.c".into()))
        );
        assert_eq!(
            bearer_token(&with("Bearer")),
            Some(Err(TokenError::Malformed))
        );
    }
}
