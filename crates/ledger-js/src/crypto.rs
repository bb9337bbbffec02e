//! `ccf.crypto.digest`, `ccf.crypto.verifySignature` and `ccf.pemToId`.
//!
//! Owns the cryptography a script can ask for, done with the workspace's RustCrypto
//! crates so no OpenSSL is involved.

use der::{Decode, DecodePem, Encode};
use p256::pkcs8::DecodePublicKey;
use sha2::Digest;
use x509_cert::Certificate;

/// The digest of `data`, or `None` for an unknown algorithm name.
pub(crate) fn digest(algorithm: &str, data: &[u8]) -> Option<Vec<u8>> {
    match algorithm {
        "SHA-256" => Some(sha2::Sha256::digest(data).to_vec()),
        "SHA-384" => Some(sha2::Sha384::digest(data).to_vec()),
        "SHA-512" => Some(sha2::Sha512::digest(data).to_vec()),
        _ => None,
    }
}

/// CCF's id of a certificate: lowercase hex SHA-256 of its DER.
pub(crate) fn pem_to_id(pem: &str) -> Result<String, String> {
    let cert = Certificate::from_pem(pem.trim().as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let der = cert
        .to_der()
        .map_err(|e| format!("cannot encode the certificate: {e}"))?;
    Ok(hex::encode(sha2::Sha256::digest(&der)))
}

/// The SubjectPublicKeyInfo DER of a PEM public key or certificate.
fn spki_der(pem: &str) -> Result<Vec<u8>, String> {
    let pem = pem.trim();
    if pem.contains("BEGIN CERTIFICATE") {
        let cert = Certificate::from_pem(pem.as_bytes())
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        cert.tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| format!("bad public key in certificate: {e}"))
    } else {
        let (label, der) = der::pem::decode_vec(pem.as_bytes())
            .map_err(|e| format!("not a PEM public key: {e}"))?;
        if label != "PUBLIC KEY" {
            return Err(format!("expected a PUBLIC KEY or CERTIFICATE, got {label}"));
        }
        spki::SubjectPublicKeyInfoRef::from_der(&der)
            .map_err(|e| format!("not a public key: {e}"))?;
        Ok(der)
    }
}

/// ECDSA verification with P-256/SHA-256 or P-384/SHA-384; the signature may be DER or
/// IEEE P1363 (r‖s). `Err` for unsupported algorithms or unusable keys; `Ok(false)` for a
/// signature that does not verify.
pub(crate) fn verify_signature(
    name: &str,
    hash: &str,
    key_pem: &str,
    signature: &[u8],
    data: &[u8],
) -> Result<bool, String> {
    if name != "ECDSA" {
        return Err(format!(
            "unsupported signature algorithm '{name}' (only ECDSA)"
        ));
    }
    let spki = spki_der(key_pem)?;
    match hash {
        "SHA-256" => {
            use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
            let key = VerifyingKey::from_public_key_der(&spki).map_err(|_| {
                "the key is not a P-256 public key (SHA-256 needs P-256)".to_owned()
            })?;
            let sig = Signature::from_der(signature).or_else(|_| Signature::from_slice(signature));
            Ok(sig.is_ok_and(|sig| key.verify(data, &sig).is_ok()))
        }
        "SHA-384" => {
            use p384::ecdsa::{Signature, VerifyingKey, signature::Verifier};
            let key = VerifyingKey::from_public_key_der(&spki).map_err(|_| {
                "the key is not a P-384 public key (SHA-384 needs P-384)".to_owned()
            })?;
            let sig = Signature::from_der(signature).or_else(|_| Signature::from_slice(signature));
            Ok(sig.is_ok_and(|sig| key.verify(data, &sig).is_ok()))
        }
        _ => Err(format!(
            "unsupported hash '{hash}' for ECDSA (SHA-256 or SHA-384)"
        )),
    }
}
