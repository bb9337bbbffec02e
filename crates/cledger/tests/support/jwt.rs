//! A test token issuer shared by the end-to-end suites: signing keys generated with openssl
//! (as an operator would), their JWKS, and signed tokens with the claims the server expects.
#![allow(dead_code)]

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "https://login.example.test/tenant-1/v2.0";
pub const AUDIENCE: &str = "api://cledger-test";
pub const TENANT: &str = "tenant-1";
pub const ADMIN_OID: &str = "6a1e2c55-0d1b-4c3e-9f00-00000000000a";
pub const OTHER_OID: &str = "6a1e2c55-0d1b-4c3e-9f00-00000000000b";

/// A signing key of the test issuer.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
}

pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl genpkey` (PKCS#8 PEM) → signing key + its public JWK (without `alg`, as Entra
/// publishes them, so the server must derive the algorithms from the key type).
pub fn new_key(dir: &Path, kid: &str, alg: Algorithm) -> TestKey {
    let path = dir.join(format!("{kid}.pem"));
    let p = path.to_str().unwrap();
    match alg {
        Algorithm::RS256 | Algorithm::PS256 => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            p,
        ]),
        Algorithm::ES256 => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            p,
        ]),
        Algorithm::ES384 => openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            p,
        ]),
        other => panic!("no test keys for {other:?}"),
    }
    let pem = std::fs::read(&path).unwrap();
    let encoding = match alg {
        Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
    jwk.common.key_algorithm = None;
    jwk.common.key_id = Some(kid.to_owned());
    TestKey {
        kid: kid.to_owned(),
        alg,
        encoding,
        jwk,
    }
}

pub fn jwks(keys: &[&TestKey]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    })
    .unwrap()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a good token for `oid`.
pub fn claims(oid: &str) -> Value {
    let t = now();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "tid": TENANT, "oid": oid,
        "iat": t - 10, "nbf": t - 10, "exp": t + 3600,
    })
}

pub fn sign(key: &TestKey, claims: &Value) -> String {
    sign_as(key, key.alg, Some(&key.kid), claims)
}

pub fn sign_as(key: &TestKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}
