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
// WebCrypto offers (both hash the message themselves), so it is done here with BigInt
// arithmetic on the NIST curves; `ecdsaVerifyDigest` is checked against node:crypto's own
// signatures in verifier.test.mjs.

import { createHash, createHmac, X509Certificate } from "node:crypto";

// NIST P-256 and P-384 (FIPS 186-4, D.1.2.3 and D.1.2.4), a = -3.
const CURVES = {
  "P-256": {
    p: 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
    n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    gx: 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n,
    gy: 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n,
  },
  "P-384": {
    p: 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffffn,
    n: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
    gx: 0xaa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7n,
    gy: 0x3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5fn,
  },
};

export class ReceiptError extends Error {}

const fail = (message) => {
  throw new ReceiptError(message);
};

// --- big-integer elliptic-curve arithmetic (Jacobian coordinates, a = -3) -----------------------

const mod = (a, m) => ((a % m) + m) % m;

function inverse(a, m) {
  let [r0, r1] = [mod(a, m), m];
  let [s0, s1] = [1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  if (r0 !== 1n) fail("not invertible");
  return mod(s0, m);
}

// Points are [X, Y, Z] with x = X/Z², y = Y/Z³; Z = 0 is the point at infinity.
const INFINITY = [1n, 1n, 0n];

function double([x, y, z], p) {
  if (z === 0n || y === 0n) return INFINITY;
  const zz = (z * z) % p;
  const m = (3n * (x - zz) * (x + zz)) % p; // 3x² + a·z⁴ with a = -3
  const yy = (y * y) % p;
  const s = (4n * x * yy) % p;
  const x3 = mod(m * m - 2n * s, p);
  const y3 = mod(m * (s - x3) - 8n * yy * yy, p);
  const z3 = mod(2n * y * z, p);
  return [x3, y3, z3];
}

function add(a, b, p) {
  if (a[2] === 0n) return b;
  if (b[2] === 0n) return a;
  const [x1, y1, z1] = a;
  const [x2, y2, z2] = b;
  const z1z1 = (z1 * z1) % p;
  const z2z2 = (z2 * z2) % p;
  const u1 = (x1 * z2z2) % p;
  const u2 = (x2 * z1z1) % p;
  const s1 = (y1 * z2 * z2z2) % p;
  const s2 = (y2 * z1 * z1z1) % p;
  const h = mod(u2 - u1, p);
  const r = mod(s2 - s1, p);
  if (h === 0n) return r === 0n ? double(a, p) : INFINITY;
  const hh = (h * h) % p;
  const hhh = (h * hh) % p;
  const v = (u1 * hh) % p;
  const x3 = mod(r * r - hhh - 2n * v, p);
  const y3 = mod(r * (v - x3) - s1 * hhh, p);
  const z3 = (z1 * z2 * h) % p;
  return [x3, y3, z3];
}

/** u1·G + u2·Q (Shamir's trick), as affine x, or null for the point at infinity. */
function combinedX(curve, u1, q, u2) {
  const { p } = curve;
  const g = [curve.gx, curve.gy, 1n];
  const gq = add(g, q, p);
  let acc = INFINITY;
  const bits = Math.max(u1.toString(2).length, u2.toString(2).length);
  for (let i = bits - 1; i >= 0; i--) {
    acc = double(acc, p);
    const b1 = (u1 >> BigInt(i)) & 1n;
    const b2 = (u2 >> BigInt(i)) & 1n;
    if (b1 && b2) acc = add(acc, gq, p);
    else if (b1) acc = add(acc, g, p);
    else if (b2) acc = add(acc, q, p);
  }
  if (acc[2] === 0n) return null;
  const zInv = inverse(acc[2], p);
  return (acc[0] * zInv * zInv) % p;
}

/** u·G as affine [x, y] (used only to check the curve constants against node:crypto keys). */
export function multiplyBase(curveName, u) {
  const curve = CURVES[curveName];
  const { p } = curve;
  let acc = INFINITY;
  for (let i = u.toString(2).length - 1; i >= 0; i--) {
    acc = double(acc, p);
    if ((u >> BigInt(i)) & 1n) acc = add(acc, [curve.gx, curve.gy, 1n], p);
  }
  const zInv = inverse(acc[2], p);
  return [(acc[0] * zInv * zInv) % p, (acc[1] * zInv * zInv * zInv) % p];
}

const bytesToBigInt = (bytes) => (bytes.length === 0 ? 0n : BigInt(`0x${Buffer.from(bytes).toString("hex")}`));

/** Parses a DER `ECDSA-Sig-Value` (SEQUENCE { INTEGER r, INTEGER s }) strictly. */
export function parseDerSignature(der) {
  let offset = 0;
  const length = () => {
    let len = der[offset++];
    if (len === undefined) fail("truncated DER signature");
    if (len & 0x80) {
      const count = len & 0x7f;
      if (count < 1 || count > 2) fail("bad DER length");
      len = 0;
      for (let i = 0; i < count; i++) len = (len << 8) | der[offset++];
    }
    return len;
  };
  const integer = () => {
    if (der[offset++] !== 0x02) fail("DER signature: INTEGER expected");
    const len = length();
    if (len < 1 || offset + len > der.length) fail("DER signature: bad INTEGER length");
    if (der[offset] & 0x80) fail("DER signature: negative INTEGER");
    const value = bytesToBigInt(der.subarray(offset, offset + len));
    offset += len;
    return value;
  };
  if (der[offset++] !== 0x30) fail("DER signature: SEQUENCE expected");
  const seqLen = length();
  if (offset + seqLen !== der.length) fail("DER signature: trailing or missing bytes");
  const r = integer();
  const s = integer();
  if (offset !== der.length) fail("DER signature: trailing bytes inside SEQUENCE");
  return { r, s };
}

/**
 * ECDSA verification (FIPS 186-4 §6.4.2) of `signatureDer` over `digest` taken as the hash
 * value itself. `publicKey` is a node:crypto KeyObject (EC, P-256 or P-384). Returns a boolean.
 */
export function ecdsaVerifyDigest(publicKey, digest, signatureDer) {
  const jwk = publicKey.export({ format: "jwk" });
  const curve = CURVES[jwk.crv];
  if (jwk.kty !== "EC" || !curve) fail(`unsupported node key: ${jwk.kty} ${jwk.crv ?? ""}`);
  const { n } = curve;
  const { r, s } = parseDerSignature(signatureDer);
  if (r < 1n || r >= n || s < 1n || s >= n) return false;
  // e = the leftmost bitlen(n) bits of the digest.
  const nBits = n.toString(2).length;
  let e = bytesToBigInt(digest);
  if (digest.length * 8 > nBits) e >>= BigInt(digest.length * 8 - nBits);
  const w = inverse(s, n);
  const q = [bytesToBigInt(Buffer.from(jwk.x, "base64url")), bytesToBigInt(Buffer.from(jwk.y, "base64url")), 1n];
  const x = combinedX(curve, mod(e * w, n), q, mod(r * w, n));
  return x !== null && mod(x, n) === r;
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
