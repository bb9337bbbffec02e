// A small, independent verifier of ACL write receipts, written with node:crypto only.
//
// The JavaScript SDK ships no receipt verifier (it returns receipts as raw JSON), so this
// follows the recipe of /work/shared/reference/acl-api.md §5.3 — the steps of the Python SDK's
// `verify_receipt` and of CCF's `ccf.receipt` (as used in tests/python/test_receipts.py):
//
//   1. every endorser in `serviceEndorsements + [service certificate]` signed the previous
//      certificate, starting with the node certificate `cert`;
//   2. leaf = SHA-256(writeSetDigest ‖ SHA-256(commitEvidence) ‖ claimsDigest);
//   3. fold `proof` from the leaf upwards: {left: L} → SHA-256(L ‖ h), {right: R} → SHA-256(h ‖ R);
//   4. `nodeId`, when present, is SHA-256 of the node key's DER SubjectPublicKeyInfo;
//   5. `signature` (base64 DER ECDSA) by the node key over the 32-byte root, used as the
//      message digest itself (pre-hashed, not hashed again).
//
// Step 5 needs ECDSA verification of a pre-hashed digest, which neither node:crypto nor
// WebCrypto offers (both hash the message themselves). The BigInt arithmetic that does it is the
// one of the web verifier (crates/ledger-web/assets/verify.mjs); `ecdsaVerifyDigest` is checked
// against node:crypto's own signatures in verifier.test.mjs.

import { createHash, createHmac, X509Certificate } from "node:crypto";
import * as webVerifier from "../../crates/ledger-web/assets/verify.mjs";

export { multiplyBase } from "../../crates/ledger-web/assets/verify.mjs";

export class ReceiptError extends Error {}

const fail = (message) => {
  throw new ReceiptError(message);
};

/** Parses a DER `ECDSA-Sig-Value` (SEQUENCE { INTEGER r, INTEGER s }) strictly. */
export function parseDerSignature(der) {
  try {
    return webVerifier.parseDerSignature(new Uint8Array(der));
  } catch (e) {
    return fail(e.message);
  }
}

/**
 * ECDSA verification (FIPS 186-4 §6.4.2) of `signatureDer` over `digest` taken as the hash
 * value itself. `publicKey` is a node:crypto KeyObject (EC, P-256 or P-384). Returns a boolean.
 */
export function ecdsaVerifyDigest(publicKey, digest, signatureDer) {
  const jwk = publicKey.export({ format: "jwk" });
  if (jwk.kty !== "EC" || !["P-256", "P-384"].includes(jwk.crv)) fail(`unsupported node key: ${jwk.kty} ${jwk.crv ?? ""}`);
  const coordinate = (b64url) => BigInt(`0x${Buffer.from(b64url, "base64url").toString("hex")}`);
  try {
    return webVerifier.ecdsaVerifyDigest({ curve: jwk.crv, x: coordinate(jwk.x), y: coordinate(jwk.y) }, new Uint8Array(digest), new Uint8Array(signatureDer));
  } catch (e) {
    return fail(e.message); // a malformed DER signature
  }
}

// --- the receipt ----------------------------------------------------------------------------------

const sha256 = (...parts) => {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  return hash.digest();
};

function hexBytes(value, what) {
  if (typeof value !== "string" || !/^[0-9a-fA-F]{64}$/.test(value)) fail(`${what} is not 32 bytes of hex: ${JSON.stringify(value)}`);
  return Buffer.from(value, "hex");
}

function strictBase64(value, what) {
  if (typeof value !== "string" || value.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) {
    fail(`${what} is not standard padded base64`);
  }
  return Buffer.from(value, "base64");
}

/** leaf = SHA-256(writeSetDigest ‖ SHA-256(utf8(commitEvidence)) ‖ claimsDigest). */
export function leafHash(leafComponents) {
  if (leafComponents === null || typeof leafComponents !== "object") fail("leafComponents missing");
  const { writeSetDigest, commitEvidence, claimsDigest } = leafComponents;
  if (typeof commitEvidence !== "string") fail("commitEvidence missing");
  return sha256(hexBytes(writeSetDigest, "writeSetDigest"), sha256(Buffer.from(commitEvidence, "utf8")), hexBytes(claimsDigest, "claimsDigest"));
}

/** Folds the Merkle path from the leaf up to the root. */
export function merkleRoot(leaf, proof) {
  if (!Array.isArray(proof)) fail("proof is not a list");
  let h = leaf;
  for (const [i, element] of proof.entries()) {
    const keys = Object.keys(element ?? {});
    if (keys.length !== 1 || !["left", "right"].includes(keys[0])) fail(`proof element ${i} must be exactly one of left/right`);
    const sibling = hexBytes(element[keys[0]], `proof[${i}].${keys[0]}`);
    h = keys[0] === "left" ? sha256(sibling, h) : sha256(h, sibling);
  }
  return h;
}

/**
 * The application claims digest (acl-api.md §5.4): per claim, LedgerEntryV1 →
 * SHA-256("LedgerEntryV1" ‖ SHA-256(HMAC(key, collectionId) ‖ HMAC(key, contents))), or
 * ClaimDigest → SHA-256(protocol ‖ value); then SHA-256(u32le(count) ‖ hashes...), hex.
 */
export function claimsDigest(claims) {
  const count = Buffer.alloc(4);
  count.writeUInt32LE(claims.length);
  const hashes = claims.map((claim) => {
    if (claim.kind === "LedgerEntry") {
      const { collectionId, contents, protocol, secretKey } = claim.ledgerEntry;
      if (protocol !== "LedgerEntryV1") fail(`unsupported claim protocol ${protocol}`);
      const key = strictBase64(secretKey, "secretKey");
      const inner = sha256(createHmac("sha256", key).update(collectionId, "utf8").digest(), createHmac("sha256", key).update(contents, "utf8").digest());
      return sha256(Buffer.from(protocol, "utf8"), inner);
    }
    if (claim.kind === "ClaimDigest") {
      return sha256(Buffer.from(claim.digest.protocol, "utf8"), Buffer.from(claim.digest.value, "hex"));
    }
    return fail(`unknown claim kind ${claim.kind}`);
  });
  return sha256(count, ...hashes).toString("hex");
}

/**
 * Verifies `receipt` (the `receipt` member of GET /app/transactions/{id}/receipt) against the
 * service certificate (PEM); with `applicationClaims`, also that they are what the leaf
 * commits to. Throws ReceiptError saying what failed; returns the root (hex) when it verifies.
 */
export function verifyReceipt(receipt, serviceCertPem, applicationClaims = undefined) {
  if (receipt === null || typeof receipt !== "object") fail("no receipt");
  if (typeof receipt.cert !== "string") fail("cert missing");
  const nodeCert = new X509Certificate(receipt.cert);
  if (nodeCert.publicKey.asymmetricKeyType !== "ec") fail("the node key is not an EC key");

  // 1. The node certificate is endorsed by the service certificate (through any endorsements).
  const endorsements = receipt.serviceEndorsements ?? [];
  if (!Array.isArray(endorsements)) fail("serviceEndorsements is not a list");
  let current = nodeCert;
  for (const [i, pem] of [...endorsements, serviceCertPem].entries()) {
    const endorser = new X509Certificate(pem);
    if (!current.verify(endorser.publicKey)) {
      fail(i < endorsements.length ? `certificate not endorsed by serviceEndorsements[${i}]` : "the node certificate is not endorsed by the service certificate");
    }
    current = endorser;
  }

  // 2-3. Leaf and root.
  if (applicationClaims !== undefined && applicationClaims.length > 0) {
    if (claimsDigest(applicationClaims) !== receipt.leafComponents?.claimsDigest) fail("applicationClaims do not match claimsDigest");
  }
  const root = merkleRoot(leafHash(receipt.leafComponents), receipt.proof);

  // 4. nodeId names the signing key.
  const spki = nodeCert.publicKey.export({ type: "spki", format: "der" });
  if (receipt.nodeId !== undefined && sha256(spki).toString("hex") !== String(receipt.nodeId).toLowerCase()) {
    fail("nodeId is not the SHA-256 of the node certificate's public key");
  }

  // 5. The node signed the root (pre-hashed).
  const signature = strictBase64(receipt.signature, "signature");
  if (!ecdsaVerifyDigest(nodeCert.publicKey, root, signature)) fail("the signature over the Merkle root does not verify with the node key");
  return root.toString("hex");
}
