//! ACL write receipts: building the JSON a ledger hands out, and verifying it.
//!
//! A receipt proves that a transaction is in the ledger. It reveals the transaction's leaf
//! inputs (write-set digest, commit evidence, claims digest), gives the Merkle path from that
//! leaf to a root, and carries a node's signature over the root together with the node's
//! certificate, which chains to the service certificate (acl-api.md §5).
//!
//! Verification does the checks of the Python SDK's `verify_receipt` (SDK 1.1.1, acl-api.md
//! §5.3), in the same order, so that a receipt we accept is one the SDK accepts. On top of that
//! it is stricter where the SDK is loose only by accident:
//! * the service certificate must be a CA (basicConstraints CA:TRUE) and self-signed, and every
//!   service endorsement must be a CA. The SDK only checks signatures along the chain;
//! * digests and proof hashes must be exactly 64 hex characters (the SDK takes any length), and
//!   commit evidence must be well formed, since it names the transaction id we report;
//! * base64 must be canonical, keys that collide after snake_case normalisation are rejected,
//!   and certificate keys must be P-256 or P-384 (the curves CCF uses).
//!
//! As in the SDK, certificate validity dates are not checked (see `x509`).

use crate::claims::{ApplicationClaim, ClaimsError, claims_digest};
use crate::evidence::{CommitEvidence, leaf_hash};
use crate::hash::Hash32;
use crate::merkle::{ProofStep, fold_path};
use crate::signing::SignatureError;
use crate::txid::TxId;
use crate::x509::{Cert, CertError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The `receipt` member of `GET /app/transactions/{id}/receipt`.
///
/// Field order is the serialization order, which is sorted, like the JSON CCF emits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// PEM of the node certificate whose key signed the root.
    pub cert: String,
    pub leaf_components: LeafComponents,
    /// Hex `SHA256(node SPKI DER)`. Always emitted. The SDK also accepts receipts without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Leaf-to-root path.
    pub proof: Vec<ProofElement>,
    /// Previous service identities' certificates, each endorsed by the next one. Usually empty.
    pub service_endorsements: Vec<String>,
    /// Base64 (standard, padded) DER ECDSA signature over the root.
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeafComponents {
    pub claims_digest: String,
    pub commit_evidence: String,
    pub write_set_digest: String,
}

/// One step of the path: `Left(h)` means the sibling `h` is on the left, so the parent is
/// `SHA256(h || current)`. `Right(h)` gives `SHA256(current || h)`. Serializes as exactly
/// `{"left": "<hex>"}` or `{"right": "<hex>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProofElement {
    Left(String),
    Right(String),
}

/// The body of `GET /app/transactions/{id}/receipt`. `receipt` is absent while the state is
/// `Loading`; `applicationClaims` only appears for claims-capable api-versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_claims: Option<Vec<ApplicationClaim>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    pub state: String,
    pub transaction_id: String,
}

/// Everything a receipt is made of, in typed form.
#[derive(Clone, Debug)]
pub struct ReceiptParts {
    pub write_set_digest: Hash32,
    pub commit_evidence: CommitEvidence,
    pub claims_digest: Hash32,
    /// Leaf-to-root path.
    pub proof: Vec<ProofStep>,
    /// DER ECDSA signature over the root (see `signing::EcSigningKey::sign_root`).
    pub signature_der: Vec<u8>,
    pub node_cert_pem: String,
    pub node_id: Hash32,
    pub service_endorsements: Vec<String>,
}

/// What a successful verification established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// The transaction named by the commit evidence.
    pub txid: TxId,
    pub leaf: Hash32,
    /// The signed Merkle root.
    pub root: Hash32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("the receipt content is invalid: {0}")]
    InvalidShape(String),
    #[error("the application claims are invalid: {0}")]
    Claims(#[from] ClaimsError),
    #[error(
        "the claims digest of the application claims ({computed}) does not match the receipt's claimsDigest ({in_receipt})"
    )]
    ClaimsMismatch {
        computed: String,
        in_receipt: String,
    },
    #[error("the node certificate is unusable: {0}")]
    NodeCert(CertError),
    #[error("the node certificate's public key is not an elliptic-curve key")]
    NodeCertNotEc,
    #[error("the node certificate's EC key is unsupported: {0}")]
    NodeKeyUnsupported(SignatureError),
    /// `depth` indexes `serviceEndorsements ++ [service certificate]`: the link whose
    /// certificate could not be loaded or did not sign the previous one.
    #[error(
        "the endorsement chain is broken at link {depth} (0 = first endorsement, last = service certificate): {reason}"
    )]
    EndorsementChain { depth: usize, reason: CertError },
    #[error("service endorsement {index} is not a CA certificate")]
    EndorsementNotCa { index: usize },
    #[error("the service certificate is not a CA certificate (basicConstraints CA:TRUE)")]
    ServiceCertNotCa,
    #[error("the service certificate is not self-signed")]
    ServiceCertNotSelfSigned,
    #[error("leafComponents.{0} is malformed")]
    BadLeafComponent(&'static str),
    #[error("proof element {index} is not a 64-character hex hash")]
    BadProofElement { index: usize },
    #[error("nodeId is not SHA-256 of the node certificate's public key")]
    NodeIdMismatch,
    #[error("the signature is not standard padded base64")]
    BadSignatureEncoding,
    #[error("the node's signature over the Merkle root does not verify: {0}")]
    SignatureInvalid(SignatureError),
}

fn shape(what: impl Into<String>) -> ReceiptError {
    ReceiptError::InvalidShape(what.into())
}

impl Receipt {
    pub fn build(parts: ReceiptParts) -> Receipt {
        Receipt {
            cert: parts.node_cert_pem,
            leaf_components: LeafComponents {
                claims_digest: parts.claims_digest.to_hex(),
                commit_evidence: parts.commit_evidence.as_str().to_owned(),
                write_set_digest: parts.write_set_digest.to_hex(),
            },
            node_id: Some(parts.node_id.to_hex()),
            proof: parts
                .proof
                .iter()
                .map(|step| match step {
                    ProofStep::Left(hash) => ProofElement::Left(hash.to_hex()),
                    ProofStep::Right(hash) => ProofElement::Right(hash.to_hex()),
                })
                .collect(),
            service_endorsements: parts.service_endorsements,
            signature: BASE64.encode(&parts.signature_der),
        }
    }

    pub fn from_json(text: &str) -> Result<Receipt, ReceiptError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| shape(format!("not JSON: {e}")))?;
        Receipt::from_value(&value)
    }

    /// Accepts what the SDK accepts: keys in camelCase or in CCF's older snake_case (normalised
    /// recursively the way the SDK does), unknown top-level keys (ignored, e.g. the legacy
    /// `is_signature_transaction`), and `nodeId`/`serviceEndorsements` left out. It rejects
    /// extra keys inside `leafComponents` and inside proof elements, like the SDK's dataclasses.
    pub fn from_value(value: &Value) -> Result<Receipt, ReceiptError> {
        let value = normalize_keys(value)?;
        let r = value
            .as_object()
            .ok_or_else(|| shape("the receipt is not a JSON object"))?;
        let string = |map: &Map<String, Value>, key: &str, what: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| shape(format!("{what} must be a string")))
        };

        let cert = string(r, "cert", "cert")?;
        let lc = r
            .get("leafComponents")
            .and_then(Value::as_object)
            .ok_or_else(|| shape("leafComponents must be an object"))?;
        let leaf_components = LeafComponents {
            claims_digest: string(lc, "claimsDigest", "leafComponents.claimsDigest")?,
            commit_evidence: string(lc, "commitEvidence", "leafComponents.commitEvidence")?,
            write_set_digest: string(lc, "writeSetDigest", "leafComponents.writeSetDigest")?,
        };
        if let Some(extra) = lc
            .keys()
            .find(|k| !["claimsDigest", "commitEvidence", "writeSetDigest"].contains(&k.as_str()))
        {
            return Err(shape(format!("unexpected key `{extra}` in leafComponents")));
        }

        let proof = r
            .get("proof")
            .and_then(Value::as_array)
            .ok_or_else(|| shape("proof must be a list"))?;
        let proof = proof
            .iter()
            .enumerate()
            .map(|(i, element)| proof_element(i, element))
            .collect::<Result<_, _>>()?;

        let signature = string(r, "signature", "signature")?;
        let node_id = match r.get("nodeId") {
            None => None,
            Some(_) => Some(string(r, "nodeId", "nodeId")?),
        };
        let service_endorsements = match r.get("serviceEndorsements") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| shape("serviceEndorsements must be a list of strings"))?,
            Some(_) => return Err(shape("serviceEndorsements must be a list of strings")),
        };
        Ok(Receipt {
            cert,
            leaf_components,
            node_id,
            proof,
            service_endorsements,
            signature,
        })
    }
}

fn proof_element(index: usize, element: &Value) -> Result<ProofElement, ReceiptError> {
    let bad = |why: &str| shape(format!("proof element {index} {why}"));
    let map = element.as_object().ok_or_else(|| bad("is not an object"))?;
    if let Some(extra) = map.keys().find(|k| *k != "left" && *k != "right") {
        return Err(bad(&format!("has unexpected key `{extra}`")));
    }
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad("has a non-string hash"))
    };
    match (map.get("left"), map.get("right")) {
        (Some(left), None) => Ok(ProofElement::Left(text(left)?)),
        (None, Some(right)) => Ok(ProofElement::Right(text(right)?)),
        _ => Err(bad("must have exactly one of `left` and `right`")),
    }
}

// Parses like `from_value`, so that a `ReceiptResponse` read from JSON gets the same checks.
impl<'de> Deserialize<'de> for Receipt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Receipt::from_value(&value).map_err(serde::de::Error::custom)
    }
}

/// The SDK's `_convert_dict_to_camel_case`: every object key, at any depth (including objects
/// inside lists), is split on `_`, and every part after the first is title-cased.
fn normalize_keys(value: &Value) -> Result<Value, ReceiptError> {
    Ok(match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, inner) in map {
                let key = to_camel_case(key);
                // Python would silently keep one of the two; which one depends on key order.
                if out.contains_key(&key) {
                    return Err(shape(format!(
                        "key `{key}` appears twice once normalised to camelCase"
                    )));
                }
                out.insert(key, normalize_keys(inner)?);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(normalize_keys).collect::<Result<_, _>>()?)
        }
        other => other.clone(),
    })
}

fn to_camel_case(key: &str) -> String {
    let mut parts = key.split('_');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        // Python's str.title(): upper-case a letter that follows a non-letter, lower-case the rest.
        let mut after_letter = false;
        for c in part.chars() {
            if after_letter {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            after_letter = c.is_alphabetic();
        }
    }
    out
}

/// Verifies `receipt` against the ledger's service certificate (`ledgerTlsCertificate` from the
/// identity service) and, if given and non-empty, the application claims of the `/receipt`
/// response. See the module docs for what is checked.
pub fn verify_receipt(
    receipt: &Receipt,
    service_cert_pem: &str,
    application_claims: Option<&[ApplicationClaim]>,
) -> Result<VerifiedReceipt, ReceiptError> {
    let lc = &receipt.leaf_components;

    // 1. Claims: compared as text, like the SDK (so the receipt must carry lowercase hex).
    if let Some(claims) = application_claims.filter(|c| !c.is_empty()) {
        let computed = claims_digest(claims)?.to_hex();
        if computed != lc.claims_digest {
            return Err(ReceiptError::ClaimsMismatch {
                computed,
                in_receipt: lc.claims_digest.clone(),
            });
        }
    }

    // 2. The node certificate, with an EC key.
    let node_cert = Cert::from_pem(&receipt.cert).map_err(ReceiptError::NodeCert)?;
    let node_key = node_cert.public_key().map_err(|e| match e {
        CertError::PublicKey(SignatureError::NotEcKey | SignatureError::MalformedPublicKey) => {
            ReceiptError::NodeCertNotEc
        }
        CertError::PublicKey(e) => ReceiptError::NodeKeyUnsupported(e),
        other => ReceiptError::NodeCert(other),
    })?;

    // 3. Endorsements: each link must have signed the certificate before it.
    let chain_pems = receipt
        .service_endorsements
        .iter()
        .map(String::as_str)
        .chain([service_cert_pem]);
    let mut chain: Vec<Cert> = Vec::with_capacity(receipt.service_endorsements.len() + 1);
    for (depth, pem) in chain_pems.enumerate() {
        let broken = |reason| ReceiptError::EndorsementChain { depth, reason };
        let endorser = Cert::from_pem(pem).map_err(broken)?;
        chain
            .last()
            .unwrap_or(&node_cert)
            .verify_issued_by(&endorser)
            .map_err(broken)?;
        chain.push(endorser);
    }
    // Stricter than the SDK: the chain must consist of CA certificates and end in a root.
    if let Some((service, endorsements)) = chain.split_last() {
        if let Some(index) = endorsements.iter().position(|cert| !cert.is_ca()) {
            return Err(ReceiptError::EndorsementNotCa { index });
        }
        if !service.is_ca() {
            return Err(ReceiptError::ServiceCertNotCa);
        }
        if !service.is_self_signed() {
            return Err(ReceiptError::ServiceCertNotSelfSigned);
        }
    }

    // 4. The leaf.
    let write_set_digest = Hash32::from_hex(&lc.write_set_digest)
        .map_err(|_| ReceiptError::BadLeafComponent("writeSetDigest"))?;
    let commit_evidence = CommitEvidence::parse(&lc.commit_evidence)
        .map_err(|_| ReceiptError::BadLeafComponent("commitEvidence"))?;
    let claims = Hash32::from_hex(&lc.claims_digest)
        .map_err(|_| ReceiptError::BadLeafComponent("claimsDigest"))?;
    let leaf = leaf_hash(&write_set_digest, &commit_evidence.digest(), &claims);

    // 5. The root.
    let path = receipt
        .proof
        .iter()
        .enumerate()
        .map(|(index, element)| {
            let (hex, step): (_, fn(Hash32) -> ProofStep) = match element {
                ProofElement::Left(hex) => (hex, ProofStep::Left),
                ProofElement::Right(hex) => (hex, ProofStep::Right),
            };
            Hash32::from_hex(hex)
                .map(step)
                .map_err(|_| ReceiptError::BadProofElement { index })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let root = fold_path(leaf, &path);

    // 6. The signature, by the key `nodeId` names (if given; hex of either case).
    if let Some(node_id) = &receipt.node_id
        && Hash32::from_hex(node_id).ok() != Some(node_key.node_id())
    {
        return Err(ReceiptError::NodeIdMismatch);
    }
    let signature = BASE64
        .decode(&receipt.signature)
        .map_err(|_| ReceiptError::BadSignatureEncoding)?;
    // The root is the digest itself: prehash verification, never hashed again.
    node_key
        .verify_prehash(root.as_bytes(), &signature)
        .map_err(ReceiptError::SignatureInvalid)?;

    Ok(VerifiedReceipt {
        txid: commit_evidence.txid(),
        leaf,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::ledger_entry_claim;
    use crate::evidence::CommitSecret;
    use crate::hash::sha256;
    use crate::signing::EcSigningKey;

    const RESPONSE_3: &str = include_str!("../tests/vectors/sdk-receipt-3-response.json");
    const SERVICE_1: &str = include_str!("../tests/vectors/sdk-service-cert-1.pem");
    const SERVICE_2: &str = include_str!("../tests/vectors/sdk-service-cert-2.pem");
    const SERVICE_3: &str = include_str!("../tests/vectors/sdk-service-cert-3.pem");
    const RECEIPT_1: &str = include_str!("../tests/vectors/sdk-receipt-1-snake-case.json");
    const RECEIPT_2: &str = include_str!("../tests/vectors/sdk-receipt-2.json");
    const CLAIMS_LEDGER_ENTRY: &str = include_str!("../tests/vectors/sdk-claims-ledger-entry.json");
    const CLAIMS_CLAIM_DIGEST: &str = include_str!("../tests/vectors/sdk-claims-claim-digest.json");

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn claims(text: &str) -> Vec<ApplicationClaim> {
        serde_json::from_str(text).unwrap()
    }

    fn receipt_3() -> Value {
        json(RESPONSE_3)["receipt"].clone()
    }

    /// Parses and verifies a receipt given as JSON.
    fn verify_value(
        receipt: &Value,
        service: &str,
        claims: Option<&[ApplicationClaim]>,
    ) -> Result<VerifiedReceipt, ReceiptError> {
        verify_receipt(&Receipt::from_value(receipt)?, service, claims)
    }

    /// A different hex digit at `at`.
    fn flip(hex: &str, at: usize) -> String {
        let mut chars: Vec<char> = hex.chars().collect();
        chars[at] = if chars[at] == '0' { '1' } else { '0' };
        chars.into_iter().collect()
    }

    #[test]
    fn sdk_vector_with_claims_verifies() {
        let response: ReceiptResponse = serde_json::from_str(RESPONSE_3).unwrap();
        let receipt = response.receipt.as_ref().unwrap();
        for claims in [
            response.application_claims.clone().unwrap(),
            claims(CLAIMS_CLAIM_DIGEST),
            vec![],
        ] {
            let verified = verify_receipt(receipt, SERVICE_3, Some(&claims)).unwrap();
            assert_eq!(verified.txid, TxId::parse("2.13").unwrap());
            assert_eq!(
                verified.leaf.to_hex(),
                "ab64db6ebde6fa0427dd5b7d74e1ac3376f463648515a180adc2bb8cfaac4b4a"
            );
            assert_eq!(
                verified.root.to_hex(),
                "f7b9072e3235ea1f5fe150f7153527bd670009ebbc48a37e4fd6c4428f6fa148"
            );
        }
        verify_receipt(receipt, SERVICE_3, None).unwrap();
        assert_eq!(response.transaction_id, "2.13");
        assert_eq!(response.state, "Ready");
    }

    /// The SDK's two P-256 vectors: one in legacy snake_case with `is_signature_transaction`.
    #[test]
    fn sdk_p256_vectors_verify() {
        let one = verify_value(&json(RECEIPT_1), SERVICE_1, None).unwrap();
        assert_eq!(one.txid, TxId::parse("2.35").unwrap());
        assert_eq!(
            one.root.to_hex(),
            "283afa446263bcc3be31a980957fe3d0196494bf100df6774249f09d10755101"
        );
        let two = verify_value(&json(RECEIPT_2), SERVICE_2, None).unwrap();
        assert_eq!(two.txid, TxId::parse("16.7415").unwrap());
        assert_eq!(
            two.leaf.to_hex(),
            "69b8b4060ffe8c6fa639a70aeb7f9d1cad5a839a86282724fec2e498779b9d48"
        );
    }

    /// The negative cases of the SDK's test_receipt_verification.py, with our error variants.
    #[test]
    fn sdk_negative_cases() {
        use ReceiptError::*;
        // The SDK tests mix spellings (`leafComponents` set on the snake_case dict), which
        // Python resolves by key order and we reject; so mutate the camelCase form.
        let r1 = serde_json::to_value(Receipt::from_value(&json(RECEIPT_1)).unwrap()).unwrap();
        let r2 = json(RECEIPT_2);
        let with = |key: &str, value: Value| {
            let mut r = r1.clone();
            r[key] = value;
            r
        };
        let without = |key: &str| {
            let mut r = r1.clone();
            r.as_object_mut().unwrap().remove(key);
            r
        };
        let invalid_leaf = json(
            r#"{"claimsDigest":"invalid_claims_digest","commitEvidence":"invalid_commit_evidence","writeSetDigest":"invalid_write_set_digest"}"#,
        );
        type Case<'a> = (Value, &'a str, fn(&ReceiptError) -> bool);
        let cases: Vec<Case> = vec![
            (with("leafComponents", Value::Null), SERVICE_1, |e| {
                matches!(e, InvalidShape(_))
            }),
            (with("leafComponents", invalid_leaf), SERVICE_1, |e| {
                matches!(e, BadLeafComponent("writeSetDigest"))
            }),
            (with("cert", Value::Null), SERVICE_1, |e| {
                matches!(e, InvalidShape(_))
            }),
            (with("cert", "invalid_cert_string".into()), SERVICE_1, |e| {
                matches!(e, NodeCert(CertError::NotPem))
            }),
            (with("nodeId", Value::Null), SERVICE_1, |e| {
                matches!(e, InvalidShape(_))
            }),
            (with("nodeId", "invalid_node_id".into()), SERVICE_1, |e| {
                matches!(e, NodeIdMismatch)
            }),
            (with("nodeId", r2["nodeId"].clone()), SERVICE_1, |e| {
                matches!(e, NodeIdMismatch)
            }),
            (with("proof", Value::Null), SERVICE_1, |e| {
                matches!(e, InvalidShape(_))
            }),
            (with("proof", json("[{}]")), SERVICE_1, |e| {
                matches!(e, InvalidShape(_))
            }),
            (
                with("proof", json(r#"[{"right":"invalid_node_hash"}]"#)),
                SERVICE_1,
                |e| matches!(e, BadProofElement { index: 0 }),
            ),
            (
                with("proof", json(r#"[{"left":"aa","right":"bb"}]"#)),
                SERVICE_1,
                |e| matches!(e, InvalidShape(_)),
            ),
            (with("proof", json("[]")), SERVICE_1, |e| {
                matches!(e, SignatureInvalid(_))
            }),
            (with("proof", r2["proof"].clone()), SERVICE_1, |e| {
                matches!(e, SignatureInvalid(_))
            }),
            (with("serviceEndorsements", 1.into()), SERVICE_1, |e| {
                matches!(e, InvalidShape(_))
            }),
            (with("serviceEndorsements", json("[2]")), SERVICE_1, |e| {
                matches!(e, InvalidShape(_))
            }),
            (
                with(
                    "serviceEndorsements",
                    json(&format!("[{}]", serde_json::to_string(SERVICE_2).unwrap())),
                ),
                SERVICE_1,
                |e| matches!(e, EndorsementChain { depth: 0, .. }),
            ),
            (with("signature", Value::Null), SERVICE_1, |e| {
                matches!(e, InvalidShape(_))
            }),
            (with("signature", r2["signature"].clone()), SERVICE_1, |e| {
                matches!(e, SignatureInvalid(_))
            }),
            (with("cert", r2["cert"].clone()), SERVICE_1, |e| {
                matches!(
                    e,
                    EndorsementChain {
                        depth: 0,
                        reason: CertError::BadSignature
                    }
                )
            }),
            (
                with("leafComponents", r2["leafComponents"].clone()),
                SERVICE_1,
                |e| matches!(e, SignatureInvalid(_)),
            ),
            (r1.clone(), "invalid_cert_string", |e| {
                matches!(
                    e,
                    EndorsementChain {
                        depth: 0,
                        reason: CertError::NotPem
                    }
                )
            }),
            (r1.clone(), SERVICE_2, |e| {
                matches!(
                    e,
                    EndorsementChain {
                        depth: 0,
                        reason: CertError::BadSignature
                    }
                )
            }),
            (without("cert"), SERVICE_1, |e| matches!(e, InvalidShape(_))),
            (without("signature"), SERVICE_1, |e| {
                matches!(e, InvalidShape(_))
            }),
        ];
        for (i, (receipt, service, expected)) in cases.iter().enumerate() {
            let result = verify_value(receipt, service, None);
            assert!(
                matches!(&result, Err(e) if expected(e)),
                "case {i}: {result:?}"
            );
        }
        // Leaving out nodeId or serviceEndorsements is fine.
        verify_value(&without("nodeId"), SERVICE_1, None).unwrap();
        verify_value(&without("serviceEndorsements"), SERVICE_1, None).unwrap();
        // Claims that do not match.
        let result = verify_value(&r1, SERVICE_1, Some(&claims(CLAIMS_CLAIM_DIGEST)));
        assert!(matches!(result, Err(ClaimsMismatch { .. })), "{result:?}");
        let result = verify_value(&r2, SERVICE_2, Some(&claims(CLAIMS_LEDGER_ENTRY)));
        assert!(matches!(result, Err(ClaimsMismatch { .. })), "{result:?}");
    }

    /// Every single change to the SDK vector fails, with the error that names the change.
    #[test]
    fn any_single_mutation_fails() {
        use ReceiptError::*;
        let good = receipt_3();
        let le = claims(CLAIMS_LEDGER_ENTRY);
        let check = |mutate: &dyn Fn(&mut Value),
                     claims: Option<&[ApplicationClaim]>,
                     expected: fn(&ReceiptError) -> bool| {
            let mut receipt = good.clone();
            mutate(&mut receipt);
            let result = verify_value(&receipt, SERVICE_3, claims);
            assert!(matches!(&result, Err(e) if expected(e)), "{result:?}");
        };
        let set = |pointer: &'static str, f: fn(&str) -> String| {
            move |r: &mut Value| {
                let slot = r.pointer_mut(pointer).unwrap();
                *slot = f(slot.as_str().unwrap()).into();
            }
        };
        for at in [0, 31, 63] {
            for field in [
                "/leafComponents/writeSetDigest",
                "/leafComponents/claimsDigest",
            ] {
                let mutate = move |r: &mut Value| {
                    let slot = r.pointer_mut(field).unwrap();
                    *slot = flip(slot.as_str().unwrap(), at).into();
                };
                check(&mutate, None, |e| {
                    matches!(e, SignatureInvalid(SignatureError::Invalid))
                });
            }
            let nonce = move |r: &mut Value| {
                let slot = r.pointer_mut("/leafComponents/commitEvidence").unwrap();
                *slot = flip(slot.as_str().unwrap(), 8 + at).into();
            };
            check(&nonce, None, |e| matches!(e, SignatureInvalid(_)));
            for step in 0..3 {
                let mutate = move |r: &mut Value| {
                    let slot = &mut r["proof"][step]["left"];
                    *slot = flip(slot.as_str().unwrap(), at).into();
                };
                check(&mutate, None, |e| matches!(e, SignatureInvalid(_)));
            }
        }
        // With the claims given, a changed claimsDigest is caught first, as in the SDK.
        check(
            &set("/leafComponents/claimsDigest", |d| flip(d, 5)),
            Some(&le),
            |e| matches!(e, ClaimsMismatch { .. }),
        );
        // The SDK compares the claims digest as text, so upper case does not match.
        check(
            &set("/leafComponents/claimsDigest", str::to_uppercase),
            Some(&le),
            |e| matches!(e, ClaimsMismatch { .. }),
        );
        check(
            &set("/leafComponents/commitEvidence", |c| {
                c.replace("ce:2.13:", "ce:2.14:")
            }),
            None,
            |e| matches!(e, SignatureInvalid(_)),
        );
        check(
            &set("/leafComponents/commitEvidence", |c| c.to_uppercase()),
            None,
            |e| matches!(e, BadLeafComponent("commitEvidence")),
        );
        check(
            &set("/leafComponents/writeSetDigest", |d| d[2..].to_owned()),
            None,
            |e| matches!(e, BadLeafComponent("writeSetDigest")),
        );
        // Swapping a step's side, dropping a step, adding a step.
        for step in 0..3 {
            check(
                &move |r: &mut Value| {
                    let hash = r["proof"][step]["left"].take();
                    r["proof"][step] = serde_json::json!({ "right": hash });
                },
                None,
                |e| matches!(e, SignatureInvalid(_)),
            );
            check(
                &move |r: &mut Value| {
                    r["proof"].as_array_mut().unwrap().remove(step);
                },
                None,
                |e| matches!(e, SignatureInvalid(_)),
            );
        }
        check(
            &|r: &mut Value| {
                r["proof"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({ "right": sha256(b"x").to_hex() }));
            },
            None,
            |e| matches!(e, SignatureInvalid(_)),
        );
        // The signature: a changed byte, and non-canonical encodings.
        check(
            &set("/signature", |s| {
                let mut der = BASE64.decode(s).unwrap();
                let last = der.len() - 1;
                der[last] ^= 1;
                BASE64.encode(der)
            }),
            None,
            |e| matches!(e, SignatureInvalid(SignatureError::Invalid)),
        );
        check(
            &set("/signature", |s| {
                let mut der = BASE64.decode(s).unwrap();
                der[0] = 0x31;
                BASE64.encode(der)
            }),
            None,
            |e| matches!(e, SignatureInvalid(SignatureError::MalformedSignature)),
        );
        let encodings: [fn(&str) -> String; 3] = [
            |s| s.trim_end_matches('=').to_owned(),
            |s| format!("{}\n{}", &s[..10], &s[10..]),
            |s| s.replace('/', "_"),
        ];
        for encode in encodings {
            check(&set("/signature", encode), None, |e| {
                matches!(e, BadSignatureEncoding)
            });
        }
        // nodeId: changed, or not hex. Upper case is fine (the SDK uses bytes.fromhex).
        check(&set("/nodeId", |n| flip(n, 0)), None, |e| {
            matches!(e, NodeIdMismatch)
        });
        check(&set("/nodeId", |n| n[..62].to_owned()), None, |e| {
            matches!(e, NodeIdMismatch)
        });
        let mut upper = good.clone();
        upper["nodeId"] = upper["nodeId"].as_str().unwrap().to_uppercase().into();
        verify_value(&upper, SERVICE_3, None).unwrap();
        // Wrong claims contents, wrong service certificates.
        let other = vec![ledger_entry_claim("subledger:0", "Hello world!", &[0; 32])];
        check(&|_: &mut Value| {}, Some(&other), |e| {
            matches!(e, ClaimsMismatch { .. })
        });
        for service in [SERVICE_1, SERVICE_2] {
            let result = verify_value(&good, service, None);
            assert!(
                matches!(
                    result,
                    Err(EndorsementChain {
                        depth: 0,
                        reason: CertError::BadSignature
                    })
                ),
                "{result:?}"
            );
        }
        // A self-signed service cert may endorse itself (it signed the node cert and itself);
        // checked against another service cert, the chain then breaks at link 1.
        let mut endorsed = good.clone();
        endorsed["serviceEndorsements"] = serde_json::json!([SERVICE_3]);
        verify_value(&endorsed, SERVICE_3, None).unwrap();
        let result = verify_value(&endorsed, SERVICE_1, None);
        assert!(
            matches!(result, Err(EndorsementChain { depth: 1, .. })),
            "{result:?}"
        );
    }

    #[test]
    fn parsing_rejects_what_the_sdk_models_reject() {
        let good = receipt_3();
        let mutated = |f: &dyn Fn(&mut Value)| {
            let mut r = good.clone();
            f(&mut r);
            Receipt::from_value(&r)
        };
        let mutations: [&dyn Fn(&mut Value); 8] = [
            &|r: &mut Value| r["leafComponents"]["leaf"] = "00".into(),
            &|r: &mut Value| r["proof"][0]["extra"] = "00".into(),
            &|r: &mut Value| r["proof"][0]["right"] = "00".into(),
            &|r: &mut Value| r["proof"][0] = "left".into(),
            &|r: &mut Value| r["nodeId"] = 1.into(),
            &|r: &mut Value| r["cert"] = serde_json::json!(["pem"]),
            // `node_id` normalises to `nodeId`, which is already there.
            &|r: &mut Value| r["node_id"] = r["nodeId"].clone(),
            &|r: &mut Value| r["leafComponents"]["claims_digest"] = "00".into(),
        ];
        for f in mutations {
            assert!(matches!(mutated(f), Err(ReceiptError::InvalidShape(_))));
        }
        assert!(matches!(
            Receipt::from_json("[]"),
            Err(ReceiptError::InvalidShape(_))
        ));
        assert!(matches!(
            Receipt::from_json("{"),
            Err(ReceiptError::InvalidShape(_))
        ));
        // Unknown top-level keys are ignored.
        let extra = mutated(&|r: &mut Value| r["isSignatureTransaction"] = false.into()).unwrap();
        assert_eq!(extra, Receipt::from_value(&good).unwrap());
        // Parsing through ReceiptResponse applies the same rules.
        let mut response = json(RESPONSE_3);
        response["receipt"]["leafComponents"]["extra"] = 1.into();
        assert!(serde_json::from_value::<ReceiptResponse>(response).is_err());
    }

    #[test]
    fn snake_case_normalisation_matches_python() {
        for (from, to) in [
            ("leaf_components", "leafComponents"),
            ("write_set_digest", "writeSetDigest"),
            ("is_signature_transaction", "isSignatureTransaction"),
            ("nodeId", "nodeId"),
            ("node__id", "nodeId"),
            ("node_ID", "nodeId"),
            ("a_b2c", "aB2C"),
            ("_x", "X"),
            ("left", "left"),
        ] {
            assert_eq!(to_camel_case(from), to, "{from}");
        }
        // The snake_case SDK vector parses into the same model as its camelCase spelling.
        let snake = Receipt::from_value(&json(RECEIPT_1)).unwrap();
        let camel = Receipt::from_json(&serde_json::to_string(&snake).unwrap()).unwrap();
        assert_eq!(snake, camel);
    }

    /// Our serialization is CCF's: sorted keys, compact, `{"left": ...}` steps.
    #[test]
    fn response_json_is_byte_exact() {
        let evidence = CommitEvidence::parse(&format!("ce:2.15:{}", "ab".repeat(32))).unwrap();
        let receipt = Receipt::build(ReceiptParts {
            write_set_digest: Hash32([0x11; 32]),
            commit_evidence: evidence,
            claims_digest: Hash32::ZERO,
            proof: vec![
                ProofStep::Left(Hash32([0x22; 32])),
                ProofStep::Right(Hash32([0x33; 32])),
            ],
            signature_der: vec![0x30, 0x00],
            node_cert_pem: "PEM\n".into(),
            node_id: Hash32([0xab; 32]),
            service_endorsements: vec![],
        });
        let response = ReceiptResponse {
            application_claims: Some(vec![ledger_entry_claim("subledger:0", "hi", &[0; 32])]),
            receipt: Some(receipt),
            state: "Ready".into(),
            transaction_id: "2.15".into(),
        };
        let (h11, h22, h33, hab, zero) = (
            "11".repeat(32),
            "22".repeat(32),
            "33".repeat(32),
            "ab".repeat(32),
            "00".repeat(32),
        );
        let expected = format!(
            concat!(
                r#"{{"applicationClaims":[{{"kind":"LedgerEntry","ledgerEntry":{{"collectionId":"subledger:0","contents":"hi","#,
                r#""protocol":"LedgerEntryV1","secretKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}}}],"#,
                r#""receipt":{{"cert":"PEM\n","leafComponents":{{"claimsDigest":"{zero}","commitEvidence":"ce:2.15:{hab}","writeSetDigest":"{h11}"}},"#,
                r#""nodeId":"{hab}","proof":[{{"left":"{h22}"}},{{"right":"{h33}"}}],"serviceEndorsements":[],"signature":"MAA="}},"#,
                r#""state":"Ready","transactionId":"2.15"}}"#
            ),
            zero = zero,
            hab = hab,
            h11 = h11,
            h22 = h22,
            h33 = h33
        );
        let text = serde_json::to_string(&response).unwrap();
        assert_eq!(text, expected);
        assert_eq!(
            serde_json::from_str::<ReceiptResponse>(&text).unwrap(),
            response
        );
        // Loading: just state and id.
        let loading = ReceiptResponse {
            application_claims: None,
            receipt: None,
            state: "Loading".into(),
            transaction_id: "2.15".into(),
        };
        assert_eq!(
            serde_json::to_string(&loading).unwrap(),
            r#"{"state":"Loading","transactionId":"2.15"}"#
        );
        // The SDK vector re-serializes to its own (sorted, compact) JSON, plus the empty
        // serviceEndorsements the vector leaves out.
        let mut vector = json(RESPONSE_3);
        vector["receipt"]["serviceEndorsements"] = serde_json::json!([]);
        let parsed: ReceiptResponse = serde_json::from_value(vector.clone()).unwrap();
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            serde_json::to_string(&vector).unwrap()
        );
    }

    // ---- Round trips with freshly made PKIs -------------------------------------------------

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SignatureAlgorithm,
    };

    fn ca_params() -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "CCF Network");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
    }

    fn node_params() -> CertificateParams {
        let mut params = CertificateParams::new(vec!["ledger.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "CCF Node");
        params.is_ca = IsCa::ExplicitNoCa;
        params
    }

    /// A service CA and a node certificate it issued, plus the node's signing key.
    struct Pki {
        service_key: KeyPair,
        service_pem: String,
        node_pem: String,
        node_key: EcSigningKey,
    }

    fn pki(alg: &'static SignatureAlgorithm) -> Pki {
        let service_key = KeyPair::generate_for(alg).unwrap();
        let params = ca_params();
        let service_pem = params.self_signed(&service_key).unwrap().pem();
        let node_pair = KeyPair::generate_for(alg).unwrap();
        let node_pem = node_params()
            .signed_by(&node_pair, &Issuer::from_params(&params, &service_key))
            .unwrap()
            .pem();
        let node_key = EcSigningKey::from_pkcs8_der(node_pair.serialized_der()).unwrap();
        Pki {
            service_key,
            service_pem,
            node_pem,
            node_key,
        }
    }

    /// Receipts for every leaf of a 3-leaf tree `((l0 l1) l2)`, with hand-written paths.
    fn receipts_for_three_leaves(
        pki: &Pki,
        endorsements: Vec<String>,
    ) -> Vec<(Receipt, Hash32, TxId)> {
        let secret = CommitSecret::derive(&[9; 32]);
        let txids: Vec<TxId> = (1..=3).map(|s| TxId::new(2, s).unwrap()).collect();
        let inputs: Vec<(Hash32, CommitEvidence, Hash32)> = txids
            .iter()
            .map(|txid| {
                let key = [txid.seqno() as u8; 32];
                let claims = crate::claims::ledger_entry_claims_digest(
                    "subledger:0",
                    &format!("entry {txid}"),
                    &key,
                );
                (
                    sha256(txid.to_string().as_bytes()),
                    secret.evidence(*txid),
                    claims,
                )
            })
            .collect();
        let leaves: Vec<Hash32> = inputs
            .iter()
            .map(|(w, ce, c)| leaf_hash(w, &ce.digest(), c))
            .collect();
        let l01 = crate::hash::hash_children(&leaves[0], &leaves[1]);
        let root = crate::hash::hash_children(&l01, &leaves[2]);
        let paths = [
            vec![ProofStep::Right(leaves[1]), ProofStep::Right(leaves[2])],
            vec![ProofStep::Left(leaves[0]), ProofStep::Right(leaves[2])],
            vec![ProofStep::Left(l01)],
        ];
        let signature_der = pki.node_key.sign_root(&root);
        inputs
            .into_iter()
            .zip(paths)
            .zip(txids)
            .map(
                |(((write_set_digest, commit_evidence, claims_digest), proof), txid)| {
                    assert_eq!(
                        fold_path(
                            leaf_hash(&write_set_digest, &commit_evidence.digest(), &claims_digest),
                            &proof
                        ),
                        root
                    );
                    let receipt = Receipt::build(ReceiptParts {
                        write_set_digest,
                        commit_evidence,
                        claims_digest,
                        proof,
                        signature_der: signature_der.clone(),
                        node_cert_pem: pki.node_pem.clone(),
                        node_id: pki.node_key.node_id(),
                        service_endorsements: endorsements.clone(),
                    });
                    (receipt, root, txid)
                },
            )
            .collect()
    }

    #[test]
    fn built_receipts_verify_on_both_curves() {
        for alg in [
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ECDSA_P256_SHA256,
        ] {
            let pki = pki(alg);
            for (receipt, root, txid) in receipts_for_three_leaves(&pki, vec![]) {
                let key = [txid.seqno() as u8; 32];
                let claims = [ledger_entry_claim(
                    "subledger:0",
                    &format!("entry {txid}"),
                    &key,
                )];
                let verified = verify_receipt(&receipt, &pki.service_pem, Some(&claims)).unwrap();
                assert_eq!((verified.root, verified.txid), (root, txid));
                // Through JSON and back, as a client would see it.
                let reparsed =
                    Receipt::from_json(&serde_json::to_string(&receipt).unwrap()).unwrap();
                assert_eq!(reparsed, receipt);
                verify_receipt(&reparsed, &pki.service_pem, None).unwrap();
                // Another ledger's service certificate does not vouch for it.
                let other = self::pki(alg);
                let result = verify_receipt(&receipt, &other.service_pem, None);
                assert!(
                    matches!(result, Err(ReceiptError::EndorsementChain { depth: 0, .. })),
                    "{result:?}"
                );
            }
        }
    }

    /// After a service-key rotation: the node cert was issued by the old service key, and an
    /// endorsement (the old key, certified by the new key) bridges to the new service cert.
    #[test]
    fn endorsement_chain_after_service_rotation() {
        let old = pki(&rcgen::PKCS_ECDSA_P384_SHA384);
        let new_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let new_params = ca_params();
        let new_service_pem = new_params.self_signed(&new_key).unwrap().pem();
        let new_issuer = Issuer::from_params(&new_params, &new_key);
        let endorsement = ca_params()
            .signed_by(&old.service_key, &new_issuer)
            .unwrap()
            .pem();

        let (receipt, _, _) = receipts_for_three_leaves(&old, vec![endorsement.clone()]).remove(1);
        verify_receipt(&receipt, &new_service_pem, None).unwrap();
        // The old service cert still works directly, with the endorsement left out.
        let mut direct = receipt.clone();
        direct.service_endorsements.clear();
        verify_receipt(&direct, &old.service_pem, None).unwrap();
        // Without the endorsement the new service cert does not vouch for the node.
        let result = verify_receipt(&direct, &new_service_pem, None);
        assert!(
            matches!(result, Err(ReceiptError::EndorsementChain { depth: 0, .. })),
            "{result:?}"
        );

        // Stricter than the SDK: an endorsement that is not a CA.
        let mut not_ca = node_params();
        not_ca.distinguished_name = ca_params().distinguished_name;
        let weak = not_ca
            .signed_by(&old.service_key, &new_issuer)
            .unwrap()
            .pem();
        let mut with_weak = receipt.clone();
        with_weak.service_endorsements = vec![weak];
        assert_eq!(
            verify_receipt(&with_weak, &new_service_pem, None),
            Err(ReceiptError::EndorsementNotCa { index: 0 })
        );
    }

    #[test]
    fn service_cert_must_be_a_self_signed_ca() {
        let alg = &rcgen::PKCS_ECDSA_P384_SHA384;
        // A service "cert" that is not a CA but did sign the node cert.
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = ca_params();
        params.is_ca = IsCa::ExplicitNoCa;
        let service_pem = params.self_signed(&key).unwrap().pem();
        let node_pair = KeyPair::generate_for(alg).unwrap();
        let node_pem = node_params()
            .signed_by(&node_pair, &Issuer::from_params(&params, &key))
            .unwrap()
            .pem();
        let node_key = EcSigningKey::from_pkcs8_der(node_pair.serialized_der()).unwrap();
        let not_ca = Pki {
            service_key: key,
            service_pem,
            node_pem,
            node_key,
        };
        let (receipt, _, _) = receipts_for_three_leaves(&not_ca, vec![]).remove(0);
        assert_eq!(
            verify_receipt(&receipt, &not_ca.service_pem, None),
            Err(ReceiptError::ServiceCertNotCa)
        );

        // An intermediate CA passed as the service cert: the chain holds, but it is no root.
        let root = pki(alg);
        let intermediate_key = KeyPair::generate_for(alg).unwrap();
        let intermediate_params = ca_params();
        let root_params = ca_params();
        let intermediate_pem = intermediate_params
            .signed_by(
                &intermediate_key,
                &Issuer::from_params(&root_params, &root.service_key),
            )
            .unwrap()
            .pem();
        let node_pair = KeyPair::generate_for(alg).unwrap();
        let node_pem = node_params()
            .signed_by(
                &node_pair,
                &Issuer::from_params(&intermediate_params, &intermediate_key),
            )
            .unwrap()
            .pem();
        let node_key = EcSigningKey::from_pkcs8_der(node_pair.serialized_der()).unwrap();
        let under = Pki {
            service_key: intermediate_key,
            service_pem: intermediate_pem,
            node_pem,
            node_key,
        };
        let (receipt, _, _) = receipts_for_three_leaves(&under, vec![]).remove(2);
        assert_eq!(
            verify_receipt(&receipt, &under.service_pem, None),
            Err(ReceiptError::ServiceCertNotSelfSigned)
        );
    }

    #[test]
    fn node_key_must_be_usable_ec() {
        let service = pki(&rcgen::PKCS_ECDSA_P384_SHA384);
        let params = ca_params();
        let issuer = Issuer::from_params(&params, &service.service_key);
        let (mut receipt, _, _) = receipts_for_three_leaves(&service, vec![]).remove(0);
        let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        receipt.cert = node_params().signed_by(&ed25519, &issuer).unwrap().pem();
        assert_eq!(
            verify_receipt(&receipt, &service.service_pem, None),
            Err(ReceiptError::NodeCertNotEc)
        );
        let p521 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
        receipt.cert = node_params().signed_by(&p521, &issuer).unwrap().pem();
        assert_eq!(
            verify_receipt(&receipt, &service.service_pem, None),
            Err(ReceiptError::NodeKeyUnsupported(
                SignatureError::UnsupportedCurve
            ))
        );
    }

    proptest::proptest! {
        /// Parsing arbitrary text, and verifying the vector with one character of its JSON
        /// changed, never panics.
        #[test]
        fn never_panics(text in "\\PC{0,200}", at in 0usize..1900, c in proptest::char::range(' ', '~')) {
            let _ = Receipt::from_json(&text);
            let mut json: Vec<char> = RESPONSE_3.chars().collect();
            let at = at % json.len();
            json[at] = c;
            let json: String = json.into_iter().collect();
            if let Ok(response) = serde_json::from_str::<ReceiptResponse>(&json)
                && let Some(receipt) = &response.receipt
            {
                let claims = response.application_claims.as_deref();
                let _ = verify_receipt(receipt, SERVICE_3, claims);
            }
        }
    }

    #[test]
    fn errors_read_well() {
        let e = ReceiptError::EndorsementChain {
            depth: 0,
            reason: CertError::BadSignature,
        };
        assert_eq!(
            e.to_string(),
            "the endorsement chain is broken at link 0 (0 = first endorsement, last = service certificate): the certificate's signature does not verify under the issuer's key"
        );
    }
}
