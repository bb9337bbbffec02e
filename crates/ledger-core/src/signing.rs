//! Signatures over Merkle roots, and the EC public keys that check them.
//!
//! Two constructions share one key type, [`EcSigningKey`]: a node's raw root signature, and
//! the message signature of a COSE root signature ([`crate::cose`], made with the service key).
//!
//! A CCF node signs the 32-byte Merkle root *as a precomputed digest*: ECDSA over the root
//! itself, with no second hash, DER-encoded. The receipt's `signature` is that DER in base64.
//! Any other construction (hashing the root again, hashing with SHA-384) fails the SDK's
//! `verify_receipt`, which is why signing goes through `PrehashSigner` and never `Signer`.
//! P-384 is CCF's default curve and P-256 is allowed. For P-384 the 32-byte digest is read as a
//! big-endian integer without truncation, as OpenSSL does.
//!
//! Signing runs on AWS-LC (`aws-lc-rs`, already built for rustls): on P-384 it is several times
//! faster than the RustCrypto arithmetic, which took a quarter of the server's CPU under write
//! load (two signatures per batch). Its nonces are random, so signatures of the same root
//! differ; nothing depends on their bytes being reproducible. Public keys, verification and
//! [`EcSigningKey::derive_secret`] stay on RustCrypto. Key generation is left to the caller.
//! The node id is `SHA256(SubjectPublicKeyInfo DER)` of the node key, in the canonical encoding
//! (named curve, uncompressed point) that the SDK recomputes it from.

use crate::hash::{Hash32, sha256};
use aws_lc_rs::digest::Digest as AwsDigest;
use aws_lc_rs::signature::EcdsaKeyPair;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p384::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use spki::der::Decode;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};
use std::fmt;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    #[error("not a PKCS#8 private key on P-256 or P-384")]
    UnsupportedKey,
    #[error("not a PEM `PRIVATE KEY` document")]
    NotPem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("not a DER SubjectPublicKeyInfo")]
    MalformedPublicKey,
    #[error("the public key is not an elliptic-curve key")]
    NotEcKey,
    #[error("elliptic-curve key on an unsupported curve (only P-256 and P-384)")]
    UnsupportedCurve,
    #[error("the signature is not a DER ECDSA-Sig-Value for this curve")]
    MalformedSignature,
    #[error("the signature does not verify")]
    Invalid,
}

/// A P-256 or P-384 private key: a node's key (raw root signatures) or the service key (COSE
/// root signatures).
pub struct EcSigningKey(SigningKeyInner, AwsSigner);

enum SigningKeyInner {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl SigningKeyInner {
    fn curve(&self) -> Curve {
        match self {
            SigningKeyInner::P256(_) => Curve::P256,
            SigningKeyInner::P384(_) => Curve::P384,
        }
    }
}

/// The same key loaded into AWS-LC twice, because an `aws-lc-rs` key pair has one signature
/// encoding: DER for root signatures, fixed-size `r || s` for COSE.
struct AwsSigner {
    der: EcdsaKeyPair,
    fixed: EcdsaKeyPair,
}

impl AwsSigner {
    fn new(curve: Curve, pkcs8_der: &[u8]) -> Result<AwsSigner, SigningKeyError> {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING,
            ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        let (der, fixed) = match curve {
            Curve::P256 => (
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                &ECDSA_P256_SHA256_FIXED_SIGNING,
            ),
            Curve::P384 => (
                &ECDSA_P384_SHA384_ASN1_SIGNING,
                &ECDSA_P384_SHA384_FIXED_SIGNING,
            ),
        };
        let load = |algorithm| {
            EcdsaKeyPair::from_pkcs8(algorithm, pkcs8_der)
                .map_err(|_| SigningKeyError::UnsupportedKey)
        };
        Ok(AwsSigner {
            der: load(der)?,
            fixed: load(fixed)?,
        })
    }

    /// The DER signature of `root` taken as the digest, or `None` if AWS-LC failed.
    ///
    /// `aws-lc-rs` signs a digest only of its algorithm's own hash length, and P-384's is
    /// SHA-384 (48 bytes). ECDSA reads the digest as an integer of at most the order's bit
    /// length (SEC 1 §4.1.3 step 5): the 32-byte root as a 256-bit integer, and 16 zero bytes
    /// followed by the root as a 384-bit integer of the same value. The signature equation is
    /// the same, so the signature verifies as one over the 32-byte root, which is what CCF and
    /// the SDK check (the tests verify it with RustCrypto's `verify_prehash` of the root).
    fn sign_root(&self, curve: Curve, root: &Hash32) -> Option<Vec<u8>> {
        let digest = match curve {
            Curve::P256 => AwsDigest::import_less_safe(root.as_bytes(), &aws_lc_rs::digest::SHA256),
            Curve::P384 => {
                let mut widened = [0u8; 48];
                widened[16..].copy_from_slice(root.as_bytes());
                AwsDigest::import_less_safe(&widened, &aws_lc_rs::digest::SHA384)
            }
        }
        .ok()?;
        let signature = self.der.sign_digest(&digest).ok()?;
        Some(signature.as_ref().to_vec())
    }

    /// The fixed-size `r || s` signature of `message`, or `None` if AWS-LC failed.
    fn sign_message(&self, message: &[u8]) -> Option<Vec<u8>> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = self.fixed.sign(&rng, message).ok()?;
        Some(signature.as_ref().to_vec())
    }
}

impl EcSigningKey {
    /// Parses an unencrypted PKCS#8 `PrivateKeyInfo`. The curve comes from the key's parameters.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SigningKeyError> {
        let key = match p384::ecdsa::SigningKey::from_pkcs8_der(der) {
            Ok(key) => SigningKeyInner::P384(key),
            Err(_) => p256::ecdsa::SigningKey::from_pkcs8_der(der)
                .map(SigningKeyInner::P256)
                .map_err(|_| SigningKeyError::UnsupportedKey)?,
        };
        let signer = AwsSigner::new(key.curve(), der)?;
        Ok(EcSigningKey(key, signer))
    }

    /// Parses a `-----BEGIN PRIVATE KEY-----` document (what `openssl genpkey` writes).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SigningKeyError> {
        // SecretDocument zeroizes the decoded DER when dropped.
        let (label, der) = p384::pkcs8::SecretDocument::from_pem(pem.trim())
            .map_err(|_| SigningKeyError::NotPem)?;
        if label != "PRIVATE KEY" {
            return Err(SigningKeyError::NotPem);
        }
        Self::from_pkcs8_der(der.as_bytes())
    }

    pub fn curve(&self) -> Curve {
        self.0.curve()
    }

    /// The DER ECDSA signature of `root`, used directly as the message digest.
    pub fn sign_root(&self, root: &Hash32) -> Vec<u8> {
        // AWS-LC fails only if its random generator or an allocation does.
        self.1
            .sign_root(self.curve(), root)
            .unwrap_or_else(|| self.sign_root_rfc6979(root))
    }

    /// ECDSA over `message` hashed with the curve's own hash (SHA-256 on P-256, SHA-384 on
    /// P-384), as the fixed-size `r || s` that COSE's ES256 and ES384 require (RFC 9053
    /// §2.1), not DER.
    pub fn sign_message(&self, message: &[u8]) -> Vec<u8> {
        self.1
            .sign_message(message)
            .unwrap_or_else(|| self.sign_message_rfc6979(message))
    }

    /// RustCrypto's deterministic signer (RFC 6979), which needs no randomness and cannot
    /// fail: the fallback of [`Self::sign_root`].
    fn sign_root_rfc6979(&self, root: &Hash32) -> Vec<u8> {
        // The `Result` exists because the trait allows fallible (e.g. hardware) signers.
        const INFALLIBLE: &str = "deterministic prehash signing does not fail";
        match &self.0 {
            SigningKeyInner::P256(key) => {
                let sig: p256::ecdsa::DerSignature =
                    key.sign_prehash(root.as_bytes()).expect(INFALLIBLE);
                sig.as_bytes().to_vec()
            }
            SigningKeyInner::P384(key) => {
                let sig: p384::ecdsa::DerSignature =
                    key.sign_prehash(root.as_bytes()).expect(INFALLIBLE);
                sig.as_bytes().to_vec()
            }
        }
    }

    /// The fallback of [`Self::sign_message`] (RFC 6979).
    fn sign_message_rfc6979(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        match &self.0 {
            SigningKeyInner::P256(key) => {
                let sig: p256::ecdsa::Signature = key.sign(message);
                sig.to_bytes().to_vec()
            }
            SigningKeyInner::P384(key) => {
                let sig: p384::ecdsa::Signature = key.sign(message);
                sig.to_bytes().to_vec()
            }
        }
    }

    /// A 32-byte secret bound to this key and `label`: HMAC-SHA256 keyed with the private
    /// scalar. Every holder of the key derives the same value (the service key's holders, the
    /// nodes, derive the checkpoint signing key this way), and it changes with the key.
    pub fn derive_secret(&self, label: &[u8]) -> [u8; 32] {
        let scalar = match &self.0 {
            SigningKeyInner::P256(key) => key.to_bytes().to_vec(),
            SigningKeyInner::P384(key) => key.to_bytes().to_vec(),
        };
        crate::evidence::hmac(&scalar, label)
    }

    /// The public key as DER SubjectPublicKeyInfo (named curve, uncompressed point).
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        self.public_key().spki_der()
    }

    /// `SHA256(SPKI DER)`: the receipt's `nodeId`.
    pub fn node_id(&self) -> Hash32 {
        self.public_key().node_id()
    }

    pub fn public_key(&self) -> EcPublicKey {
        match &self.0 {
            SigningKeyInner::P256(key) => EcPublicKey::P256(*key.verifying_key()),
            SigningKeyInner::P384(key) => EcPublicKey::P384(*key.verifying_key()),
        }
    }
}

// Only public facts: a signing key must never end up in a log.
impl fmt::Debug for EcSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EcSigningKey({:?}, node_id={})",
            self.curve(),
            self.node_id()
        )
    }
}

/// An ECDSA public key on one of the curves CCF uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcPublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl EcPublicKey {
    /// Parses a DER SubjectPublicKeyInfo, telling "not EC at all" (e.g. RSA, which the SDK
    /// rejects as well) apart from "EC on a curve we do not implement".
    pub fn from_spki_der(der: &[u8]) -> Result<Self, SignatureError> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|_| SignatureError::MalformedPublicKey)?;
        if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(SignatureError::NotEcKey);
        }
        match spki.algorithm.parameters_oid() {
            Ok(SECP384R1) => {
                p384::ecdsa::VerifyingKey::from_public_key_der(der).map(EcPublicKey::P384)
            }
            Ok(SECP256R1) => {
                p256::ecdsa::VerifyingKey::from_public_key_der(der).map(EcPublicKey::P256)
            }
            _ => return Err(SignatureError::UnsupportedCurve),
        }
        .map_err(|_| SignatureError::MalformedPublicKey)
    }

    pub fn curve(&self) -> Curve {
        match self {
            EcPublicKey::P256(_) => Curve::P256,
            EcPublicKey::P384(_) => Curve::P384,
        }
    }

    /// The canonical DER SubjectPublicKeyInfo, re-encoded from the key (as the SDK does before
    /// hashing it into the node id), not copied from wherever the key came from.
    pub fn spki_der(&self) -> Vec<u8> {
        const ENCODABLE: &str = "a valid EC public key always encodes as SPKI";
        match self {
            EcPublicKey::P256(key) => key.to_public_key_der().expect(ENCODABLE).into_vec(),
            EcPublicKey::P384(key) => key.to_public_key_der().expect(ENCODABLE).into_vec(),
        }
    }

    pub fn node_id(&self) -> Hash32 {
        sha256(&self.spki_der())
    }

    /// Verifies a DER ECDSA signature over an already computed digest of any length (it is
    /// truncated to the curve order's size, or read as a smaller integer, per SEC 1).
    ///
    /// The signature is parsed by RustCrypto (to tell a malformed one from a wrong one) and
    /// checked by AWS-LC, several times faster: a follower checks every root signature its
    /// primary sends, and RustCrypto's P-384 arithmetic was half of a follower's writer thread.
    pub fn verify_prehash(
        &self,
        digest: &[u8],
        signature_der: &[u8],
    ) -> Result<(), SignatureError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1};
        let malformed = |_| SignatureError::MalformedSignature;
        let (algorithm, hash) = match self {
            EcPublicKey::P256(_) => {
                p256::ecdsa::Signature::from_der(signature_der).map_err(malformed)?;
                (&ECDSA_P256_SHA256_ASN1, &aws_lc_rs::digest::SHA256)
            }
            EcPublicKey::P384(_) => {
                p384::ecdsa::Signature::from_der(signature_der).map_err(malformed)?;
                (&ECDSA_P384_SHA384_ASN1, &aws_lc_rs::digest::SHA384)
            }
        };
        // AWS-LC takes a digest of exactly the curve's hash length, which for P-256 and P-384
        // is also the order's byte length (both are whole bytes). SEC 1 §4.1.3 step 5 reads a
        // longer digest as its leftmost order-length bits, and a shorter one as the integer
        // it is, which leading zero bytes do not change.
        let n = hash.output_len();
        let mut sized = [0u8; 48];
        let sized = &mut sized[..n];
        if digest.len() >= n {
            sized.copy_from_slice(&digest[..n]);
        } else {
            sized[n - digest.len()..].copy_from_slice(digest);
        }
        let digest = aws_lc_rs::digest::Digest::import_less_safe(sized, hash)
            .map_err(|_| SignatureError::Invalid)?;
        aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, self.uncompressed_point())
            .verify_digest(&digest, signature_der)
            .map_err(|_| SignatureError::Invalid)
    }

    /// Verifies a fixed-size `r || s` signature over `message` hashed with the curve's own
    /// hash: the counterpart of [`EcSigningKey::sign_message`]. Checked by AWS-LC, as
    /// [`EcPublicKey::verify_prehash`].
    pub fn verify_message(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED};
        let malformed = |_| SignatureError::MalformedSignature;
        let algorithm = match self {
            EcPublicKey::P256(_) => {
                p256::ecdsa::Signature::from_slice(signature).map_err(malformed)?;
                &ECDSA_P256_SHA256_FIXED
            }
            EcPublicKey::P384(_) => {
                p384::ecdsa::Signature::from_slice(signature).map_err(malformed)?;
                &ECDSA_P384_SHA384_FIXED
            }
        };
        aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, self.uncompressed_point())
            .verify(message, signature)
            .map_err(|_| SignatureError::Invalid)
    }

    /// The SEC 1 uncompressed encoding of the point, which AWS-LC takes as a public key.
    fn uncompressed_point(&self) -> Vec<u8> {
        match self {
            EcPublicKey::P256(key) => key.to_sec1_point(false).as_bytes().to_vec(),
            EcPublicKey::P384(key) => key.to_sec1_point(false).as_bytes().to_vec(),
        }
    }
}

/// Checks a node's signature over a Merkle root: `spki_der` is the node key (P-256 or P-384).
pub fn verify_root_signature(
    spki_der: &[u8],
    root: &Hash32,
    signature_der: &[u8],
) -> Result<(), SignatureError> {
    EcPublicKey::from_spki_der(spki_der)?.verify_prehash(root.as_bytes(), signature_der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256;
    use p384::ecdsa::signature::Signer;

    // Generated once with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:<curve>`.
    const P384_PEM: &str = include_str!("../tests/vectors/test-node-p384.key.pem");
    const P256_PEM: &str = include_str!("../tests/vectors/test-node-p256.key.pem");

    #[test]
    fn sign_and_verify_on_both_curves() {
        let root = sha256(b"root");
        for (pem, curve) in [(P384_PEM, Curve::P384), (P256_PEM, Curve::P256)] {
            let key = EcSigningKey::from_pkcs8_pem(pem).unwrap();
            assert_eq!(key.curve(), curve);
            let sig = key.sign_root(&root);
            // Random nonces: a second signature of the same root differs and verifies too.
            let again = key.sign_root(&root);
            assert_ne!(sig, again);
            verify_root_signature(&key.public_key_spki_der(), &root, &again).unwrap();
            let spki = key.public_key_spki_der();
            assert_eq!(key.node_id(), sha256(&spki));
            verify_root_signature(&spki, &root, &sig).unwrap();
            assert_eq!(
                verify_root_signature(&spki, &sha256(b"other"), &sig),
                Err(SignatureError::Invalid)
            );
            let mut bad = sig.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(verify_root_signature(&spki, &root, &bad).is_err());
            assert_eq!(
                verify_root_signature(&spki, &root, &sig[..sig.len() - 1]),
                Err(SignatureError::MalformedSignature)
            );
        }
    }

    /// Both signers (AWS-LC and the RFC 6979 fallback) make signatures that verify as ECDSA
    /// over the 32-byte root, also for roots with leading zero bytes (the widened P-384
    /// digest) and for messages; only the fallback is deterministic.
    #[test]
    fn both_signers_agree_on_the_construction() {
        let mut small = [0u8; 32];
        small[31] = 1;
        let roots = [
            sha256(b"a"),
            sha256(b"b"),
            Hash32(small),
            Hash32([0xff; 32]),
        ];
        for pem in [P384_PEM, P256_PEM] {
            let key = EcSigningKey::from_pkcs8_pem(pem).unwrap();
            let spki = key.public_key_spki_der();
            let public = key.public_key();
            for root in &roots {
                for sig in [key.sign_root(root), key.sign_root_rfc6979(root)] {
                    verify_root_signature(&spki, root, &sig).unwrap();
                }
                assert_eq!(key.sign_root_rfc6979(root), key.sign_root_rfc6979(root));
                for sig in [
                    key.sign_message(root.as_bytes()),
                    key.sign_message_rfc6979(root.as_bytes()),
                ] {
                    public.verify_message(root.as_bytes(), &sig).unwrap();
                    assert!(public.verify_message(b"other", &sig).is_err());
                }
            }
        }
    }

    proptest::proptest! {
        /// AWS-LC's verification (what the ledger uses) agrees with RustCrypto's
        /// `verify_prehash` (an independent implementation of SEC 1) on digests of every
        /// length, shorter than the order (read as a smaller integer) and longer (truncated),
        /// for signatures made by RustCrypto, and for the same digest with one byte changed.
        #[test]
        fn aws_lc_verification_agrees_with_rustcrypto(
            digest in proptest::collection::vec(proptest::num::u8::ANY, 24..=64),
            flip in proptest::num::usize::ANY,
        ) {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            let mut flipped = digest.clone();
            let i = flip % flipped.len();
            flipped[i] ^= 0x5a;
            for pem in [P384_PEM, P256_PEM] {
                let key = EcSigningKey::from_pkcs8_pem(pem).unwrap();
                let public = key.public_key();
                // The signature, and whether RustCrypto accepts it over the changed digest.
                let (sig, rustcrypto_flipped) = match &key.0 {
                    SigningKeyInner::P256(k) => {
                        let sig: p256::ecdsa::Signature = k.sign_prehash(&digest).unwrap();
                        let flipped_ok = k.verifying_key().verify_prehash(&flipped, &sig).is_ok();
                        (sig.to_der().as_bytes().to_vec(), flipped_ok)
                    }
                    SigningKeyInner::P384(k) => {
                        let sig: p384::ecdsa::Signature = k.sign_prehash(&digest).unwrap();
                        let flipped_ok = k.verifying_key().verify_prehash(&flipped, &sig).is_ok();
                        (sig.to_der().as_bytes().to_vec(), flipped_ok)
                    }
                };
                proptest::prop_assert!(public.verify_prehash(&digest, &sig).is_ok());
                proptest::prop_assert_eq!(
                    public.verify_prehash(&flipped, &sig).is_ok(),
                    rustcrypto_flipped
                );
            }
        }
    }

    /// The construction matters: signing the root with `Signer` (which hashes it again) must
    /// not verify, which is also what the SDK rejects.
    #[test]
    fn double_hashing_does_not_verify() {
        let root = sha256(b"root");
        let raw = p384::ecdsa::SigningKey::from_pkcs8_pem(P384_PEM).unwrap();
        let hashed_again: p384::ecdsa::DerSignature = raw.sign(root.as_bytes());
        let key = EcSigningKey::from_pkcs8_pem(P384_PEM).unwrap();
        assert_eq!(
            verify_root_signature(&key.public_key_spki_der(), &root, hashed_again.as_bytes()),
            Err(SignatureError::Invalid)
        );
    }

    /// The SDK vector's node signature (acl-api.md §5.6) verifies over the vector's root.
    #[test]
    fn sdk_vector_signature() {
        use base64::Engine as _;
        let root =
            Hash32::from_hex("f7b9072e3235ea1f5fe150f7153527bd670009ebbc48a37e4fd6c4428f6fa148")
                .unwrap();
        let response: serde_json::Value =
            serde_json::from_str(include_str!("../tests/vectors/sdk-receipt-3-response.json"))
                .unwrap();
        let cert =
            crate::x509::Cert::from_pem(response["receipt"]["cert"].as_str().unwrap()).unwrap();
        let sig = base64::engine::general_purpose::STANDARD
            .decode(response["receipt"]["signature"].as_str().unwrap())
            .unwrap();
        let key = cert.public_key().unwrap();
        assert_eq!(key.curve(), Curve::P384);
        assert_eq!(
            key.node_id().to_hex(),
            "0db9a22e9301d1167a2a81596fa234642ad24bc742451a415b8d653af056795c"
        );
        verify_root_signature(&key.spki_der(), &root, &sig).unwrap();
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        assert_eq!(
            EcSigningKey::from_pkcs8_der(b"junk").err(),
            Some(SigningKeyError::UnsupportedKey)
        );
        assert_eq!(
            EcSigningKey::from_pkcs8_pem("junk").err(),
            Some(SigningKeyError::NotPem)
        );
        let public_pem = EcSigningKey::from_pkcs8_pem(P256_PEM).unwrap().public_key();
        let spki = public_pem.spki_der();
        assert_eq!(EcPublicKey::from_spki_der(&spki).unwrap(), public_pem);
        assert_eq!(
            EcPublicKey::from_spki_der(&spki[1..]),
            Err(SignatureError::MalformedPublicKey)
        );
        // An Ed25519 SPKI (RFC 8410 example key) is not EC.
        let ed25519 = hex::decode("302a300506032b657003210019bf44096984cdfe8541bac167dc3b96c85086aa30b6b6cb0c5c38ad703166e1").unwrap();
        assert_eq!(
            EcPublicKey::from_spki_der(&ed25519),
            Err(SignatureError::NotEcKey)
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = EcSigningKey::from_pkcs8_pem(P384_PEM).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.starts_with("EcSigningKey(P384, node_id="), "{shown}");
        let SigningKeyInner::P384(inner) = &key.0 else {
            unreachable!()
        };
        let secret = hex::encode(inner.to_bytes());
        assert!(!shown.contains(&secret[..16]));
    }
}
