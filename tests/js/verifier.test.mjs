// The receipt verifier of receipt.mjs, checked on its own (no server): its hashing against the
// official SDK's test vectors (as recomputed in acl-api.md §5.6), and its ECDSA arithmetic
// against node:crypto's own keys and signatures. A verifier that accepted anything would make
// the receipt tests in ledger.test.mjs worthless.

import assert from "node:assert/strict";
import { createHash, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { test } from "node:test";
import { ReceiptError, claimsDigest, ecdsaVerifyDigest, leafHash, merkleRoot, multiplyBase, parseDerSignature } from "./receipt.mjs";

// acl-api.md §5.1 / §5.6: the receipt of the Python SDK's tests (transaction 2.13).
const LEAF_COMPONENTS = {
  claimsDigest: "d08d8764437d09b2d4d07d52293cddaf40f44a3ea2176a0528819a80002df9f6",
  commitEvidence: "ce:2.13:850a25da46643fa41392750b6ca03c7c7d117c27ae14e3322873de6322aa7cd3",
  writeSetDigest: "6637eddb8741ab54cc8a44725be67fd9be390e605f0537e5a278703860ace035",
};
const PROOF = [
  { left: "bcce25aa51854bd15257cfb0c81edc568a5a5fa3b81e7106c125649db93ff599" },
  { left: "cc82daa27e76b7525a1f37ed7379bb80f6aab99f2b36e2e06c750dd9393cd51b" },
  { left: "c53a15cbcc97e30ce748c0f44516ac3440e3e9cc19db0852f3aa3a3d5554dfae" },
];
const LEAF = "ab64db6ebde6fa0427dd5b7d74e1ac3376f463648515a180adc2bb8cfaac4b4a";
const ROOT = "f7b9072e3235ea1f5fe150f7153527bd670009ebbc48a37e4fd6c4428f6fa148";
const CLAIM = {
  kind: "LedgerEntry",
  ledgerEntry: { collectionId: "subledger:0", contents: "Hello world", protocol: "LedgerEntryV1", secretKey: "Jde/VvaIfyrjQ/B19P+UJCBwmcrgN7sERStoyHnYO0M=" },
};
const INNER = "feb516ef1f903c64f1e388d9ee9fde11f64d1e2bc170248828c9eab9894f9ab9";

const hexInt = (b64url) => BigInt(`0x${Buffer.from(b64url, "base64url").toString("hex")}`);

test("leaf, Merkle fold and claims digest match the SDK's test vectors", () => {
  assert.equal(leafHash(LEAF_COMPONENTS).toString("hex"), LEAF);
  assert.equal(merkleRoot(Buffer.from(LEAF, "hex"), PROOF).toString("hex"), ROOT);
  assert.equal(merkleRoot(Buffer.from(LEAF, "hex"), []).toString("hex"), LEAF, "an empty proof: root = leaf");
  assert.equal(claimsDigest([CLAIM]), LEAF_COMPONENTS.claimsDigest);
  assert.equal(claimsDigest([{ kind: "ClaimDigest", digest: { protocol: "LedgerEntryV1", value: INNER } }]), LEAF_COMPONENTS.claimsDigest);
  // {right: R} hashes h ‖ R, not R ‖ h.
  const right = merkleRoot(Buffer.from(LEAF, "hex"), [{ right: PROOF[0].left }]).toString("hex");
  assert.equal(right, createHash("sha256").update(Buffer.from(LEAF + PROOF[0].left, "hex")).digest("hex"));
  assert.throws(() => merkleRoot(Buffer.from(LEAF, "hex"), [{ left: PROOF[0].left, right: PROOF[1].left }]), ReceiptError);
  assert.throws(() => merkleRoot(Buffer.from(LEAF, "hex"), [{}]), ReceiptError);
});

test("the curve constants are right: d·G is node:crypto's public key", () => {
  for (const curve of ["P-256", "P-384"]) {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: curve });
    const jwk = privateKey.export({ format: "jwk" });
    assert.deepEqual(multiplyBase(curve, hexInt(jwk.d)), [hexInt(jwk.x), hexInt(jwk.y)], curve);
  }
});

test("ECDSA over a given digest agrees with node:crypto's signatures, and only with them", () => {
  for (const curve of ["P-256", "P-384"]) {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: curve });
    const { publicKey: otherKey } = generateKeyPairSync("ec", { namedCurve: curve });
    // SHA-256 is the receipts' case (a 32-byte root, shorter than P-384's order: no truncation);
    // SHA-384/512 on P-256 exercise the truncation to the order's bit length.
    for (const hash of ["sha256", "sha384", "sha512"]) {
      const message = randomBytes(64);
      const digest = createHash(hash).update(message).digest();
      const signature = sign(hash, message, privateKey); // DER, as in receipts
      const what = `${curve} ${hash}`;
      assert.equal(ecdsaVerifyDigest(publicKey, digest, signature), true, `${what}: a genuine signature`);
      const otherDigest = Buffer.from(digest);
      otherDigest[0] ^= 1; // (the last bytes of a digest longer than the order are not used)
      assert.equal(ecdsaVerifyDigest(publicKey, otherDigest, signature), false, `${what}: another digest`);
      assert.equal(ecdsaVerifyDigest(otherKey, digest, signature), false, `${what}: another key`);
      const { r, s } = parseDerSignature(signature);
      const n = curve === "P-256" ? 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n : 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n;
      // The other valid form of the same signature, (r, n - s), verifies too; (r, s + 1) does not.
      assert.equal(ecdsaVerifyDigest(publicKey, digest, derSignature(r, n - s)), true, `${what}: (r, n - s)`);
      assert.equal(ecdsaVerifyDigest(publicKey, digest, derSignature(r, s + 1n)), false, `${what}: s + 1`);
      assert.equal(ecdsaVerifyDigest(publicKey, digest, derSignature(r, 0n)), false, `${what}: s = 0`);
    }
  }
});

test("malformed DER signatures are errors", () => {
  const { r, s } = { r: 5n, s: 7n };
  const good = derSignature(r, s);
  assert.deepEqual(parseDerSignature(good), { r, s });
  assert.throws(() => parseDerSignature(good.subarray(0, good.length - 1)), ReceiptError, "truncated");
  assert.throws(() => parseDerSignature(Buffer.concat([good, Buffer.from([0])])), ReceiptError, "trailing byte");
  assert.throws(() => parseDerSignature(Buffer.from([0x31, ...good.subarray(1)])), ReceiptError, "not a SEQUENCE");
});

/** DER SEQUENCE { INTEGER r, INTEGER s } (short-form lengths; enough for P-256/P-384). */
function derSignature(r, s) {
  const integer = (v) => {
    let hex = v.toString(16);
    if (hex.length % 2) hex = `0${hex}`;
    let bytes = Buffer.from(hex, "hex");
    if (bytes[0] & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
    return Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]);
  };
  const body = Buffer.concat([integer(r), integer(s)]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}
