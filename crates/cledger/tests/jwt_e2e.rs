//! End-to-end tests of bearer-token (JWT/OIDC) users: the real `cledger serve` binary on
//! loopback TLS, with a test issuer whose keys are generated here (openssl, like an operator
//! would) and published as a JWKS file or over HTTP (OpenID discovery → JWKS).
//!
//! Each refused token must get 401 `InvalidAuthenticationInfo` with a message naming the check
//! that failed; a valid token of an unregistered principal gets 403 `NotAllowed`.

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use support::jwt::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A client of `server` that sends `Authorization: Bearer <token>` (no client certificate).
struct TokenClient {
    http: reqwest::Client,
    base: String,
}

impl TokenClient {
    fn new(server: &Server) -> TokenClient {
        let cert = reqwest::Certificate::from_pem(server.service_cert_pem().as_bytes()).unwrap();
        TokenClient {
            http: reqwest::Client::builder()
                .tls_certs_only([cert])
                .build()
                .unwrap(),
            base: server.base.clone(),
        }
    }

    async fn send(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Resp {
        let url = format!("{}{}", self.base, versioned(path));
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("authorization", format!("Bearer {token}"));
        if let Some(body) = body {
            let ct = if method == Method::PATCH {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            req = req
                .header("content-type", ct)
                .body(serde_json::to_vec(&body).unwrap());
        }
        let resp = req.send().await.expect("request");
        Resp {
            method: method.to_string(),
            url,
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, token, None).await
    }

    async fn write(&self, token: &str, contents: &str) -> Resp {
        self.send(
            Method::POST,
            "/app/transactions",
            token,
            Some(json!({ "contents": contents })),
        )
        .await
    }
}

/// Asserts a 401 `InvalidAuthenticationInfo` whose message names `check`.
fn assert_refused(resp: Resp, check: &str) {
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("application/json"),
        "{}",
        resp.text
    );
    assert!(resp.header("retry-after").is_none(), "{:?}", resp.headers);
    let (url, text) = (resp.url.clone(), resp.text.clone());
    let message = resp.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    resp.error_code(401, "InvalidAuthenticationInfo");
    assert!(
        message.ends_with(check),
        "{url}: expected the message to name {check:?}, got {text}"
    );
}

#[tokio::test]
async fn tokens_from_a_jwks_file_every_check_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("issuer");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let rsa = new_key(&keys_dir, "rsa-1", Algorithm::RS256);
    let ec = new_key(&keys_dir, "ec-1", Algorithm::ES256);
    let ec384 = new_key(&keys_dir, "ec-2", Algorithm::ES384);
    let stranger = new_key(&keys_dir, "rsa-1", Algorithm::RS256); // same kid, other key
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&rsa, &ec, &ec384])).unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            "some-other-app",
            "--jwt-audience",
            AUDIENCE,
            "--jwt-jwks-file",
            jwks_path.to_str().unwrap(),
            "--jwt-tenant-id",
            TENANT,
            "--admin-oid",
            ADMIN_OID,
        ],
    );
    assert!(
        !data.join("admin.pem").exists(),
        "a token administrator replaces the generated admin.pem"
    );
    let api = TokenClient::new(&server);
    let admin = sign(&rsa, &claims(ADMIN_OID));

    // Good tokens: RS256, PS256 with the same RSA key, ES256, ES384.
    let txid = api
        .write(&admin, "by token")
        .await
        .expect(200)
        .txid()
        .to_string();
    // Writes are acknowledged once committed, so the entry is readable at once.
    let entry = api.get(&format!("/app/transactions/{txid}"), &admin).await;
    assert_eq!(entry.expect(200).json()["entry"]["contents"], "by token");
    for token in [
        sign_as(&rsa, Algorithm::PS256, Some("rsa-1"), &claims(ADMIN_OID)),
        sign(&ec, &claims(ADMIN_OID)),
        sign(&ec384, &claims(ADMIN_OID)),
    ] {
        api.get("/app/transactions/current", &token)
            .await
            .expect(200);
    }

    // Each failed check, with its own message.
    let mut c = claims(ADMIN_OID);
    c["exp"] = json!(now() - 3600);
    c["nbf"] = json!(now() - 7200);
    assert_refused(api.write(&sign(&rsa, &c), "x").await, "expired");
    let mut c = claims(ADMIN_OID);
    c["nbf"] = json!(now() + 3600);
    assert_refused(api.write(&sign(&rsa, &c), "x").await, "not yet valid");
    let mut c = claims(ADMIN_OID);
    c["aud"] = json!("https://somebody-else.example");
    assert_refused(api.write(&sign(&rsa, &c), "x").await, "wrong audience");
    let mut c = claims(ADMIN_OID);
    c["iss"] = json!("https://evil.example/tenant-1/v2.0");
    assert_refused(api.write(&sign(&rsa, &c), "x").await, "wrong issuer");
    let mut c = claims(ADMIN_OID);
    c["tid"] = json!("tenant-2");
    assert_refused(api.write(&sign(&rsa, &c), "x").await, "tenant mismatch");
    let mut c = claims(ADMIN_OID);
    c.as_object_mut().unwrap().remove("oid");
    assert_refused(api.write(&sign(&rsa, &c), "x").await, "missing claim oid");
    let token = sign_as(
        &rsa,
        Algorithm::RS256,
        Some("no-such-kid"),
        &claims(ADMIN_OID),
    );
    assert_refused(api.write(&token, "x").await, "unknown signing key");
    assert_refused(
        api.write(&sign(&stranger, &claims(ADMIN_OID)), "x").await,
        "bad signature",
    );

    // alg none, HMAC (with the public key's bytes as the "secret"), and an EC header on the
    // RSA key: never.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})),
        b64(&claims(ADMIN_OID))
    );
    assert_refused(api.write(&none, "x").await, "unsupported algorithm");
    let hs = jsonwebtoken::encode(
        &Header {
            kid: Some("rsa-1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(ADMIN_OID),
        &EncodingKey::from_secret(serde_json::to_string(&rsa.jwk).unwrap().as_bytes()),
    )
    .unwrap();
    assert_refused(api.write(&hs, "x").await, "unsupported algorithm");
    let confused = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "ES256", "kid": "rsa-1"})),
        b64(&claims(ADMIN_OID)),
        admin.rsplit('.').next().unwrap()
    );
    assert_refused(api.write(&confused, "x").await, "unsupported algorithm");

    // Tampering: another principal in the payload, or a changed signature.
    let parts: Vec<&str> = admin.split('.').collect();
    let tampered_payload = format!("{}.{}.{}", parts[0], b64(&claims(OTHER_OID)), parts[2]);
    assert_refused(api.write(&tampered_payload, "x").await, "bad signature");
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 0x01;
    let tampered_sig = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    assert_refused(api.write(&tampered_sig, "x").await, "bad signature");
    for garbage in ["x", "a.b.c", "Zm9v.YmFy.YmF6"] {
        assert_refused(api.write(garbage, "x").await, "malformed");
    }

    // A valid token of an unregistered principal: authenticated, but no role.
    let other = sign(&ec, &claims(OTHER_OID));
    api.write(&other, "x").await.error_code(403, "NotAllowed");
    api.get("/app/transactions/current", &other)
        .await
        .error_code(403, "NotAllowed");

    // The token administrator registers it as Reader: it can read, not write.
    let patched = api
        .send(
            Method::PATCH,
            &format!("/app/users/{OTHER_OID}"),
            &admin,
            Some(json!({ "assignedRole": "Reader" })),
        )
        .await
        .ok();
    assert_eq!(patched["assignedRole"], "Reader", "{patched}");
    let user = api
        .get(&format!("/app/users/{ADMIN_OID}"), &admin)
        .await
        .ok();
    assert_eq!(user["assignedRole"], "Administrator", "{user}");
    api.get(&format!("/app/transactions/{txid}"), &other)
        .await
        .expect(200);
    api.write(&other, "x").await.error_code(403, "NotAllowed");

    // Restart with the same flags: nothing is registered twice, tokens still work.
    drop(server);
    let server = Server::start(
        &data,
        &[
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--jwt-jwks-file",
            jwks_path.to_str().unwrap(),
            "--admin-oid",
            ADMIN_OID,
        ],
    );
    let api = TokenClient::new(&server);
    api.write(&admin, "after restart").await.expect(200);
    api.get("/app/transactions/current", &other)
        .await
        .expect(200);
}

/// The issuer over plain HTTP on loopback: discovery document → JWKS, which the test rotates.
struct HttpIssuer {
    port: u16,
    jwks: Arc<Mutex<String>>,
    jwks_fetches: Arc<AtomicUsize>,
}

async fn http_issuer(initial_jwks: String) -> HttpIssuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let jwks = Arc::new(Mutex::new(initial_jwks));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (j, f) = (jwks.clone(), fetches.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let (j, f) = (j.clone(), f.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&buf);
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match path {
                    "/.well-known/openid-configuration" => (
                        "200 OK",
                        json!({
                            "issuer": ISSUER,
                            "jwks_uri": format!("http://127.0.0.1:{port}/keys"),
                        })
                        .to_string(),
                    ),
                    "/keys" => {
                        f.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", j.lock().unwrap().clone())
                    }
                    _ => ("404 Not Found", String::new()),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(response.as_bytes()).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    HttpIssuer {
        port,
        jwks,
        jwks_fetches: fetches,
    }
}

// Multi-threaded: the issuer must answer while `Server::start` blocks waiting for the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_discovery_over_http_and_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let old = new_key(dir.path(), "2026-old", Algorithm::RS256);
    let new = new_key(dir.path(), "2026-new", Algorithm::RS256);
    let issuer = http_issuer(jwks(&[&old])).await;
    let discovery = format!(
        "http://127.0.0.1:{}/.well-known/openid-configuration",
        issuer.port
    );
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--jwt-oidc-discovery",
            &discovery,
            "--admin-oid",
            ADMIN_OID,
        ],
    );
    assert_eq!(
        issuer.jwks_fetches.load(Ordering::SeqCst),
        1,
        "fetched at start"
    );
    let api = TokenClient::new(&server);
    api.write(&sign(&old, &claims(ADMIN_OID)), "old key")
        .await
        .expect(200);
    assert_eq!(
        issuer.jwks_fetches.load(Ordering::SeqCst),
        1,
        "served from the cache"
    );

    // The issuer rotates: a token with the new kid makes the server refetch, then passes.
    *issuer.jwks.lock().unwrap() = jwks(&[&new]);
    api.write(&sign(&new, &claims(ADMIN_OID)), "new key")
        .await
        .expect(200);
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2, "one refetch");

    // More unknown kids right after are refused without hammering the issuer (rate limit).
    for i in 0..5 {
        let token = sign_as(
            &new,
            Algorithm::RS256,
            Some(&format!("made-up-{i}")),
            &claims(ADMIN_OID),
        );
        assert_refused(api.write(&token, "x").await, "unknown signing key");
    }
    assert_eq!(
        issuer.jwks_fetches.load(Ordering::SeqCst),
        2,
        "rate-limited"
    );
    // The old key is gone after the rotation.
    assert_refused(
        api.write(&sign(&old, &claims(ADMIN_OID)), "x").await,
        "unknown signing key",
    );
}

#[tokio::test]
async fn bearer_tokens_without_an_issuer_and_bad_flag_combinations() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("plain"), &[]);
    let api = TokenClient::new(&server);
    let key = new_key(dir.path(), "k", Algorithm::ES256);
    assert_refused(
        api.write(&sign(&key, &claims(ADMIN_OID)), "x").await,
        "no token issuer is configured on this server",
    );
    // Certificate users are unaffected.
    server.admin().write_ok(None, "by certificate").await;
    drop(server);

    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&key])).unwrap();
    let jwks_file = jwks_path.to_str().unwrap();
    for (args, expected) in [
        (vec!["--jwt-audience", AUDIENCE], "--jwt-issuer"),
        (
            vec!["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE],
            "key source",
        ),
        (
            vec!["--jwt-issuer", ISSUER, "--jwt-jwks-file", jwks_file],
            "audience",
        ),
        (
            vec![
                "--jwt-issuer",
                ISSUER,
                "--jwt-audience",
                AUDIENCE,
                "--jwt-jwks-file",
                jwks_file,
                "--jwt-jwks-url",
                "https://example.test/keys",
            ],
            "cannot be used with",
        ),
        (
            vec![
                "--jwt-issuer",
                ISSUER,
                "--jwt-audience",
                AUDIENCE,
                "--jwt-jwks-url",
                "http://example.test/keys",
            ],
            "https",
        ),
        (
            vec![
                "--jwt-issuer",
                ISSUER,
                "--jwt-audience",
                AUDIENCE,
                "--jwt-jwks-file",
                "/nonexistent/jwks.json",
            ],
            "/nonexistent/jwks.json",
        ),
    ] {
        let data = tempfile::tempdir().unwrap();
        let failure = match Server::try_start(data.path(), &args) {
            Ok(_) => panic!("{args:?}: the server started"),
            Err(f) => f,
        };
        assert!(
            failure.stderr.contains(expected),
            "{args:?}: expected {expected:?} in\n{}",
            failure.stderr
        );
    }
}

/// Why a token of an issuer without a `principal_prefix` may not name a principal with a ':'.
const NO_SEPARATOR: &str = "the claim oid holds ':', which only an issuer's principal_prefix \
                            puts in a token principal (certificate fingerprints are never token \
                            principals)";

/// A certificate user's id (its fingerprint) can never be a token's principal: a token from a
/// trusted issuer whose user claim holds an administrator's fingerprint, in any letter case,
/// is refused, and the certificate administrator is untouched.
#[tokio::test]
async fn a_token_never_names_a_certificate_user() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key(dir.path(), "k", Algorithm::ES256);
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&key])).unwrap();
    let (cert_admin, fingerprint) = new_user("certificate admin");
    let cert_path = dir.path().join("admin-cert.pem");
    std::fs::write(&cert_path, &cert_admin).unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--jwt-jwks-file",
            jwks_path.to_str().unwrap(),
            "--admin-cert",
            cert_path.to_str().unwrap(),
            "--admin-oid",
            ADMIN_OID,
        ],
    );
    let api = TokenClient::new(&server);
    let certificate = server.client(Some(&cert_admin));
    let before = certificate.get("/app/transactions/current").await.text;
    for oid in [fingerprint.clone(), fingerprint.to_lowercase()] {
        let token = sign(&key, &claims(&oid));
        assert_refused(
            api.write(&token, "as the certificate admin").await,
            NO_SEPARATOR,
        );
        assert_refused(
            api.get(&format!("/app/users/{fingerprint}"), &token).await,
            NO_SEPARATOR,
        );
    }
    assert_eq!(
        certificate.get("/app/transactions/current").await.text,
        before
    );
    certificate.write_ok(None, "by certificate").await;
    api.write(&sign(&key, &claims(ADMIN_OID)), "by token")
        .await
        .expect(200);
}

/// Two trusted issuers never share a principal: the second one's principals carry its
/// `principal_prefix`, so its user named like a user of the first is somebody else, and the
/// first cannot name the second's users (a ':' is refused in an unprefixed principal).
#[tokio::test]
async fn issuers_have_separate_principals() {
    const PARTNER: &str = "https://partner.example.test/";
    let dir = tempfile::tempdir().unwrap();
    let ours = new_key(dir.path(), "ours", Algorithm::ES256);
    let theirs = new_key(dir.path(), "theirs", Algorithm::ES256);
    let (ours_jwks, theirs_jwks) = (dir.path().join("ours.json"), dir.path().join("theirs.json"));
    std::fs::write(&ours_jwks, jwks(&[&ours])).unwrap();
    std::fs::write(&theirs_jwks, jwks(&[&theirs])).unwrap();
    let issuers = |prefix: &str| {
        format!(
            r#"admin_oid = ["{ADMIN_OID}"]

[[jwt_issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_file = "{}"

[[jwt_issuers]]
issuer = "{PARTNER}"
audiences = ["{AUDIENCE}"]
jwks_file = "{}"
user_claim = "preferred_username"
{prefix}
"#,
            ours_jwks.display(),
            theirs_jwks.display()
        )
    };
    // Without a prefix the two issuers would share one namespace: refused at start.
    let config = dir.path().join("shared.toml");
    std::fs::write(&config, issuers("")).unwrap();
    let failure = match Server::try_start(
        &dir.path().join("shared"),
        &["--config", config.to_str().unwrap()],
    ) {
        Ok(_) => panic!("two issuers without a principal_prefix started"),
        Err(f) => f,
    };
    assert!(
        failure.stderr.contains("principal_prefix") && failure.stderr.contains(PARTNER),
        "{}",
        failure.stderr
    );

    let config = dir.path().join("cledger.toml");
    std::fs::write(&config, issuers(r#"principal_prefix = "partner""#)).unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let api = TokenClient::new(&server);
    let admin = sign(&ours, &claims(ADMIN_OID));
    api.write(&admin, "by our administrator").await.expect(200);
    let partner = |name: &str| {
        let mut c = claims("unused");
        c["iss"] = json!(PARTNER);
        c["preferred_username"] = json!(name);
        sign(&theirs, &c)
    };

    // The partner's user named like our administrator is not our administrator.
    let r = api.write(&partner(ADMIN_OID), "impersonation").await;
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    r.error_code(403, "NotAllowed");
    assert!(
        message.contains(&format!("partner:{ADMIN_OID}")),
        "{message}"
    );

    // Users are registered per issuer: partner:alice is the partner's alice only.
    for id in ["partner:alice", "bob"] {
        api.send(
            Method::PATCH,
            &format!("/app/users/{id}"),
            &admin,
            Some(json!({ "assignedRole": "Reader" })),
        )
        .await
        .expect(200);
    }
    api.get("/app/transactions/current", &partner("alice"))
        .await
        .expect(200);
    api.get("/app/transactions/current", &sign(&ours, &claims("alice")))
        .await
        .error_code(403, "NotAllowed");
    api.get("/app/transactions/current", &sign(&ours, &claims("bob")))
        .await
        .expect(200);
    api.get("/app/transactions/current", &partner("bob"))
        .await
        .error_code(403, "NotAllowed");
    // Our issuer cannot reach into the partner's namespace.
    assert_refused(
        api.get(
            "/app/transactions/current",
            &sign(&ours, &claims("partner:alice")),
        )
        .await,
        NO_SEPARATOR,
    );
}
