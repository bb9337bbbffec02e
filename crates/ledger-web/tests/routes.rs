//! The routes in-process (no sockets): status, headers and bodies of `/verify` and
//! `/explorer`, `HEAD`, and other methods refused.

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt as _;

async fn call(method: Method, path: &str) -> axum::response::Response {
    let app = ledger_web::routes(axum::Router::new(), "my-ledger".into());
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    app.oneshot(request).await.unwrap()
}

fn header<'a>(response: &'a axum::response::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn pages_are_served_with_their_policy_and_protective_headers() {
    for (path, connect, body) in [
        (
            "/verify",
            "connect-src 'none'",
            ledger_web::verifier_page().to_owned(),
        ),
        (
            "/explorer",
            "connect-src 'self'",
            ledger_web::explorer_page("my-ledger"),
        ),
    ] {
        let response = call(Method::GET, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&response, "content-type"),
            "text/html; charset=utf-8"
        );
        let csp = header(&response, "content-security-policy").to_owned();
        assert!(csp.starts_with("default-src 'none'; "), "{path}: {csp}");
        assert!(csp.contains(connect), "{path}: {csp}");
        assert!(csp.ends_with("; frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "referrer-policy"), "no-referrer");
        assert_eq!(header(&response, "cache-control"), "no-cache");
        assert_eq!(header(&response, "x-frame-options"), "DENY");
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert_eq!(bytes, body.as_bytes(), "{path}");
    }
}

#[tokio::test]
async fn head_has_no_body_and_other_methods_are_refused() {
    let response = call(Method::HEAD, "/verify").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("content-security-policy"));
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    assert!(bytes.is_empty());
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        for path in ["/verify", "/explorer"] {
            let response = call(method.clone(), path).await;
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
        }
    }
}
