//! The middleware in front of the `ledger-http` router: `Authorization: Bearer <jwt>` → a
//! verified [`Caller::Token`] (replacing the connection's certificate caller), or a 401
//! `InvalidAuthenticationInfo` saying which check failed. Requests without a bearer token pass
//! through untouched, so certificate users work as before.
//!
//! Middleware (rather than code in the accept loop) because validation is per request (HTTP/2
//! multiplexes requests with different tokens over one connection) and may await a key
//! refresh. A tower service written out rather than `axum::middleware::from_fn`: most
//! requests need nothing awaited here — no token (certificate users), or a token already
//! verified (the cache) — and those go straight to the router's own future; only a token
//! to verify pays for a boxed future. `from_fn` boxed every request's future and cloned the
//! inner service for each, about 2,500 instructions per request (callgrind).

use super::{TokenError, TokenValidator};
use crate::http::Caller;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::future::{BoxFuture, Either, Ready, ready};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Wraps `router` so bearer tokens are validated by `validator`.
pub fn with_bearer_auth(router: axum::Router, validator: Arc<TokenValidator>) -> axum::Router {
    router.layer(BearerLayer { validator })
}

#[derive(Clone)]
struct BearerLayer {
    validator: Arc<TokenValidator>,
}

impl<S> tower::Layer<S> for BearerLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> BearerAuth<S> {
        BearerAuth {
            inner,
            validator: self.validator.clone(),
        }
    }
}

/// The service [`with_bearer_auth`] puts in front of the router.
#[derive(Clone)]
struct BearerAuth<S> {
    inner: S,
    validator: Arc<TokenValidator>,
}

type Answer = Result<Response, Infallible>;

impl<S> tower::Service<Request> for BearerAuth<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    /// The router's future (no token, or a cached one), a refusal, or a token's full check
    /// followed by the router.
    type Future = Either<Either<S::Future, Ready<Answer>>, BoxFuture<'static, Answer>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let token = match bearer_token(request.headers()) {
            None => return Either::Left(Either::Left(self.inner.call(request))),
            Some(Err(e)) => return Either::Left(Either::Right(ready(Ok(unauthorized(&e))))),
            Some(Ok(token)) => token,
        };
        if let Some(user_id) = self.validator.validate_cached(token) {
            request.extensions_mut().insert(Caller::Token {
                user_id: user_id.into(),
            });
            return Either::Left(Either::Left(self.inner.call(request)));
        }
        let token = token.to_owned();
        // `poll_ready` readied `self.inner`: that one goes with this request, a clone stays
        // for the next (tower's rule for services called from a future).
        let ready_inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready_inner);
        let validator = self.validator.clone();
        Either::Right(Box::pin(async move {
            match validator.validate_uncached(&token).await {
                Ok(user_id) => {
                    request.extensions_mut().insert(Caller::Token {
                        user_id: user_id.into(),
                    });
                    inner.call(request).await
                }
                Err(e) => Ok(unauthorized(&e)),
            }
        }))
    }
}

/// `None` when there is no `Authorization: Bearer` header (other schemes are ignored).
fn bearer_token(headers: &axum::http::HeaderMap) -> Option<Result<&str, TokenError>> {
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
    Some(Ok(token))
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
        assert_eq!(bearer_token(&with("Bearer a.b.c")), Some(Ok("a.b.c")));
        assert_eq!(bearer_token(&with("bearer  a.b.c ")), Some(Ok("a.b.c")));
        assert_eq!(
            bearer_token(&with("Bearer")),
            Some(Err(TokenError::Malformed))
        );
    }
}
