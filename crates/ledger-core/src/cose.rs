//! COSE root signatures and COSE receipts, byte for byte as CCF 7 makes them.
//!
//! A **root signature** (CCF's `ccf-cose-root-signature`, `cddl/ccf-merkle-tree-cose-signature.cddl`)
//! is a tagged COSE_Sign1 whose payload is *detached*: the 32-byte Merkle root it signs is not
//! in it, the verifier recomputes it. It is signed by the **service identity key** (not a node
//! key), so it verifies against the service certificate alone, with no node certificate and no
//! endorsement chain. Its protected header is, in this order (RFC 8949 deterministic order):
//!
//! | label | value |
//! |---|---|
//! | 1 (alg) | -35 (ES384) for a P-384 service key, -7 (ES256) for P-256 |
//! | 4 (kid) | the lowercase hex SHA-256 of the service public key's DER SubjectPublicKeyInfo, as a byte string |
//! | 15 (CWT claims) | `{1 (iss): text, 2 (sub): text, 6 (iat): seconds since the epoch}` |
//! | 395 (vds) | 2, CCF_LEDGER_SHA256 |
//! | "ccf.v1" | `{"txid": "<view>.<seqno>"}`, the signature transaction's own id |
//!
//! and its unprotected header is an empty map. The signature is ECDSA with the curve's hash over
//! COSE's `Sig_structure` `["Signature1", protected, h'', root]`, as fixed-size `r || s`.
//!
//! A **receipt** (`cddl/ccf-receipt.cddl`, draft-birkholz-cose-receipts-ccf-profile) is that
//! same root signature, unchanged but for the unprotected header, which gains
//! `{396: {-1: [bstr .cbor {1: [write_set_digest, commit_evidence, claims_digest], 2: [[left,
//! hash], …]}]}}`: the leaf's three components and its path to the root. Because the signature
//! is stored in the signature transaction, a receipt is the same bytes on every request.
//!
//! CCF's tree has no domain separation, so a root vouches for a tree *size* only through the
//! signed txid; [`verify_receipt`] therefore checks that the path has exactly the shape the
//! transaction's seqno and the signed size imply, which CCF's own verifier does not.

use crate::evidence::{CommitEvidence, leaf_hash};
use crate::hash::{Hash32, sha256};
use crate::merkle::{self, ProofStep};
use crate::signing::{Curve, EcPublicKey, EcSigningKey, SignatureError};
use crate::txid::TxId;
use coset::cbor::value::Value;
use coset::cwt::{ClaimsSet, ClaimsSetBuilder, Timestamp};
use coset::iana::{self, EnumI64};
use coset::{
    AsCborValue, CborSerializable, CoseSign1, CoseSign1Builder, Header, HeaderBuilder, Label,
    TaggedCborSerializable, sig_structure_data,
};

/// COSE Receipts' "verifiable data structure" header (draft-ietf-cose-merkle-tree-proofs).
const LABEL_VDS: i64 = 395;
/// COSE Receipts' "verifiable data proofs" header, in the unprotected header of a receipt.
const LABEL_VDP: i64 = 396;
/// The inclusion proofs inside the verifiable data proofs map.
const LABEL_INCLUSION_PROOFS: i64 = -1;
/// vds value of CCF's ledger tree (draft-birkholz-cose-receipts-ccf-profile).
pub const VDS_CCF_LEDGER_SHA256: i64 = 2;
/// The CWT subject of cledger's root signatures (the value of CCF's sample configurations).
pub const ROOT_SIGNATURE_SUBJECT: &str = "ledger.signature";
const LABEL_CCF_V1: &str = "ccf.v1";
const CCF_V1_TXID: &str = "txid";
const PROOF_LEAF: i64 = 1;
const PROOF_PATH: i64 = 2;
/// More than any real path (a tree of 2^64 leaves has 64 levels); refuses absurd input early.
const MAX_PATH_LEN: usize = 64;
/// CCF bounds the commit evidence of a leaf to 1,024 bytes (`ccf-receipt.cddl`).
const MAX_EVIDENCE_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoseError {
    #[error("not a tagged COSE_Sign1 message: {0}")]
    NotCoseSign1(String),
    #[error(
        "the COSE_Sign1 carries its payload; a root signature's payload (the root) is detached"
    )]
    AttachedPayload,
    #[error("protected header: {0}")]
    ProtectedHeader(String),
    #[error("the signing key id (kid) is not the given service key's: expected {expected}")]
    WrongKey { expected: String },
    #[error(
        "the algorithm {found} does not match the service key on {curve:?} (expected {expected})"
    )]
    WrongAlgorithm {
        found: String,
        expected: i64,
        curve: Curve,
    },
    #[error("unprotected header: {0}")]
    UnprotectedHeader(String),
    #[error("inclusion proof: {0}")]
    InclusionProof(String),
    #[error("the inclusion proof does not fit the signed tree: {0}")]
    ProofShape(merkle::VerifyError),
    #[error("the signature does not verify over the root the proof leads to")]
    BadSignature,
    #[error("the signature is not a {0}-byte r||s value")]
    MalformedSignature(usize),
}

/// The claims a root signature's protected header carries besides the key and algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSignatureClaims {
    /// The signature transaction's own id (`ccf.v1.txid`); its seqno is the signed tree size.
    pub txid: TxId,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    /// Seconds since the Unix epoch when the root was signed.
    pub issued_at: i64,
}

/// The service identity key, signing roots.
pub struct ServiceSigner {
    key: EcSigningKey,
    kid: Vec<u8>,
}

impl ServiceSigner {
    pub fn new(key: EcSigningKey) -> ServiceSigner {
        let kid = key_id(&key.public_key());
        ServiceSigner { key, kid }
    }

    pub fn public_key(&self) -> EcPublicKey {
        self.key.public_key()
    }

    /// The root signature of the signature transaction `txid`, which signs `root` (the tree
    /// of `txid.seqno()` leaves) at `issued_at` (seconds since the epoch). `issuer` is the
    /// CWT `iss` claim (omitted when `None`); the subject is [`ROOT_SIGNATURE_SUBJECT`].
    pub fn sign_root(
        &self,
        root: &Hash32,
        txid: TxId,
        issuer: Option<&str>,
        issued_at: i64,
    ) -> Vec<u8> {
        let mut claims = ClaimsSetBuilder::new();
        if let Some(issuer) = issuer {
            claims = claims.issuer(issuer.to_owned());
        }
        let claims = claims
            .subject(ROOT_SIGNATURE_SUBJECT.to_owned())
            .issued_at(Timestamp::WholeSeconds(issued_at))
            .build();
        let protected = HeaderBuilder::new()
            .algorithm(algorithm(self.key.curve()))
            .key_id(self.kid.clone())
            .value(
                iana::HeaderParameter::CwtClaims.to_i64(),
                claims
                    .to_cbor_value()
                    .expect("a claims set of text and integers always encodes"),
            )
            .value(LABEL_VDS, Value::from(VDS_CCF_LEDGER_SHA256))
            .text_value(
                LABEL_CCF_V1.to_owned(),
                Value::Map(vec![(
                    Value::from(CCF_V1_TXID),
                    Value::from(txid.to_string()),
                )]),
            )
            .build();
        CoseSign1Builder::new()
            .protected(protected)
            .create_detached_signature(root.as_bytes(), &[], |tbs| self.key.sign_message(tbs))
            .build()
            .to_tagged_vec()
            .expect("a COSE_Sign1 of known fields always encodes")
    }
}

impl ServiceSigner {
    /// A statement by the service key about `payload` (of media type `content_type`): a
    /// tagged COSE_Sign1 with the payload attached and the same `alg` and `kid` as root
    /// signatures. It vouches, for example, for the key that signs the ledger's checkpoints.
    pub fn endorse(&self, payload: &[u8], content_type: &str) -> Vec<u8> {
        let protected = HeaderBuilder::new()
            .algorithm(algorithm(self.key.curve()))
            .key_id(self.kid.clone())
            .content_type(content_type.to_owned())
            .build();
        CoseSign1Builder::new()
            .protected(protected)
            .payload(payload.to_vec())
            .create_signature(&[], |tbs| self.key.sign_message(tbs))
            .build()
            .to_tagged_vec()
            .expect("a COSE_Sign1 of known fields always encodes")
    }
}

/// Checks a statement made with [`ServiceSigner::endorse`] and returns its payload if it has
/// media type `content_type`.
pub fn verify_endorsement(
    endorsement: &[u8],
    content_type: &str,
    service_key: &EcPublicKey,
) -> Result<Vec<u8>, CoseError> {
    let sign1 = CoseSign1::from_tagged_slice(endorsement)
        .map_err(|e| CoseError::NotCoseSign1(e.to_string()))?;
    check_signer(&sign1, service_key)?;
    let header = &sign1.protected.header;
    if header.content_type != Some(coset::ContentType::Text(content_type.to_owned())) {
        return Err(CoseError::ProtectedHeader(format!(
            "the content type is not {content_type}"
        )));
    }
    let payload = sign1
        .payload
        .clone()
        .ok_or_else(|| CoseError::ProtectedHeader("the endorsement has no payload".into()))?;
    let length = signature_len(service_key.curve());
    if sign1.signature.len() != length {
        return Err(CoseError::MalformedSignature(length));
    }
    sign1
        .verify_signature(&[], |sig, tbs| service_key.verify_message(tbs, sig))
        .map_err(|_| CoseError::BadSignature)?;
    Ok(payload)
}

/// The `kid` of a service key: its SHA-256 fingerprint in lowercase hex, as bytes (CCF's
/// `key_fingerprint_from_key`).
pub fn key_id(key: &EcPublicKey) -> Vec<u8> {
    sha256(&key.spki_der()).to_hex().into_bytes()
}

fn algorithm(curve: Curve) -> iana::Algorithm {
    match curve {
        Curve::P256 => iana::Algorithm::ES256,
        Curve::P384 => iana::Algorithm::ES384,
    }
}

fn signature_len(curve: Curve) -> usize {
    match curve {
        Curve::P256 => 64,
        Curve::P384 => 96,
    }
}

/// Checks that `root_signature` is a root signature by `service_key` over `root`, and returns
/// its claims. Everything a receipt's verifier needs from the signature itself.
pub fn verify_root_signature(
    root_signature: &[u8],
    root: &Hash32,
    service_key: &EcPublicKey,
) -> Result<RootSignatureClaims, CoseError> {
    let sign1 = parse(root_signature)?;
    check_signature(&sign1, root, service_key)
}

/// The claims of a root signature, **without** checking its signature: for showing what a
/// stored signature says, never for trusting it.
pub fn read_claims(root_signature: &[u8]) -> Result<RootSignatureClaims, CoseError> {
    claims(&parse(root_signature)?.protected.header)
}

fn parse(bytes: &[u8]) -> Result<CoseSign1, CoseError> {
    let sign1 =
        CoseSign1::from_tagged_slice(bytes).map_err(|e| CoseError::NotCoseSign1(e.to_string()))?;
    if sign1.payload.is_some() {
        return Err(CoseError::AttachedPayload);
    }
    // One message, one encoding: what does not re-encode to the same bytes (an `undefined`
    // payload, a non-minimal length, an indefinite-length item) is refused, so a receipt
    // cannot be altered without its verification failing.
    let canonical = sign1
        .clone()
        .to_tagged_vec()
        .map_err(|e| CoseError::NotCoseSign1(e.to_string()))?;
    if canonical != bytes {
        return Err(CoseError::NotCoseSign1(
            "not in the deterministic CBOR encoding (RFC 8949 §4.2)".into(),
        ));
    }
    Ok(sign1)
}

/// The protected header names `service_key`: its algorithm and its key id.
fn check_signer(sign1: &CoseSign1, service_key: &EcPublicKey) -> Result<(), CoseError> {
    let header = &sign1.protected.header;
    let curve = service_key.curve();
    let expected_alg = algorithm(curve);
    if header.alg != Some(coset::RegisteredLabelWithPrivate::Assigned(expected_alg)) {
        return Err(CoseError::WrongAlgorithm {
            found: format!("{:?}", header.alg),
            expected: expected_alg.to_i64(),
            curve,
        });
    }
    let kid = key_id(service_key);
    if header.key_id != kid {
        return Err(CoseError::WrongKey {
            expected: String::from_utf8_lossy(&kid).into_owned(),
        });
    }
    Ok(())
}

fn check_signature(
    sign1: &CoseSign1,
    root: &Hash32,
    service_key: &EcPublicKey,
) -> Result<RootSignatureClaims, CoseError> {
    check_signer(sign1, service_key)?;
    let claims = claims(&sign1.protected.header)?;
    let length = signature_len(service_key.curve());
    if sign1.signature.len() != length {
        return Err(CoseError::MalformedSignature(length));
    }
    let tbs = sig_structure_data(
        coset::SignatureContext::CoseSign1,
        sign1.protected.clone(),
        None,
        &[],
        root.as_bytes(),
    );
    service_key
        .verify_message(&tbs, &sign1.signature)
        .map_err(|e| match e {
            SignatureError::MalformedSignature => CoseError::MalformedSignature(length),
            _ => CoseError::BadSignature,
        })?;
    Ok(claims)
}

fn header_value<'h>(header: &'h Header, label: &Label) -> Option<&'h Value> {
    header
        .rest
        .iter()
        .find(|(l, _)| l == label)
        .map(|(_, value)| value)
}

fn claims(header: &Header) -> Result<RootSignatureClaims, CoseError> {
    let bad = |reason: &str| CoseError::ProtectedHeader(reason.to_owned());
    match header_value(header, &Label::Int(LABEL_VDS)) {
        Some(value) if value.as_integer() == Some(VDS_CCF_LEDGER_SHA256.into()) => {}
        Some(_) => return Err(bad("vds (395) is not 2 (CCF_LEDGER_SHA256)")),
        None => return Err(bad("vds (395) is missing")),
    }
    let txid = header_value(header, &Label::Text(LABEL_CCF_V1.to_owned()))
        .and_then(Value::as_map)
        .and_then(|map| {
            map.iter()
                .find(|(k, _)| k.as_text() == Some(CCF_V1_TXID))
                .and_then(|(_, v)| v.as_text())
        })
        .ok_or_else(|| bad("\"ccf.v1\" has no text \"txid\""))?;
    let txid = TxId::parse(txid).map_err(|_| bad("\"ccf.v1\".\"txid\" is not a transaction id"))?;
    let cwt = header_value(
        header,
        &Label::Int(iana::HeaderParameter::CwtClaims.to_i64()),
    )
    .ok_or_else(|| bad("the CWT claims (15) are missing"))?;
    let cwt = ClaimsSet::from_cbor_value(cwt.clone())
        .map_err(|e| bad(&format!("the CWT claims (15) are malformed: {e}")))?;
    let issued_at = match cwt.issued_at {
        Some(Timestamp::WholeSeconds(secs)) => secs,
        _ => return Err(bad("the CWT claims have no whole-second iat (6)")),
    };
    Ok(RootSignatureClaims {
        txid,
        issuer: cwt.issuer,
        subject: cwt.subject,
        issued_at,
    })
}

/// What a receipt proves about its transaction's leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptLeaf {
    /// SHA-256 of the transaction's serialised entry (CCF's write set digest).
    pub write_set_digest: Hash32,
    pub commit_evidence: CommitEvidence,
    pub claims_digest: Hash32,
}

impl ReceiptLeaf {
    pub fn leaf(&self) -> Hash32 {
        leaf_hash(
            &self.write_set_digest,
            &self.commit_evidence.digest(),
            &self.claims_digest,
        )
    }
}

/// The receipt of the transaction whose leaf is `leaf`, from the stored root signature of a
/// signature transaction after it and the leaf's path to that signature's root.
pub fn build_receipt(
    root_signature: &[u8],
    leaf: &ReceiptLeaf,
    path: &[ProofStep],
) -> Result<Vec<u8>, CoseError> {
    let mut sign1 = parse(root_signature)?;
    let proof = Value::Map(vec![
        (
            Value::from(PROOF_LEAF),
            Value::Array(vec![
                Value::Bytes(leaf.write_set_digest.0.to_vec()),
                Value::Text(leaf.commit_evidence.as_str().to_owned()),
                Value::Bytes(leaf.claims_digest.0.to_vec()),
            ]),
        ),
        (
            Value::from(PROOF_PATH),
            Value::Array(
                path.iter()
                    .map(|step| {
                        Value::Array(vec![
                            Value::Bool(matches!(step, ProofStep::Left(_))),
                            Value::Bytes(step.hash().0.to_vec()),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]);
    let mut proof_bytes = Vec::new();
    coset::cbor::ser::into_writer(&proof, &mut proof_bytes)
        .expect("writing CBOR to a Vec does not fail");
    sign1.unprotected = HeaderBuilder::new()
        .value(
            LABEL_VDP,
            Value::Map(vec![(
                Value::from(LABEL_INCLUSION_PROOFS),
                Value::Array(vec![Value::Bytes(proof_bytes)]),
            )]),
        )
        .build();
    sign1
        .to_tagged_vec()
        .map_err(|e| CoseError::NotCoseSign1(e.to_string()))
}

/// What a verified receipt established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCoseReceipt {
    /// The transaction the receipt is for (named by its commit evidence).
    pub txid: TxId,
    pub leaf: ReceiptLeaf,
    pub root: Hash32,
    /// The root signature's claims; `claims.txid` is the signature transaction.
    pub signature: RootSignatureClaims,
}

/// Verifies a receipt against the service public key: every inclusion proof it carries must
/// lead, with exactly the shape its transaction's position and the signed tree size imply, to
/// a root the service key signed.
pub fn verify_receipt(
    receipt: &[u8],
    service_key: &EcPublicKey,
) -> Result<VerifiedCoseReceipt, CoseError> {
    let sign1 = parse(receipt)?;
    let proofs = inclusion_proofs(&sign1.unprotected)?;
    let mut verified = None;
    for proof in proofs {
        let (leaf, path) = decode_inclusion_proof(proof)?;
        let txid = leaf.commit_evidence.txid();
        let leaf_hash = leaf.leaf();
        let root = merkle::fold_path(leaf_hash, &path);
        let signature = check_signature(&sign1, &root, service_key)?;
        // The signed size is the signature transaction's seqno (leaves 0..seqno).
        merkle::verify_inclusion(leaf_hash, txid.seqno(), signature.txid.seqno(), &path, root)
            .map_err(CoseError::ProofShape)?;
        verified.get_or_insert(VerifiedCoseReceipt {
            txid,
            leaf,
            root,
            signature,
        });
    }
    verified.ok_or_else(|| CoseError::UnprotectedHeader("no inclusion proof".into()))
}

fn inclusion_proofs(unprotected: &Header) -> Result<Vec<&[u8]>, CoseError> {
    let bad = |reason: &str| CoseError::UnprotectedHeader(reason.to_owned());
    let vdp = header_value(unprotected, &Label::Int(LABEL_VDP))
        .and_then(Value::as_map)
        .ok_or_else(|| bad("no verifiable data proofs map (396)"))?;
    let proofs = vdp
        .iter()
        .find(|(k, _)| k.as_integer() == Some(LABEL_INCLUSION_PROOFS.into()))
        .and_then(|(_, v)| v.as_array())
        .ok_or_else(|| bad("no inclusion proofs array (396 → -1)"))?;
    if proofs.is_empty() {
        return Err(bad("the inclusion proofs array is empty"));
    }
    proofs
        .iter()
        .map(|p| {
            p.as_bytes()
                .map(Vec::as_slice)
                .ok_or_else(|| bad("an inclusion proof is not a byte string"))
        })
        .collect()
}

fn decode_inclusion_proof(bytes: &[u8]) -> Result<(ReceiptLeaf, Vec<ProofStep>), CoseError> {
    let bad = |reason: &str| CoseError::InclusionProof(reason.to_owned());
    let value = Value::from_slice(bytes).map_err(|_| bad("not CBOR"))?;
    if value.clone().to_vec().ok().as_deref() != Some(bytes) {
        return Err(bad("not in the deterministic CBOR encoding"));
    }
    let map = value.as_map().ok_or_else(|| bad("not a map"))?;
    let field = |label: i64| {
        map.iter()
            .find(|(k, _)| k.as_integer() == Some(label.into()))
            .map(|(_, v)| v)
    };
    let leaf = field(PROOF_LEAF)
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no leaf array (1)"))?;
    let [write_set_digest, evidence, claims_digest] = leaf.as_slice() else {
        return Err(bad(
            "the leaf is not [write set digest, commit evidence, claims digest]",
        ));
    };
    let hash = |v: &Value, what: &str| {
        v.as_bytes()
            .and_then(|b| Hash32::from_slice(b))
            .ok_or_else(|| bad(&format!("the {what} is not 32 bytes")))
    };
    let evidence = evidence
        .as_text()
        .filter(|e| e.len() <= MAX_EVIDENCE_LEN)
        .ok_or_else(|| bad("the commit evidence is not text of at most 1024 bytes"))?;
    let leaf = ReceiptLeaf {
        write_set_digest: hash(write_set_digest, "write set digest")?,
        commit_evidence: CommitEvidence::parse(evidence)
            .map_err(|e| CoseError::InclusionProof(e.to_string()))?,
        claims_digest: hash(claims_digest, "claims digest")?,
    };
    let steps = field(PROOF_PATH)
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no path array (2)"))?;
    if steps.len() > MAX_PATH_LEN {
        return Err(bad("the path is longer than 64 steps"));
    }
    let path = steps
        .iter()
        .map(|step| match step.as_array().map(Vec::as_slice) {
            Some([Value::Bool(left), sibling]) => {
                let sibling = hash(sibling, "path hash")?;
                Ok(if *left {
                    ProofStep::Left(sibling)
                } else {
                    ProofStep::Right(sibling)
                })
            }
            _ => Err(bad("a path step is not [left: bool, hash: bytes]")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((leaf, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::CommitSecret;
    use crate::merkle::MemoryTree;

    const P384_PEM: &str = include_str!("../tests/vectors/test-node-p384.key.pem");
    const P256_PEM: &str = include_str!("../tests/vectors/test-node-p256.key.pem");

    fn signer(pem: &str) -> ServiceSigner {
        ServiceSigner::new(EcSigningKey::from_pkcs8_pem(pem).unwrap())
    }

    /// A tree of `size` leaves whose leaf `seqno` is a real transaction's, with the receipt of
    /// that transaction against a root signature at `size`.
    fn receipt_at(signer: &ServiceSigner, seqno: u64, size: u64) -> (Vec<u8>, ReceiptLeaf) {
        let secret = CommitSecret::derive(&[7; 32]);
        let leaf = ReceiptLeaf {
            write_set_digest: sha256(b"entry"),
            commit_evidence: secret.evidence(TxId::new(2, seqno).unwrap()),
            claims_digest: sha256(b"claims"),
        };
        let mut tree = MemoryTree::new();
        for i in 0..size {
            tree.push(if i == seqno {
                leaf.leaf()
            } else {
                sha256(&i.to_le_bytes())
            });
        }
        let sig_txid = TxId::new(2, size).unwrap();
        let root = tree.root().unwrap();
        let root_signature =
            signer.sign_root(&root, sig_txid, Some("ledger.example"), 1_700_000_000);
        let path = merkle::inclusion_path(&tree, seqno, size).unwrap();
        (build_receipt(&root_signature, &leaf, &path).unwrap(), leaf)
    }

    #[test]
    fn receipts_verify_on_both_curves() {
        for pem in [P384_PEM, P256_PEM] {
            let signer = signer(pem);
            for (seqno, size) in [(1, 2), (5, 9), (8, 9), (3, 16), (1000, 1027)] {
                let (receipt, leaf) = receipt_at(&signer, seqno, size);
                let verified = verify_receipt(&receipt, &signer.public_key()).unwrap();
                assert_eq!(verified.txid, TxId::new(2, seqno).unwrap());
                assert_eq!(verified.leaf, leaf);
                assert_eq!(verified.signature.txid, TxId::new(2, size).unwrap());
                assert_eq!(verified.signature.issued_at, 1_700_000_000);
                assert_eq!(verified.signature.issuer.as_deref(), Some("ledger.example"));
                assert_eq!(
                    verified.signature.subject.as_deref(),
                    Some("ledger.signature")
                );
            }
        }
    }

    /// The encoding is CCF's: tag 18, the headers in deterministic order, a nil payload, an
    /// empty unprotected map in the stored signature.
    #[test]
    fn root_signature_layout() {
        let signer = signer(P384_PEM);
        let root = sha256(b"root");
        let bytes = signer.sign_root(&root, TxId::new(3, 42).unwrap(), None, 1_700_000_000);
        // Tag 18, array of 4, protected bstr.
        assert_eq!(&bytes[..2], &[0xd2, 0x84]);
        let value = Value::from_slice(&bytes[1..]).unwrap();
        let items = value.as_array().unwrap();
        assert_eq!(items[1], Value::Map(vec![]));
        assert_eq!(items[2], Value::Null);
        assert_eq!(items[3].as_bytes().unwrap().len(), 96);
        let protected = Value::from_slice(items[0].as_bytes().unwrap()).unwrap();
        let labels: Vec<Value> = protected
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(
            labels,
            vec![
                Value::from(1),
                Value::from(4),
                Value::from(15),
                Value::from(395),
                Value::from("ccf.v1")
            ]
        );
        let claims = verify_root_signature(&bytes, &root, &signer.public_key()).unwrap();
        assert_eq!(claims.txid, TxId::new(3, 42).unwrap());
        assert_eq!(read_claims(&bytes).unwrap(), claims);
        // Random ECDSA nonces: signing again changes only the signature.
        let again = signer.sign_root(&root, TxId::new(3, 42).unwrap(), None, 1_700_000_000);
        assert_eq!(bytes.len(), again.len());
        assert_eq!(bytes[..bytes.len() - 96], again[..again.len() - 96]);
        assert_ne!(bytes, again);
        verify_root_signature(&again, &root, &signer.public_key()).unwrap();
    }

    #[test]
    fn every_bit_of_a_receipt_matters() {
        let signer = signer(P256_PEM);
        let (receipt, _) = receipt_at(&signer, 5, 11);
        let key = signer.public_key();
        verify_receipt(&receipt, &key).unwrap();
        for i in 0..receipt.len() {
            for bit in 0..8 {
                let mut flipped = receipt.clone();
                flipped[i] ^= 1 << bit;
                assert!(
                    verify_receipt(&flipped, &key).is_err(),
                    "flipping bit {bit} of byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn refuses_the_wrong_key_root_and_shape() {
        let signer = signer(P384_PEM);
        let other = self::signer(P256_PEM);
        let (receipt, leaf) = receipt_at(&signer, 5, 9);
        assert!(matches!(
            verify_receipt(&receipt, &other.public_key()),
            Err(CoseError::WrongAlgorithm { .. })
        ));
        let root = sha256(b"root");
        let sig = signer.sign_root(&root, TxId::new(2, 9).unwrap(), None, 1);
        assert_eq!(
            verify_root_signature(&sig, &sha256(b"other"), &signer.public_key()),
            Err(CoseError::BadSignature)
        );
        // A path valid for the root, but claimed under a signature of another size.
        let mut tree = MemoryTree::new();
        for i in 0..9u64 {
            tree.push(if i == 5 {
                leaf.leaf()
            } else {
                sha256(&i.to_le_bytes())
            });
        }
        let path = merkle::inclusion_path(&tree, 5, 9).unwrap();
        let lying = signer.sign_root(&tree.root().unwrap(), TxId::new(2, 6).unwrap(), None, 1);
        let receipt = build_receipt(&lying, &leaf, &path).unwrap();
        assert!(matches!(
            verify_receipt(&receipt, &signer.public_key()),
            Err(CoseError::ProofShape(_))
        ));
        // A stored root signature is not a receipt.
        assert!(matches!(
            verify_receipt(&sig, &signer.public_key()),
            Err(CoseError::UnprotectedHeader(_))
        ));
        assert!(matches!(
            verify_receipt(b"\xd2\x84", &signer.public_key()),
            Err(CoseError::NotCoseSign1(_))
        ));
    }
}
