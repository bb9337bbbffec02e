//! Keys and X.509 certificates of a cledger deployment.
//!
//! This crate owns the three certificate profiles a ledger needs, and nothing else (no TLS, no
//! storage):
//!
//! * the **service identity** ([`create_service_identity`]): a self-signed CA certificate that
//!   clients pin (ACL's `ledgerTlsCertificate`, CCF's "service certificate"). Receipts chain to
//!   it and TLS clients use it as their only trust anchor;
//! * **node certificates** ([`issue_node_certificate`]): issued by the service key, presented as
//!   the TLS server certificate and embedded in receipts (`receipt.cert`), whose key signs
//!   Merkle roots;
//! * **client certificates** ([`create_client_identity`]): self-signed certificates for the
//!   mTLS authentication mode, where the user id is [`certificate_fingerprint`].
//!
//! # Why the profiles look the way they do
//!
//! Clients validate the node → service chain with whatever X.509 validator their platform has,
//! and the strict ones reject certificates CCF used to issue. Python ≥ 3.13 sets
//! `VERIFY_X509_STRICT` by default, which (through OpenSSL) demands that a CA certificate has a
//! *critical* `basicConstraints` with `CA:TRUE`, a `keyUsage` with `keyCertSign`, and a Subject
//! Key Identifier, and that every certificate issued by it carries an Authority Key Identifier.
//! CCF's service certificates had no `keyUsage` and broke every Python 3.13 client
//! (microsoft/CCF issue #7132, fixed by PR #7134). So every profile here carries those extensions
//! from the start, and `keyUsage` is always marked critical, as RFC 5280 recommends.
//!
//! Node certificates always name `localhost`, `127.0.0.1` and `::1` in their SAN, because
//! Python clients check the host name against the SAN even when the trust anchor is pinned.
//!
//! Validity: the service certificate lives ~10 years, since an expired service certificate
//! takes the whole service down (a known CCF operational pain point); node and client
//! certificates live one year. Every certificate is back-dated by one hour to tolerate clock
//! skew between the machine that issues it and the one that checks it.
//!
//! Signature algorithms follow the signing key: ecdsa-with-SHA384 for P-384, ecdsa-with-SHA256
//! for P-256. Serial numbers are 16 random bytes, positive and of fixed length.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber, SignatureAlgorithm,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;
use x509_cert::der::{Decode, Encode, Tag, Tagged};
use x509_cert::ext::pkix::SubjectKeyIdentifier;

/// Common name of the service (CA) certificate.
pub const SERVICE_COMMON_NAME: &str = "cledger Service";
/// Common name of node certificates.
pub const NODE_COMMON_NAME: &str = "cledger Node";
/// Organization written into service and node certificates.
pub const ORGANIZATION: &str = "cledger";

/// Host names every node certificate covers, whatever the caller passes.
const DEFAULT_NODE_HOSTNAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const SERVICE_VALIDITY: Duration = Duration::days(3652);
const LEAF_VALIDITY: Duration = Duration::days(365);
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::hours(1);
const SERIAL_LEN: usize = 16;

const PEM_CERT_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_CERT_END: &str = "-----END CERTIFICATE-----";

/// Everything that can go wrong while generating or reading identities.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("key generation failed: {0}")]
    KeyGeneration(#[source] rcgen::Error),
    #[error("invalid private key: {0}")]
    InvalidKey(#[source] rcgen::Error),
    #[error("certificate generation failed: {0}")]
    CertificateGeneration(#[source] rcgen::Error),
    #[error("no PEM CERTIFICATE block found")]
    NoCertificatePem,
    #[error("invalid PEM: {0}")]
    InvalidPem(String),
    #[error("invalid certificate: {0}")]
    InvalidCertificate(#[source] x509_cert::der::Error),
    #[error("the service certificate has no Subject Key Identifier")]
    MissingSubjectKeyIdentifier,
    #[error("unsupported service certificate subject: {0}")]
    UnsupportedSubject(String),
    #[error("the service key does not match the service certificate")]
    ServiceKeyMismatch,
    #[error("invalid host name {0:?}")]
    InvalidHostname(String),
    #[error("invalid common name {0:?}")]
    InvalidCommonName(String),
    #[error("unknown curve {0:?} (expected p256 or p384)")]
    UnknownCurve(String),
    #[error("randomness unavailable: {0}")]
    Random(getrandom::Error),
    #[error("system clock out of range")]
    Clock,
}

/// The elliptic curve of a key. P-384 is what ACL uses today and is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Curve {
    P256,
    #[default]
    P384,
}

impl Curve {
    /// The ECDSA algorithm used with keys on this curve (the hash matches the curve size).
    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Curve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }

    /// The lower-case name used on command lines (`p256`, `p384`).
    pub fn as_str(self) -> &'static str {
        match self {
            Curve::P256 => "p256",
            Curve::P384 => "p384",
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Curve {
    type Err = IdentityError;

    /// Accepts `p256`/`p384` in any case, with or without a dash (`P-384`), and the SEC names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "p256" | "secp256r1" | "prime256v1" => Ok(Curve::P256),
            "p384" | "secp384r1" => Ok(Curve::P384),
            _ => Err(IdentityError::UnknownCurve(s.to_owned())),
        }
    }
}

/// The service identity: the self-signed CA certificate and its private key (PKCS#8 PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for ServiceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A client (user) identity for mTLS: a self-signed certificate and its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl ClientIdentity {
    /// Certificate followed by private key in one PEM text: the file format the Python SDK's
    /// `ConfidentialLedgerCertificateCredential(certificate_path)` expects.
    pub fn bundle_pem(&self) -> String {
        let mut bundle = String::with_capacity(self.cert_pem.len() + self.key_pem.len() + 1);
        bundle.push_str(&self.cert_pem);
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(&self.key_pem);
        bundle
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Generates a fresh ECDSA private key, returned as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
pub fn generate_private_key(curve: Curve) -> Result<String, IdentityError> {
    Ok(generate_key_pair(curve)?.serialize_pem())
}

/// Creates a new service identity: a fresh key and a self-signed CA certificate
/// (`CN=cledger Service, O=cledger`, CA:TRUE pathlen 0, ~10 years).
pub fn create_service_identity(curve: Curve) -> Result<ServiceIdentity, IdentityError> {
    let key = generate_key_pair(curve)?;
    let mut params = base_params(service_name(), SERVICE_VALIDITY)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(IdentityError::CertificateGeneration)?;
    Ok(ServiceIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a node certificate (`CN=cledger Node`) for `node_key_pem`'s public key, signed by the
/// service key. The SAN holds `localhost`, `127.0.0.1`, `::1` and every entry of `hostnames`
/// (as an IP address when it parses as one, `[v6]` brackets allowed, else as a DNS name).
///
/// The issuer name and Authority Key Identifier are taken from the service certificate itself,
/// so the chain links for any validator; the service key must match that certificate. The
/// certificate is valid for one year, but never beyond the service certificate.
pub fn issue_node_certificate(
    service: &ServiceIdentity,
    node_key_pem: &str,
    hostnames: &[String],
) -> Result<String, IdentityError> {
    let node_key = KeyPair::from_pem(node_key_pem).map_err(IdentityError::InvalidKey)?;
    issue_node_certificate_for(service, &node_key, hostnames)
}

/// [`issue_node_certificate`] for a node known only by its public key (`SubjectPublicKeyInfo`
/// DER): how a cluster's primary certifies a node that joins, which never sends its private key.
pub fn issue_node_certificate_for_public_key(
    service: &ServiceIdentity,
    node_spki_der: &[u8],
    hostnames: &[String],
) -> Result<String, IdentityError> {
    let node_key =
        rcgen::SubjectPublicKeyInfo::from_der(node_spki_der).map_err(IdentityError::InvalidKey)?;
    issue_node_certificate_for(service, &node_key, hostnames)
}

fn issue_node_certificate_for(
    service: &ServiceIdentity,
    node_key: &impl PublicKeyData,
    hostnames: &[String],
) -> Result<String, IdentityError> {
    let service_cert = parse_certificate(&service.cert_pem)?;
    let service_tbs = service_cert.tbs_certificate();
    let service_key = KeyPair::from_pem(&service.key_pem).map_err(IdentityError::InvalidKey)?;
    let service_spki = service_tbs
        .subject_public_key_info()
        .to_der()
        .map_err(IdentityError::InvalidCertificate)?;
    if service_spki != service_key.subject_public_key_info() {
        return Err(IdentityError::ServiceKeyMismatch);
    }
    let service_ski = match service_tbs
        .get_extension::<SubjectKeyIdentifier>()
        .map_err(IdentityError::InvalidCertificate)?
    {
        Some((_critical, ski)) => ski.0.as_bytes().to_vec(),
        None => return Err(IdentityError::MissingSubjectKeyIdentifier),
    };
    let mut issuer_params = CertificateParams::default();
    issuer_params.distinguished_name = rcgen_name(service_tbs.subject())?;
    issuer_params.key_identifier_method = KeyIdMethod::PreSpecified(service_ski);
    let issuer = Issuer::new(issuer_params, service_key);

    let mut params = base_params(node_name(), LEAF_VALIDITY)?;
    let service_not_after = unix_time(service_tbs.validity().not_after.to_unix_duration())?;
    params.not_after = params.not_after.min(service_not_after);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.subject_alt_names = node_subject_alt_names(hostnames)?;
    let cert = params
        .signed_by(node_key, &issuer)
        .map_err(IdentityError::CertificateGeneration)?;

    // The chain only links if the issuer field is byte-for-byte the service subject (webpki and
    // rustls compare raw bytes); `rcgen_name` should guarantee it, this makes sure.
    let node_cert = Certificate::from_der(cert.der()).map_err(IdentityError::InvalidCertificate)?;
    if node_cert.tbs_certificate().issuer() != service_tbs.subject() {
        return Err(IdentityError::UnsupportedSubject(
            "issuer name does not re-encode identically".to_owned(),
        ));
    }
    Ok(cert.pem())
}

/// Creates a self-signed client certificate `CN=<common_name>` (CA:FALSE, EKU clientAuth,
/// one year) with a fresh key.
pub fn create_client_identity(
    common_name: &str,
    curve: Curve,
) -> Result<ClientIdentity, IdentityError> {
    if common_name.trim().is_empty() || common_name.chars().any(char::is_control) {
        return Err(IdentityError::InvalidCommonName(common_name.to_owned()));
    }
    let key = generate_key_pair(curve)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    let mut params = base_params(name, LEAF_VALIDITY)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .self_signed(&key)
        .map_err(IdentityError::CertificateGeneration)?;
    Ok(ClientIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A self-signed certificate (`CN=<common_name>`, EKU clientAuth, one year) for an existing
/// key: what a node that asks to join a service presents, proving it holds the key that the
/// service will certify.
pub fn self_signed_certificate(key_pem: &str, common_name: &str) -> Result<String, IdentityError> {
    let key = KeyPair::from_pem(key_pem).map_err(IdentityError::InvalidKey)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    let mut params = base_params(name, LEAF_VALIDITY)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .self_signed(&key)
        .map_err(IdentityError::CertificateGeneration)?;
    Ok(cert.pem())
}

/// The ACL user id of a certificate: SHA-256 of its DER encoding as upper-case hex pairs joined
/// by `:` (the format of `openssl x509 -noout -fingerprint -sha256`, without the prefix).
/// Accepts any PEM text holding the certificate, such as a [`ClientIdentity::bundle_pem`].
pub fn certificate_fingerprint(cert_pem: &str) -> Result<String, IdentityError> {
    let der = certificate_der(cert_pem)?;
    let digest = Sha256::digest(&der);
    let pairs: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    Ok(pairs.join(":"))
}

/// The DER encoding of the first `CERTIFICATE` block in `cert_pem` (other blocks, such as a
/// private key in a bundle, are ignored). Fails unless the block holds a well-formed certificate.
pub fn certificate_der(cert_pem: &str) -> Result<Vec<u8>, IdentityError> {
    let start = cert_pem
        .find(PEM_CERT_BEGIN)
        .ok_or(IdentityError::NoCertificatePem)?;
    let end = cert_pem[start..]
        .find(PEM_CERT_END)
        .map(|offset| start + offset + PEM_CERT_END.len())
        .ok_or(IdentityError::NoCertificatePem)?;
    let (_label, der) = x509_cert::der::pem::decode_vec(&cert_pem.as_bytes()[start..end])
        .map_err(|e| IdentityError::InvalidPem(e.to_string()))?;
    Certificate::from_der(&der).map_err(IdentityError::InvalidCertificate)?;
    Ok(der)
}

fn parse_certificate(cert_pem: &str) -> Result<Certificate, IdentityError> {
    let der = certificate_der(cert_pem)?;
    Certificate::from_der(&der).map_err(IdentityError::InvalidCertificate)
}

fn generate_key_pair(curve: Curve) -> Result<KeyPair, IdentityError> {
    KeyPair::generate_for(curve.signature_algorithm()).map_err(IdentityError::KeyGeneration)
}

fn service_name() -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, SERVICE_COMMON_NAME);
    name.push(DnType::OrganizationName, ORGANIZATION);
    name
}

fn node_name() -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, NODE_COMMON_NAME);
    name.push(DnType::OrganizationName, ORGANIZATION);
    name
}

/// Parameters shared by every profile: subject, random serial, validity from one hour ago,
/// SHA-256-based key identifiers, and an Authority Key Identifier (also on self-signed
/// certificates, where it equals the SKI).
fn base_params(
    subject: DistinguishedName,
    validity: Duration,
) -> Result<CertificateParams, IdentityError> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.serial_number = Some(random_serial()?);
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + validity;
    params.key_identifier_method = KeyIdMethod::Sha256;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A positive serial of exactly `SERIAL_LEN` bytes (top bit clear, next bit set, so DER needs
/// neither a sign byte nor trimming).
fn random_serial() -> Result<SerialNumber, IdentityError> {
    let mut bytes = [0u8; SERIAL_LEN];
    getrandom::fill(&mut bytes).map_err(IdentityError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn unix_time(since_epoch: std::time::Duration) -> Result<OffsetDateTime, IdentityError> {
    let secs = i64::try_from(since_epoch.as_secs()).map_err(|_| IdentityError::Clock)?;
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| IdentityError::Clock)
}

/// The default names plus `hostnames`, without duplicates, in that order.
fn node_subject_alt_names(hostnames: &[String]) -> Result<Vec<SanType>, IdentityError> {
    let mut sans: Vec<SanType> = Vec::new();
    let names = DEFAULT_NODE_HOSTNAMES
        .iter()
        .copied()
        .chain(hostnames.iter().map(String::as_str));
    for name in names {
        let san = subject_alt_name(name)?;
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

fn subject_alt_name(name: &str) -> Result<SanType, IdentityError> {
    let invalid = || IdentityError::InvalidHostname(name.to_owned());
    let unbracketed = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid_dns = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
    if !valid_dns {
        return Err(invalid());
    }
    let dns = name
        .to_ascii_lowercase()
        .try_into()
        .map_err(|_| invalid())?;
    Ok(SanType::DnsName(dns))
}

/// Re-creates an X.509 name as an rcgen name that encodes to the same bytes (one attribute per
/// RDN, UTF8String/PrintableString/IA5String values — what rcgen, OpenSSL and CCF produce).
fn rcgen_name(name: &x509_cert::name::Name) -> Result<DistinguishedName, IdentityError> {
    let unsupported = |what: &str| IdentityError::UnsupportedSubject(what.to_owned());
    let mut out = DistinguishedName::new();
    for rdn in name.iter_rdn() {
        let mut attributes = rdn.iter();
        let (Some(attribute), None) = (attributes.next(), attributes.next()) else {
            return Err(unsupported("multi-valued or empty RDN"));
        };
        let arcs: Vec<u64> = attribute.oid.arcs().map(u64::from).collect();
        let dn_type = DnType::from_oid(&arcs);
        if out.get(&dn_type).is_some() {
            return Err(unsupported("repeated attribute type"));
        }
        let text = std::str::from_utf8(attribute.value.value())
            .map_err(|_| unsupported("attribute value is not UTF-8"))?
            .to_owned();
        let value = match attribute.value.tag() {
            Tag::Utf8String => DnValue::Utf8String(text),
            Tag::PrintableString => DnValue::PrintableString(
                text.try_into()
                    .map_err(|_| unsupported("invalid PrintableString"))?,
            ),
            Tag::Ia5String => DnValue::Ia5String(
                text.try_into()
                    .map_err(|_| unsupported("invalid IA5String"))?,
            ),
            other => return Err(unsupported(&format!("attribute string type {other}"))),
        };
        out.push(dn_type, value);
    }
    Ok(out)
}

pub mod files;

#[cfg(test)]
mod tests;
