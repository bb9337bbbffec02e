//! Serving the pages: `GET` (and `HEAD`) `/verify` and `/explorer`, public by design — they
//! hold no ledger data (the explorer fetches what its visitor's credentials allow) — with
//! their policy in the header and headers that keep them from being framed, sniffed or leaking
//! the URL they were opened from.

use crate::page::{EXPLORER, VERIFIER, explorer_page, verifier_page};
use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Adds `GET /verify` and `GET /explorer` (for the ledger `ledger_id`) to `router`. Add them
/// outside any authentication layer: every visitor may load the pages.
pub fn routes(router: axum::Router, ledger_id: String) -> axum::Router {
    let verifier = Bytes::from_static(verifier_page().as_bytes());
    // Rendered once: the ledger id does not change while the server runs.
    let explorer = Bytes::from(explorer_page(&ledger_id));
    router
        .route(
            "/verify",
            get(move || async move { html(verifier, &VERIFIER.policy.header) }),
        )
        .route(
            "/explorer",
            get(move || async move { html(explorer, &EXPLORER.policy.header) }),
        )
}

/// A page with its policy `csp` (the header form, which has `frame-ancestors`).
fn html(body: Bytes, csp: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        // Only hash sources, keywords and ASCII punctuation: always a valid header value.
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // Revalidate: after an upgrade the cached page would carry the old verifier.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        // For browsers without CSP `frame-ancestors`.
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    (headers, body).into_response()
}
