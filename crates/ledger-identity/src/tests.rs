//! Profile tests: the certificates are parsed with an independent parser (x509-parser) and
//! checked with the OpenSSL CLI in strict mode and with Python's `ssl` module in
//! `VERIFY_X509_STRICT` mode (a real, in-memory TLS handshake).

use std::path::{Path, PathBuf};
use std::process::Command;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384, Oid,
};
use x509_parser::pem::parse_x509_pem;

use super::*;

const DAY: i64 = 24 * 3600;

/// Parses a PEM certificate with x509-parser and hands it to `check`.
fn with_parsed<R>(pem: &str, check: impl FnOnce(&X509Certificate<'_>) -> R) -> R {
    let (rest, pem) = parse_x509_pem(pem.as_bytes()).expect("PEM");
    assert!(rest.iter().all(u8::is_ascii_whitespace), "trailing data");
    let cert = pem.parse_x509().expect("X.509");
    check(&cert)
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ki) => Some(ki.0.to_vec()),
            _ => None,
        })
        .expect("SKI present")
}

fn authority_key_id(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|ki| ki.0.to_vec())
            }
            _ => None,
        })
        .expect("AKI with keyIdentifier present")
}

fn common_name(cert: &X509Certificate<'_>) -> String {
    let cn = cert.subject().iter_common_name().next().expect("CN");
    cn.as_str().expect("CN string").to_owned()
}

fn organization(cert: &X509Certificate<'_>) -> Option<String> {
    let o = cert.subject().iter_organization().next()?;
    Some(o.as_str().expect("O string").to_owned())
}

fn named_curve(cert: &X509Certificate<'_>) -> Oid<'static> {
    let alg = &cert.public_key().algorithm;
    assert_eq!(alg.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let params = alg.parameters.as_ref().expect("curve parameter");
    params.as_oid().expect("named curve").to_owned()
}

fn expected_curve_oid(curve: Curve) -> Oid<'static> {
    match curve {
        Curve::P256 => OID_EC_P256,
        Curve::P384 => OID_NIST_EC_P384,
    }
}

fn expected_signature_oid(curve: Curve) -> Oid<'static> {
    match curve {
        Curve::P256 => OID_SIG_ECDSA_WITH_SHA256,
        Curve::P384 => OID_SIG_ECDSA_WITH_SHA384,
    }
}

/// Seconds from now until the certificate expires, and since it became valid.
fn validity_window(cert: &X509Certificate<'_>) -> (i64, i64) {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let validity = cert.validity();
    (
        validity.not_after.timestamp() - now,
        now - validity.not_before.timestamp(),
    )
}

fn assert_random_positive_serial(cert: &X509Certificate<'_>) {
    let serial = cert.raw_serial();
    assert_eq!(serial.len(), SERIAL_LEN);
    assert_eq!(serial[0] & 0x80, 0, "serial must be positive");
}

fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
    let ext = cert
        .subject_alternative_name()
        .expect("SAN parses")
        .expect("SAN present");
    assert!(
        !ext.critical,
        "SAN need not be critical when the subject is set"
    );
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("v4")),
                16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).expect("v6")),
                n => panic!("bad IP SAN length {n}"),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    (dns, ips)
}

fn node_setup(curve: Curve, hostnames: &[&str]) -> (ServiceIdentity, String, String) {
    let service = create_service_identity(curve).expect("service identity");
    let node_key = generate_private_key(curve).expect("node key");
    let hostnames: Vec<String> = hostnames.iter().map(|h| (*h).to_owned()).collect();
    let node_cert = issue_node_certificate(&service, &node_key, &hostnames).expect("node cert");
    (service, node_key, node_cert)
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// Runs a tool and returns its stdout, panicking with stderr when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

#[test]
fn service_certificate_profile() {
    for curve in [Curve::P384, Curve::P256] {
        let service = create_service_identity(curve).expect("service identity");
        assert!(service.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        with_parsed(&service.cert_pem, |cert| {
            assert_eq!(cert.version().0, 2, "X.509 v3");
            assert_eq!(common_name(cert), SERVICE_COMMON_NAME);
            assert_eq!(organization(cert).as_deref(), Some(ORGANIZATION));
            assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw());
            assert_random_positive_serial(cert);
            assert_eq!(
                cert.signature_algorithm.algorithm,
                expected_signature_oid(curve)
            );
            assert_eq!(named_curve(cert), expected_curve_oid(curve));

            let bc = cert.basic_constraints().expect("bc parses").expect("bc");
            assert!(bc.critical, "basicConstraints must be critical");
            assert!(bc.value.ca);
            assert_eq!(bc.value.path_len_constraint, Some(0));

            let ku = cert.key_usage().expect("ku parses").expect("ku");
            assert!(ku.critical, "keyUsage must be critical (CCF #7132)");
            assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
            assert!(ku.value.digital_signature());
            assert!(!ku.value.key_agreement());

            assert_eq!(authority_key_id(cert), subject_key_id(cert));
            assert_eq!(subject_key_id(cert).len(), 20);
            assert!(cert.extended_key_usage().expect("eku parses").is_none());

            let (remaining, elapsed) = validity_window(cert);
            assert!(
                remaining > 3650 * DAY && remaining < 3660 * DAY,
                "~10 years"
            );
            assert!((0..2 * 3600).contains(&elapsed), "valid now, back-dated");
        });
    }
}

#[test]
fn node_certificate_profile() {
    for curve in [Curve::P384, Curve::P256] {
        let hostnames = [
            "ledger.example.com",
            "10.1.2.3",
            "[fe80::1]",
            "localhost",
            "Node-2",
        ];
        let (service, _node_key, node_cert) = node_setup(curve, &hostnames);
        let (service_subject, service_ski) = with_parsed(&service.cert_pem, |svc| {
            (svc.subject().as_raw().to_vec(), subject_key_id(svc))
        });
        with_parsed(&node_cert, |cert| {
            assert_eq!(common_name(cert), NODE_COMMON_NAME);
            assert_eq!(organization(cert).as_deref(), Some(ORGANIZATION));
            assert_eq!(cert.issuer().as_raw(), service_subject.as_slice());
            assert_random_positive_serial(cert);
            assert_eq!(
                cert.signature_algorithm.algorithm,
                expected_signature_oid(curve)
            );
            assert_eq!(named_curve(cert), expected_curve_oid(curve));

            let bc = cert.basic_constraints().expect("bc parses").expect("bc");
            assert!(bc.critical, "basicConstraints must be critical");
            assert!(!bc.value.ca);
            assert_eq!(bc.value.path_len_constraint, None);

            let ku = cert.key_usage().expect("ku parses").expect("ku");
            assert!(ku.critical);
            assert!(ku.value.digital_signature() && ku.value.key_agreement());
            assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());

            let eku = cert.extended_key_usage().expect("eku parses").expect("eku");
            assert!(!eku.critical);
            assert!(eku.value.server_auth && eku.value.client_auth);

            assert_eq!(authority_key_id(cert), service_ski, "AKI = service SKI");
            assert_ne!(subject_key_id(cert), service_ski);

            let (dns, ips) = sans(cert);
            assert_eq!(dns, ["localhost", "ledger.example.com", "node-2"]);
            let expected_ips: Vec<IpAddr> = ["127.0.0.1", "::1", "10.1.2.3", "fe80::1"]
                .iter()
                .map(|ip| ip.parse().expect("ip"))
                .collect();
            assert_eq!(ips, expected_ips);

            let (remaining, elapsed) = validity_window(cert);
            assert!(remaining > 364 * DAY && remaining < 366 * DAY, "~1 year");
            assert!((0..2 * 3600).contains(&elapsed));
        });
    }
}

#[test]
fn node_certificate_signature_follows_the_service_key() {
    let service = create_service_identity(Curve::P384).expect("service");
    let node_key = generate_private_key(Curve::P256).expect("node key");
    let node_cert = issue_node_certificate(&service, &node_key, &[]).expect("node cert");
    with_parsed(&node_cert, |cert| {
        assert_eq!(
            cert.signature_algorithm.algorithm,
            OID_SIG_ECDSA_WITH_SHA384
        );
        assert_eq!(named_curve(cert), OID_EC_P256);
        let (dns, ips) = sans(cert);
        assert_eq!(dns, ["localhost"]);
        assert_eq!(ips.len(), 2);
    });
}

#[test]
fn client_certificate_profile() {
    let client = create_client_identity("alice (ops) ü", Curve::P384).expect("client");
    with_parsed(&client.cert_pem, |cert| {
        assert_eq!(common_name(cert), "alice (ops) ü");
        assert_eq!(organization(cert), None);
        assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw());
        assert_random_positive_serial(cert);
        assert_eq!(
            cert.signature_algorithm.algorithm,
            OID_SIG_ECDSA_WITH_SHA384
        );
        let bc = cert.basic_constraints().expect("bc parses").expect("bc");
        assert!(bc.critical && !bc.value.ca);
        let ku = cert.key_usage().expect("ku parses").expect("ku");
        assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());
        let eku = cert.extended_key_usage().expect("eku parses").expect("eku");
        assert!(eku.value.client_auth && !eku.value.server_auth);
        assert_eq!(authority_key_id(cert), subject_key_id(cert));
        let (remaining, _) = validity_window(cert);
        assert!(remaining > 364 * DAY && remaining < 366 * DAY);
    });
    assert!(matches!(
        create_client_identity(" ", Curve::P256),
        Err(IdentityError::InvalidCommonName(_))
    ));
}

#[test]
fn openssl_strict_verify_accepts_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    for curve in [Curve::P384, Curve::P256] {
        let (service, _key, node_cert) = node_setup(curve, &["ledger.example.com"]);
        let ca = write(dir.path(), "service.pem", &service.cert_pem);
        let node = write(dir.path(), "node.pem", &node_cert);
        let ca = path_str(&ca);
        let node = path_str(&node);
        run("openssl", &["verify", "-x509_strict", "-CAfile", ca, ca]);
        let out = run("openssl", &["verify", "-x509_strict", "-CAfile", ca, node]);
        assert!(out.trim_end().ends_with(": OK"), "{out}");
        for check in [
            ["-verify_hostname", "localhost"],
            ["-verify_hostname", "ledger.example.com"],
            ["-verify_ip", "127.0.0.1"],
            ["-verify_ip", "::1"],
        ] {
            let mut args = vec!["verify", "-x509_strict", "-purpose", "sslserver"];
            args.extend(check);
            args.extend(["-CAfile", ca, node]);
            run("openssl", &args);
        }
    }
}

#[test]
fn openssl_rejects_a_node_certificate_from_another_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_service, _key, node_cert) = node_setup(Curve::P384, &[]);
    let other = create_service_identity(Curve::P384).expect("other service");
    let ca = write(dir.path(), "other.pem", &other.cert_pem);
    let node = write(dir.path(), "node.pem", &node_cert);
    let status = Command::new("openssl")
        .args([
            "verify",
            "-x509_strict",
            "-CAfile",
            path_str(&ca),
            path_str(&node),
        ])
        .output()
        .expect("run openssl")
        .status;
    assert!(!status.success());
}

/// A TLS handshake in memory between Python's `ssl` server (node cert + key) and client
/// (service cert as the only CA, `VERIFY_X509_STRICT`, host name checking on).
const PYTHON_STRICT_HANDSHAKE: &str = r#"
import ssl, sys
ca, chain, host = sys.argv[1:4]
server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server.load_cert_chain(chain)
client = ssl.create_default_context(cafile=ca)
client.verify_flags |= ssl.VERIFY_X509_STRICT
assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
bios = [ssl.MemoryBIO() for _ in range(4)]
c = client.wrap_bio(bios[0], bios[1], server_hostname=host)
s = server.wrap_bio(bios[2], bios[3], server_side=True)
done = {c: False, s: False}
for _ in range(20):
    for end in (c, s):
        if not done[end]:
            try:
                end.do_handshake()
                done[end] = True
            except ssl.SSLWantReadError:
                pass
    bios[2].write(bios[1].read())
    bios[0].write(bios[3].read())
    if all(done.values()):
        print("OK", c.version())
        sys.exit(0)
sys.exit("handshake did not finish")
"#;

fn python_handshake(ca: &Path, chain: &Path, host: &str) -> std::process::Output {
    Command::new("python3")
        .args([
            "-c",
            PYTHON_STRICT_HANDSHAKE,
            path_str(ca),
            path_str(chain),
            host,
        ])
        .output()
        .expect("cannot run python3")
}

#[test]
fn python_ssl_strict_mode_accepts_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    for curve in [Curve::P384, Curve::P256] {
        let (service, node_key, node_cert) = node_setup(curve, &["ledger.example.com"]);
        let ca = write(dir.path(), "service.pem", &service.cert_pem);
        // What a server sends: node cert, then the service cert, then (for loading) the key.
        let chain = format!("{node_cert}{}{node_key}", service.cert_pem);
        let chain = write(dir.path(), "chain.pem", &chain);
        for host in ["localhost", "127.0.0.1", "ledger.example.com"] {
            let out = python_handshake(&ca, &chain, host);
            assert!(
                out.status.success() && out.stdout.starts_with(b"OK"),
                "{host}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The check has teeth: a name outside the SAN, or another service as CA, fails.
        assert!(
            !python_handshake(&ca, &chain, "other.example")
                .status
                .success()
        );
        let other = create_service_identity(curve).expect("other service");
        let other_ca = write(dir.path(), "other.pem", &other.cert_pem);
        assert!(
            !python_handshake(&other_ca, &chain, "localhost")
                .status
                .success()
        );
    }
}

#[test]
fn fingerprint_matches_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = create_client_identity("user", Curve::P384).expect("client");
    let fingerprint = certificate_fingerprint(&client.cert_pem).expect("fingerprint");
    let path = write(dir.path(), "user.pem", &client.cert_pem);
    let out = run(
        "openssl",
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            path_str(&path),
        ],
    );
    let (_, openssl_fp) = out
        .trim()
        .split_once('=')
        .expect("openssl fingerprint format");
    assert_eq!(fingerprint, openssl_fp);
    assert_eq!(fingerprint.len(), 32 * 3 - 1);
    assert!(
        fingerprint
            .chars()
            .all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase())
    );
    // The bundle yields the same id.
    assert_eq!(
        certificate_fingerprint(&client.bundle_pem()).expect("fp"),
        fingerprint
    );
}

#[test]
fn bundle_holds_cert_then_matching_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = create_client_identity("user", Curve::P256).expect("client");
    let bundle = client.bundle_pem();
    assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(bundle.contains("\n-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        certificate_der(&bundle).expect("der"),
        certificate_der(&client.cert_pem).expect("der")
    );
    let path = write(dir.path(), "bundle.pem", &bundle);
    let path = path_str(&path);
    let cert_pub = run("openssl", &["x509", "-noout", "-pubkey", "-in", path]);
    let key_pub = run("openssl", &["pkey", "-pubout", "-in", path]);
    assert_eq!(cert_pub, key_pub);
}

#[test]
fn debug_output_redacts_private_keys() {
    let service = create_service_identity(Curve::P256).expect("service");
    let client = create_client_identity("user", Curve::P256).expect("client");
    for (debug, key) in [
        (format!("{service:?}"), &service.key_pem),
        (format!("{client:?}"), &client.key_pem),
    ] {
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        assert!(!debug.contains(key.lines().nth(1).expect("key body")));
        assert!(debug.contains("<redacted>"));
    }
}

#[test]
fn private_keys_are_pkcs8_on_the_requested_curve() {
    for curve in [Curve::P256, Curve::P384] {
        let pem = generate_private_key(curve).expect("key");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let key = KeyPair::from_pem(&pem).expect("parse");
        assert_eq!(key.algorithm(), curve.signature_algorithm());
    }
}

#[test]
fn certificate_der_matches_the_pem_body() {
    let service = create_service_identity(Curve::P256).expect("service");
    let der = certificate_der(&service.cert_pem).expect("der");
    with_parsed(&service.cert_pem, |cert| {
        assert_eq!(cert.as_ref(), der.as_slice())
    });
}

#[test]
fn rejects_bad_inputs() {
    let service = create_service_identity(Curve::P256).expect("service");
    let other = create_service_identity(Curve::P256).expect("other");
    let node_key = generate_private_key(Curve::P256).expect("node key");

    let mixed = ServiceIdentity {
        cert_pem: service.cert_pem.clone(),
        key_pem: other.key_pem.clone(),
    };
    assert!(matches!(
        issue_node_certificate(&mixed, &node_key, &[]),
        Err(IdentityError::ServiceKeyMismatch)
    ));
    for bad_host in ["", "bad host", "ünïcode.example", "a/b"] {
        assert!(
            matches!(
                issue_node_certificate(&service, &node_key, &[bad_host.to_owned()]),
                Err(IdentityError::InvalidHostname(_))
            ),
            "{bad_host:?}"
        );
    }
    assert!(matches!(
        issue_node_certificate(&service, "not a key", &[]),
        Err(IdentityError::InvalidKey(_))
    ));
    assert!(matches!(
        certificate_der("nothing"),
        Err(IdentityError::NoCertificatePem)
    ));
    assert!(matches!(
        certificate_fingerprint("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
        Err(IdentityError::InvalidPem(_))
    ));
    let not_a_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        certificate_der(not_a_cert),
        Err(IdentityError::InvalidCertificate(_))
    ));
}

#[test]
fn curve_names() {
    assert_eq!(Curve::default(), Curve::P384);
    for (text, curve) in [
        ("p384", Curve::P384),
        ("P-256", Curve::P256),
        ("secp384r1", Curve::P384),
    ] {
        assert_eq!(text.parse::<Curve>().expect("curve"), curve);
    }
    assert_eq!(Curve::P256.to_string(), "p256");
    assert!(matches!(
        "ed25519".parse::<Curve>(),
        Err(IdentityError::UnknownCurve(_))
    ));
}
