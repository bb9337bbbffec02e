//! The X.509 facts a receipt verifier needs, and nothing more.
//!
//! A receipt names a node certificate, optional endorsement certificates, and is checked
//! against the service certificate. Verifying one takes: parsing a certificate, reading its EC
//! public key, checking that one certificate's signature verifies under another's key, and
//! (for our stricter checks) reading basicConstraints. This module does exactly that. Like the
//! Python SDK, it verifies a signature by hashing the certificate's *original* TBSCertificate
//! bytes with the hash its signature algorithm names, then checking ECDSA over that digest.
//!
//! Validity dates are reported, never checked. There is no clock here, and it would be wrong
//! anyway: a receipt is meant to be checked long after issuance (CCF node and service
//! certificates are short-lived), and the SDK's `verify_receipt` ignores the dates too. TLS is
//! where certificate lifetimes matter.

use crate::signing::{EcPublicKey, SignatureError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use der::{Decode, Encode, Reader, SliceReader};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use spki::ObjectIdentifier;
use std::fmt;
use x509_cert::Certificate;
use x509_cert::ext::pkix::BasicConstraints;

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("no PEM CERTIFICATE block, or its body is not base64")]
    NotPem,
    #[error("not a DER X.509 certificate")]
    Malformed,
    #[error("the certificate's public key is unusable: {0}")]
    PublicKey(SignatureError),
    #[error("the issuer's public key is unusable: {0}")]
    IssuerKey(SignatureError),
    #[error("unsupported certificate signature algorithm {0} (need ecdsa-with-SHA256/384/512)")]
    UnsupportedSignatureAlgorithm(String),
    #[error("the certificate's inner and outer signature algorithms differ")]
    AlgorithmMismatch,
    #[error("the certificate's signature does not verify under the issuer's key")]
    BadSignature,
}

/// A parsed certificate that keeps its original DER, so that signatures are checked over the
/// bytes that were signed and not over a re-encoding.
#[derive(Clone)]
pub struct Cert {
    cert: Certificate,
    der: Vec<u8>,
    tbs_der: Vec<u8>,
}

/// The validity period, as seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before_unix: u64,
    pub not_after_unix: u64,
}

impl Cert {
    /// Parses the first `CERTIFICATE` block of a PEM text. Text around the block is ignored and
    /// the body may be wrapped at any width, as with OpenSSL's reader (which the SDK uses).
    pub fn from_pem(pem: &str) -> Result<Cert, CertError> {
        let start = pem.find(PEM_BEGIN).ok_or(CertError::NotPem)? + PEM_BEGIN.len();
        let len = pem[start..].find(PEM_END).ok_or(CertError::NotPem)?;
        let body: String = pem[start..start + len].split_ascii_whitespace().collect();
        let der = BASE64.decode(body).map_err(|_| CertError::NotPem)?;
        Cert::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<Cert, CertError> {
        let cert = Certificate::from_der(der).map_err(|_| CertError::Malformed)?;
        let tbs_der = raw_tbs(der).map_err(|_| CertError::Malformed)?.to_vec();
        Ok(Cert {
            cert,
            der: der.to_vec(),
            tbs_der,
        })
    }

    /// PEM or DER, whichever `bytes` is.
    pub fn parse(bytes: &[u8]) -> Result<Cert, CertError> {
        match std::str::from_utf8(bytes) {
            Ok(text) if text.contains(PEM_BEGIN) => Cert::from_pem(text),
            _ => Cert::from_der(bytes),
        }
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The TBSCertificate exactly as it appears in the certificate: the signed bytes.
    pub fn tbs_der(&self) -> &[u8] {
        &self.tbs_der
    }

    /// PEM with 64-character lines and a final newline, as CCF and OpenSSL write it.
    pub fn to_pem(&self) -> String {
        let body = BASE64.encode(&self.der);
        let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
        pem.push_str(PEM_BEGIN);
        pem.push('\n');
        for line in body.as_bytes().chunks(64) {
            // base64 output is ASCII, so every chunk is valid UTF-8.
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        pem
    }

    /// RFC 4514 form, e.g. `CN=CCF Network`.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate().subject().to_string()
    }

    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate().issuer().to_string()
    }

    /// The SubjectPublicKeyInfo as the certificate encodes it.
    pub fn spki_der(&self) -> Vec<u8> {
        // Re-encoding a value we just decoded cannot fail; an empty result would simply not
        // parse as a key later.
        self.cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap_or_default()
    }

    /// The certificate's EC public key (P-256 or P-384).
    pub fn public_key(&self) -> Result<EcPublicKey, CertError> {
        EcPublicKey::from_spki_der(&self.spki_der()).map_err(CertError::PublicKey)
    }

    /// Whether the key is an elliptic-curve key of any curve: the SDK's "node cert is EC" test.
    pub fn is_ec(&self) -> bool {
        !matches!(
            EcPublicKey::from_spki_der(&self.spki_der()),
            Err(SignatureError::NotEcKey | SignatureError::MalformedPublicKey)
        )
    }

    /// basicConstraints `cA` is TRUE. A missing, malformed or duplicated extension counts as
    /// "not a CA".
    pub fn is_ca(&self) -> bool {
        matches!(
            self.cert
                .tbs_certificate()
                .get_extension::<BasicConstraints>(),
            Ok(Some((_, BasicConstraints { ca: true, .. })))
        )
    }

    pub fn validity(&self) -> Validity {
        let v = self.cert.tbs_certificate().validity();
        Validity {
            not_before_unix: v.not_before.to_unix_duration().as_secs(),
            not_after_unix: v.not_after.to_unix_duration().as_secs(),
        }
    }

    /// Checks that `issuer`'s key signed this certificate. Names, extensions and dates are not
    /// looked at.
    pub fn verify_issued_by(&self, issuer: &Cert) -> Result<(), CertError> {
        let algorithm = self.cert.signature_algorithm();
        if algorithm != self.cert.tbs_certificate().signature() {
            return Err(CertError::AlgorithmMismatch);
        }
        let tbs = &self.tbs_der;
        let digest: Vec<u8> = match algorithm.oid {
            ECDSA_WITH_SHA256 => Sha256::digest(tbs).to_vec(),
            ECDSA_WITH_SHA384 => Sha384::digest(tbs).to_vec(),
            ECDSA_WITH_SHA512 => Sha512::digest(tbs).to_vec(),
            other => return Err(CertError::UnsupportedSignatureAlgorithm(other.to_string())),
        };
        let key = issuer.public_key().map_err(|e| match e {
            CertError::PublicKey(e) => CertError::IssuerKey(e),
            other => other,
        })?;
        let signature = self
            .cert
            .signature()
            .as_bytes()
            .ok_or(CertError::BadSignature)?;
        key.verify_prehash(&digest, signature)
            .map_err(|_| CertError::BadSignature)
    }

    /// Signed by its own key.
    pub fn is_self_signed(&self) -> bool {
        self.verify_issued_by(self).is_ok()
    }
}

impl fmt::Debug for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Cert(subject={}, issuer={})",
            self.subject(),
            self.issuer()
        )
    }
}

impl PartialEq for Cert {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for Cert {}

/// Checks that `issuer`'s key signed `child` (see [`Cert::verify_issued_by`]).
pub fn verify_issued_by(child: &Cert, issuer: &Cert) -> Result<(), CertError> {
    child.verify_issued_by(issuer)
}

/// basicConstraints `cA` is TRUE (see [`Cert::is_ca`]).
pub fn is_ca(cert: &Cert) -> bool {
    cert.is_ca()
}

/// The first element of the outer `Certificate` SEQUENCE, header included.
fn raw_tbs(der: &[u8]) -> der::Result<&[u8]> {
    SliceReader::new(der)?.sequence(|outer| {
        let tbs = outer.tlv_bytes()?;
        outer.tlv_bytes()?; // signatureAlgorithm
        outer.tlv_bytes()?; // signatureValue
        Ok(tbs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE_1: &str = include_str!("../tests/vectors/sdk-service-cert-1.pem");
    const SERVICE_2: &str = include_str!("../tests/vectors/sdk-service-cert-2.pem");
    const SERVICE_3: &str = include_str!("../tests/vectors/sdk-service-cert-3.pem");

    fn node_cert(vector: &str, pointer: &str) -> Cert {
        let value: serde_json::Value = serde_json::from_str(vector).unwrap();
        Cert::from_pem(value.pointer(pointer).unwrap().as_str().unwrap()).unwrap()
    }

    fn node_3() -> Cert {
        node_cert(
            include_str!("../tests/vectors/sdk-receipt-3-response.json"),
            "/receipt/cert",
        )
    }

    #[test]
    fn sdk_vector_facts() {
        let service = Cert::from_pem(SERVICE_3).unwrap();
        let node = node_3();
        assert_eq!(service.subject(), "CN=CCF Network");
        assert_eq!(service.issuer(), "CN=CCF Network");
        assert_eq!(node.subject(), "CN=CCF Node");
        assert_eq!(node.issuer(), "CN=CCF Network");
        assert!(service.is_ca() && is_ca(&service));
        assert!(!node.is_ca());
        assert!(service.is_self_signed());
        assert!(!node.is_self_signed());
        assert!(node.is_ec() && service.is_ec());
        assert_eq!(
            node.public_key().unwrap().curve(),
            crate::signing::Curve::P384
        );
        // 2023-04-25T18:14:19Z .. 2023-07-24T18:14:18Z
        assert_eq!(
            service.validity(),
            Validity {
                not_before_unix: 1682446459,
                not_after_unix: 1690222458
            }
        );
        node.verify_issued_by(&service).unwrap();
        verify_issued_by(&node, &service).unwrap();
        assert_eq!(node.tbs_der(), &node.der()[4..4 + node.tbs_der().len()]);
    }

    #[test]
    fn p256_vectors_chain_only_to_their_own_service() {
        let s1 = Cert::from_pem(SERVICE_1).unwrap();
        let s2 = Cert::from_pem(SERVICE_2).unwrap();
        let n1 = node_cert(
            include_str!("../tests/vectors/sdk-receipt-1-snake-case.json"),
            "/cert",
        );
        let n2 = node_cert(include_str!("../tests/vectors/sdk-receipt-2.json"), "/cert");
        n1.verify_issued_by(&s1).unwrap();
        n2.verify_issued_by(&s2).unwrap();
        assert_eq!(n1.verify_issued_by(&s2), Err(CertError::BadSignature));
        assert_eq!(n2.verify_issued_by(&s1), Err(CertError::BadSignature));
        // A P-384 issuer key against a P-256-signed cert: the signature is the wrong size.
        assert_eq!(
            n1.verify_issued_by(&Cert::from_pem(SERVICE_3).unwrap()),
            Err(CertError::BadSignature)
        );
        assert!(s1.is_ca() && s2.is_ca() && s1.is_self_signed() && s2.is_self_signed());
        assert!(!n1.is_ca() && !n2.is_ca());
    }

    #[test]
    fn pem_der_round_trip_and_leniency() {
        let service = Cert::from_pem(SERVICE_3).unwrap();
        assert_eq!(Cert::from_der(service.der()).unwrap(), service);
        assert_eq!(Cert::parse(service.der()).unwrap(), service);
        assert_eq!(Cert::parse(SERVICE_3.as_bytes()).unwrap(), service);
        assert_eq!(service.to_pem(), SERVICE_3);
        // Leading text, CRLF and odd wrapping are fine, as with OpenSSL.
        let messy = format!(
            "junk\r\n{}",
            SERVICE_3
                .replace('\n', "\r\n")
                .replacen("MIIB", "MI\r\nIB", 1)
        );
        assert_eq!(Cert::from_pem(&messy).unwrap(), service);
        assert_eq!(Cert::from_pem("nothing"), Err(CertError::NotPem));
        assert_eq!(
            Cert::from_pem(&SERVICE_3.replace("MIIB", "MII*")),
            Err(CertError::NotPem)
        );
        assert_eq!(
            Cert::from_der(&service.der()[1..]),
            Err(CertError::Malformed)
        );
        let mut trailing = service.der().to_vec();
        trailing.push(0);
        assert_eq!(Cert::from_der(&trailing), Err(CertError::Malformed));
    }

    proptest::proptest! {
        /// Arbitrary bytes, and every single-byte corruption of a real certificate, give an
        /// error or a certificate, never a panic.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
                        at in 0usize..448, byte in proptest::prelude::any::<u8>()) {
            let _ = Cert::parse(&bytes);
            let service = Cert::from_pem(SERVICE_3).unwrap();
            let mut der = service.der().to_vec();
            let at = at % der.len();
            der[at] = byte;
            if let Ok(cert) = Cert::from_der(&der) {
                let _ = (cert.is_ca(), cert.is_ec(), cert.validity(), cert.subject());
                let _ = cert.verify_issued_by(&service);
            }
        }
    }

    #[test]
    fn a_changed_tbs_byte_breaks_the_signature() {
        let service = Cert::from_pem(SERVICE_3).unwrap();
        let node = node_3();
        // Flip a bit inside the subject's "CCF Node" (still a valid certificate).
        let mut der = node.der().to_vec();
        let at = der.windows(8).position(|w| w == b"CCF Node").unwrap();
        der[at] ^= 0x20;
        let tampered = Cert::from_der(&der).unwrap();
        assert_eq!(tampered.subject(), "CN=cCF Node");
        assert_eq!(
            tampered.verify_issued_by(&service),
            Err(CertError::BadSignature)
        );
    }
}
