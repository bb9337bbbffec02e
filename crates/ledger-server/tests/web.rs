//! The auditor's pages (`ledger-web`) on a real server: public (no certificate, or a token the
//! node does not accept), with their policy header, and read-only.

mod common;

use common::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifier_and_explorer_pages_are_public() {
    let (_tmp, server, _admin, anonymous) = start(|c| c.ledger_id = "web-ledger".into()).await;
    let addr = server.local_addr();

    // No client certificate, no token.
    let verify = anonymous.send(addr, "GET", "/verify", "", "").await;
    assert_eq!(verify.status, 200, "{}", verify.head);
    assert_eq!(
        verify.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let csp = verify.header("content-security-policy").unwrap();
    assert!(csp.contains("connect-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(verify.header("x-frame-options").as_deref(), Some("DENY"));
    assert!(verify.body.contains("<script type=\"module\">"));
    assert_eq!(verify.body, ledger_web::verifier_page());

    let explorer = anonymous.send(addr, "GET", "/explorer", "", "").await;
    assert_eq!(explorer.status, 200, "{}", explorer.head);
    let csp = explorer.header("content-security-policy").unwrap();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(
        explorer
            .body
            .contains("<meta name=\"cledger-ledger-id\" content=\"web-ledger\">"),
        "the server's ledger id is in the page"
    );
    assert_eq!(explorer.body, ledger_web::explorer_page("web-ledger"));

    // A token this node does not accept: the API refuses it, the page is still served (the
    // routes are outside the bearer layer).
    let bad_token = "Authorization: Bearer not.a.token\r\n";
    let api = anonymous
        .send(addr, "GET", "/app/collections", bad_token, "")
        .await;
    assert_eq!(api.status, 401, "{}", api.body);
    let page = anonymous.send(addr, "GET", "/verify", bad_token, "").await;
    assert_eq!(page.status, 200, "{}", page.head);

    // Read-only.
    let post = anonymous.send(addr, "POST", "/verify", "", "").await;
    assert_eq!(post.status, 405, "{}", post.head);
    server.shutdown().await.unwrap();
}
