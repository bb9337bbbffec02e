// The evidence verifier of cledger's web pages: checks an evidence package (`cledger notarize`)
// or a receipt fetched from a ledger, in a browser or in Node.js, with nothing but WebCrypto
// and BigInt. It is the same verification as `cledger verify` (ledger-client `evidence.rs`,
// ledger-core `receipt.rs`, `cose.rs`, `witnessed.rs`), reported check by check instead of
// stopping at the first failure, in the order cledger checks, so that the first failing check
// names the same error kind `cledger verify --json` prints.
//
// Why not only WebCrypto: a receipt's signature is ECDSA over the 32-byte Merkle root taken as
// the digest itself (pre-hashed; CCF signs the root, it does not hash it again), and WebCrypto
// always hashes the message first. That one verification is done here with BigInt arithmetic on
// the NIST curves; everything else (SHA-256, HMAC, the certificate chain, the COSE signature,
// Ed25519 checkpoint signatures) is WebCrypto.
//
// No dependency, no network: the page that embeds this module runs under a Content-Security-Policy
// with `connect-src 'none'`.

const subtle = globalThis.crypto.subtle;
const UTF8 = new TextEncoder();
const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true });

export const PACKAGE_VERSION = "cledger-evidence/v1";
export const PROOF_TYPE = "doc-integrity-proof/v1";
const CHECKPOINT_KEY_CONTENT_TYPE = "text/x.cledger.checkpoint-vkey";

/** A failed check: `kind` is the error kind `cledger verify --json` reports for it. */
export class VerifyError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

const fail = (kind, message) => {
  throw new VerifyError(kind, message);
};

// --- bytes ------------------------------------------------------------------------------------

export const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

const equalBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Hex digits (an even number of them, checked by the caller) → bytes. */
const hexBytes = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));

/** 64 hex characters (either case) → 32 bytes, else `null`. */
function hash32(text) {
  return typeof text === "string" && /^[0-9a-fA-F]{64}$/.test(text) ? hexBytes(text) : null;
}

/** Standard, padded, canonical base64 → bytes, else `null` (the strictness of Rust's decoder). */
function base64(text) {
  if (typeof text !== "string" || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  let binary;
  try {
    binary = atob(text);
  } catch {
    return null;
  }
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return toBase64(bytes) === text ? bytes : null; // refuses non-zero padding bits
}

const toBase64 = (bytes) => btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
const base64url = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));

export async function sha256(...parts) {
  return new Uint8Array(await subtle.digest("SHA-256", concat(...parts)));
}

async function hmacSha256(key, message) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, message));
}

/** `view.seqno`, both decimal without leading zeros and at least 1, else `null`. */
export function parseTxId(text) {
  const match = typeof text === "string" && /^([1-9][0-9]*)\.([1-9][0-9]*)$/.exec(text);
  if (!match) return null;
  const [view, seqno] = [Number(match[1]), Number(match[2])];
  return Number.isSafeInteger(view) && Number.isSafeInteger(seqno) ? { view, seqno, text } : null;
}

/** `ce:<txid>:<64 lowercase hex>`: the transaction id it names, else `null`. */
function commitEvidenceTxId(text) {
  const match = typeof text === "string" && /^ce:([^:]*):[0-9a-f]{64}$/.exec(text);
  return match ? parseTxId(match[1]) : null;
}

// --- DER (X.509 certificates, ECDSA signatures) ----------------------------------------------

/** Reads one DER TLV at `offset` of `bytes`: {tag, start (of contents), end, header}. */
function derItem(bytes, offset) {
  const tag = bytes[offset];
  let length = bytes[offset + 1];
  let start = offset + 2;
  if (tag === undefined || length === undefined) throw new Error("truncated DER");
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count < 1 || count > 4) throw new Error("unsupported DER length");
    length = 0;
    for (let i = 0; i < count; i++) {
      const b = bytes[start + i];
      if (b === undefined) throw new Error("truncated DER length");
      length = length * 256 + b;
    }
    if (length < 0x80 || (count > 1 && bytes[start] === 0)) throw new Error("non-minimal DER length");
    start += count;
  }
  const end = start + length;
  if (end > bytes.length) throw new Error("DER item runs past its container");
  return { tag, start, end, offset };
}

/** The items of a constructed DER item's contents. */
function derChildren(bytes, item) {
  const children = [];
  for (let offset = item.start; offset < item.end; ) {
    const child = derItem(bytes, offset);
    if (child.end > item.end) throw new Error("DER item runs past its container");
    children.push(child);
    offset = child.end;
  }
  return children;
}

function derOid(bytes, item) {
  if (item.tag !== 0x06) throw new Error("OID expected");
  const body = bytes.subarray(item.start, item.end);
  const parts = [];
  let value = 0;
  for (const b of body) {
    value = value * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      if (parts.length === 0) parts.push(value < 80 ? Math.floor(value / 40) : 2, value < 80 ? value % 40 : value - 80);
      else parts.push(value);
      value = 0;
    }
  }
  return parts.join(".");
}

const SIGNATURE_HASHES = { "1.2.840.10045.4.3.2": "SHA-256", "1.2.840.10045.4.3.3": "SHA-384", "1.2.840.10045.4.3.4": "SHA-512" };
const NAMED_CURVES = { "1.2.840.10045.3.1.7": "P-256", "1.3.132.0.34": "P-384" };
const EC_PUBLIC_KEY = "1.2.840.10045.2.1";
const BASIC_CONSTRAINTS = "2.5.29.19";

/** The first CERTIFICATE block of a PEM text, as DER. */
export function pemToDer(pem) {
  const match = typeof pem === "string" && /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(pem);
  const der = match && base64(match[1].replace(/\s+/g, ""));
  if (!der) throw new Error("no PEM CERTIFICATE block, or its body is not base64");
  return der;
}

/**
 * Parses what verification needs of an X.509 certificate: the signed part, the signature and
 * its algorithm, the subject key (EC, P-256 or P-384 only: CCF's curves), basicConstraints cA.
 */
export function parseCertificate(der) {
  const cert = derItem(der, 0);
  if (cert.tag !== 0x30 || cert.end !== der.length) throw new Error("not a DER certificate");
  const [tbs, algorithm, signature] = derChildren(der, cert);
  if (!signature || tbs.tag !== 0x30 || algorithm.tag !== 0x30 || signature.tag !== 0x03) throw new Error("not a certificate");
  const fields = derChildren(der, tbs);
  let i = fields[0]?.tag === 0xa0 ? 1 : 0; // [0] version
  const [, tbsAlgorithm, , , , spki] = fields.slice(i);
  if (!spki) throw new Error("the certificate has too few fields");
  const extensions = fields.slice(i + 6).find((f) => f.tag === 0xa3);
  const spkiParts = derChildren(der, spki);
  const keyAlgorithm = derChildren(der, spkiParts[0]);
  const signatureAlgorithm = derOid(der, derChildren(der, algorithm)[0]);
  const certificate = {
    der,
    tbs: der.subarray(tbs.offset, tbs.end),
    signatureAlgorithm,
    algorithmsAgree: equalBytes(der.subarray(algorithm.offset, algorithm.end), der.subarray(tbsAlgorithm.offset, tbsAlgorithm.end)),
    // BIT STRING: a leading "unused bits" byte (0), then the DER ECDSA signature.
    signature: der.subarray(signature.start + 1, signature.end),
    spki: der.subarray(spki.offset, spki.end),
    keyType: derOid(der, keyAlgorithm[0]),
    curve: keyAlgorithm[1]?.tag === 0x06 ? NAMED_CURVES[derOid(der, keyAlgorithm[1])] : undefined,
    isCa: false,
  };
  if (extensions) {
    const list = derChildren(der, derChildren(der, extensions)[0]);
    const found = list.map((e) => derChildren(der, e)).filter((e) => derOid(der, e[0]) === BASIC_CONSTRAINTS);
    if (found.length === 1) {
      const value = found[0][found[0].length - 1]; // OCTET STRING holding BasicConstraints
      const inner = derItem(der, value.start);
      const first = derChildren(der, inner)[0];
      certificate.isCa = first?.tag === 0x01 && der[first.start] === 0xff;
    }
  }
  return certificate;
}

async function importEcKey(cert) {
  if (cert.keyType !== EC_PUBLIC_KEY) throw new Error("the public key is not an elliptic-curve key");
  if (!cert.curve) throw new Error("the EC key is on a curve other than P-256 and P-384");
  return subtle.importKey("spki", cert.spki, { name: "ECDSA", namedCurve: cert.curve }, true, ["verify"]);
}

const COORDINATE_BYTES = { "P-256": 32, "P-384": 48 };

/** DER `ECDSA-Sig-Value` → the fixed-width r ‖ s WebCrypto verifies; `null` if it is not one. */
function derSignatureToRaw(der, curve) {
  let rs;
  try {
    rs = parseDerSignature(der);
  } catch {
    return null;
  }
  const width = COORDINATE_BYTES[curve];
  const fixed = (n) => {
    const hex = n.toString(16);
    return hex.length > width * 2 ? null : hexBytes(hex.padStart(width * 2, "0"));
  };
  const [r, s] = [fixed(rs.r), fixed(rs.s)];
  return r && s ? concat(r, s) : null;
}

/** Whether `issuer`'s key signed `child` (names, extensions and dates are not looked at). */
async function issuedBy(child, issuer) {
  if (!child.algorithmsAgree) throw new Error("the certificate's two signature algorithm fields differ");
  const hash = SIGNATURE_HASHES[child.signatureAlgorithm];
  if (!hash) throw new Error(`unsupported signature algorithm ${child.signatureAlgorithm}`);
  const key = await importEcKey(issuer);
  const raw = derSignatureToRaw(child.signature, issuer.curve);
  return raw !== null && subtle.verify({ name: "ECDSA", hash }, key, raw, child.tbs);
}

/** SHA-256 of a certificate's DER as `AA:BB:…`, the fingerprint `openssl x509 -fingerprint -sha256` prints. */
export async function certificateFingerprint(pem) {
  const digest = await sha256(pemToDer(pem));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0").toUpperCase()).join(":");
}

// --- ECDSA over a given digest (BigInt; see the top of the file for why) ---------------------

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

const mod = (a, m) => ((a % m) + m) % m;

function inverse(a, m) {
  let [r0, r1] = [mod(a, m), m];
  let [s0, s1] = [1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  if (r0 !== 1n) throw new Error("not invertible");
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
  return [x3, y3, mod(2n * y * z, p)];
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
  return [x3, y3, (z1 * z2 * h) % p];
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

/** u·G as affine [x, y] (to check the curve constants against other implementations' keys). */
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

const bytesToBigInt = (bytes) => (bytes.length === 0 ? 0n : BigInt(`0x${toHex(bytes)}`));

/** Parses a DER `ECDSA-Sig-Value` (SEQUENCE { INTEGER r, INTEGER s }) strictly; throws if malformed. */
export function parseDerSignature(der) {
  const seq = derItem(der, 0);
  if (seq.tag !== 0x30 || seq.end !== der.length) throw new Error("DER signature: one SEQUENCE expected");
  const parts = derChildren(der, seq);
  if (parts.length !== 2) throw new Error("DER signature: two INTEGERs expected");
  const [r, s] = parts.map((item) => {
    if (item.tag !== 0x02 || item.end === item.start) throw new Error("DER signature: INTEGER expected");
    if (der[item.start] & 0x80) throw new Error("DER signature: negative INTEGER");
    return bytesToBigInt(der.subarray(item.start, item.end));
  });
  return { r, s };
}

/**
 * ECDSA verification (FIPS 186-4 §6.4.2) of `signatureDer` over `digest` taken as the hash value
 * itself. `key` is `{ curve: "P-256" | "P-384", x: BigInt, y: BigInt }`. Returns a boolean.
 */
export function ecdsaVerifyDigest(key, digest, signatureDer) {
  const curve = CURVES[key.curve];
  if (!curve) throw new Error(`unsupported curve ${key.curve}`);
  const { n } = curve;
  const { r, s } = parseDerSignature(signatureDer);
  if (r < 1n || r >= n || s < 1n || s >= n) return false;
  // e = the leftmost bitlen(n) bits of the digest.
  const nBits = n.toString(2).length;
  let e = bytesToBigInt(digest);
  if (digest.length * 8 > nBits) e >>= BigInt(digest.length * 8 - nBits);
  const w = inverse(s, n);
  const x = combinedX(curve, mod(e * w, n), [key.x, key.y, 1n], mod(r * w, n));
  return x !== null && mod(x, n) === r;
}

async function ecPoint(cert) {
  const jwk = await subtle.exportKey("jwk", await importEcKey(cert));
  return { curve: jwk.crv, x: bytesToBigInt(base64url(jwk.x)), y: bytesToBigInt(base64url(jwk.y)) };
}

// --- Merkle trees -----------------------------------------------------------------------------

/** CCF's leaf: SHA-256(writeSetDigest ‖ SHA-256(commitEvidence) ‖ claimsDigest). */
async function leafHash(writeSetDigest, commitEvidence, claimsDigest) {
  return sha256(writeSetDigest, await sha256(UTF8.encode(commitEvidence)), claimsDigest);
}

/** Folds `path` ([{left: bool, hash}]) from `leaf` up; `prefix` is RFC 6962's 0x01 (CCF: none). */
async function foldPath(leaf, path, prefix = new Uint8Array(0)) {
  let h = leaf;
  for (const step of path) h = step.left ? await sha256(prefix, step.hash, h) : await sha256(prefix, h, step.hash);
  return h;
}

/**
 * The sides of the audit path of leaf `index` in a tree of `size` leaves (RFC 9162 §2.1.3.2;
 * CCF's tree has the same shape): `true` where the sibling is on the left.
 */
function pathShape(index, size) {
  const sides = [];
  let [fn, sn] = [BigInt(index), BigInt(size) - 1n];
  while (sn !== 0n) {
    if ((fn & 1n) === 1n || fn === sn) {
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
      sides.push(true);
    } else {
      sides.push(false);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sides;
}

/** Why `path` is not the path of leaf `index` in a tree of `size` leaves, or `null`. */
function pathShapeError(path, index, size) {
  if (size < 1 || index >= size) return `leaf ${index} is not in a tree of ${size} leaves`;
  const sides = pathShape(index, size);
  if (sides.length !== path.length) return `the path has ${path.length} steps, leaf ${index} of ${size} needs ${sides.length}`;
  const wrong = path.findIndex((step, i) => step.left !== sides[i]);
  return wrong === -1 ? null : `step ${wrong} of the path is on the wrong side for leaf ${index} of ${size}`;
}

// --- CBOR (RFC 8949), strict: shortest heads, definite lengths, no floats ---------------------

class CborReader {
  constructor(bytes) {
    this.bytes = bytes;
    this.offset = 0;
  }

  head() {
    const first = this.bytes[this.offset++];
    if (first === undefined) throw new Error("truncated CBOR");
    const [major, info] = [first >> 5, first & 31];
    if (info < 24) return { major, value: info };
    // Floats, and simple values in two bytes, have no place in CCF's receipts.
    if (major === 7) throw new Error("unsupported CBOR simple value or float");
    const width = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
    if (!width) throw new Error(info === 31 ? "indefinite-length CBOR is not deterministic" : "reserved CBOR head");
    if (this.offset + width > this.bytes.length) throw new Error("truncated CBOR");
    let value = 0n;
    for (let i = 0; i < width; i++) value = (value << 8n) | BigInt(this.bytes[this.offset++]);
    const minimum = { 1: 24n, 2: 256n, 4: 65536n, 8: 1n << 32n }[width];
    if (value < minimum) throw new Error("CBOR head is not in its shortest form");
    return { major, value: value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value };
  }

  take(length) {
    if (typeof length !== "number" || this.offset + length > this.bytes.length) throw new Error("CBOR string runs past the end");
    const out = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }

  /** One item: numbers, Uint8Array, strings, arrays, Map (keys: numbers and strings), {tag, value}, booleans, null. */
  item(depth = 0) {
    if (depth > 16) throw new Error("CBOR nested too deeply");
    const { major, value } = this.head();
    switch (major) {
      case 0:
        return value;
      case 1:
        return typeof value === "number" ? -1 - value : -1n - value;
      case 2:
        return this.take(value);
      case 3:
        return UTF8_STRICT.decode(this.take(value));
      case 4:
        return Array.from({ length: this.count(value) }, () => this.item(depth + 1));
      case 5: {
        const map = new Map();
        for (let i = this.count(value); i > 0; i--) {
          const key = this.item(depth + 1);
          if (typeof key !== "number" && typeof key !== "string") throw new Error("CBOR map key is not an integer or text");
          if (map.has(key)) throw new Error("duplicate CBOR map key");
          map.set(key, this.item(depth + 1));
        }
        return map;
      }
      case 6:
        return { tag: value, value: this.item(depth + 1) };
      default:
        if (value === 20 || value === 21) return value === 21;
        if (value === 22) return null;
        throw new Error("unsupported CBOR simple value or float");
    }
  }

  count(value) {
    if (typeof value !== "number" || value > this.bytes.length) throw new Error("CBOR length larger than the input");
    return value;
  }
}

/** Decodes exactly one CBOR item filling `bytes`. */
export function decodeCbor(bytes) {
  const reader = new CborReader(bytes);
  const value = reader.item();
  if (reader.offset !== bytes.length) throw new Error("bytes after the CBOR item");
  return value;
}

function cborHead(major, length) {
  if (length < 24) return Uint8Array.of((major << 5) | length);
  if (length < 256) return Uint8Array.of((major << 5) | 24, length);
  if (length < 65536) return Uint8Array.of((major << 5) | 25, length >> 8, length & 255);
  return Uint8Array.of((major << 5) | 26, length >>> 24, (length >> 16) & 255, (length >> 8) & 255, length & 255);
}

const cborBytes = (bytes) => concat(cborHead(2, bytes.length), bytes);

/** RFC 9052 §4.4 Sig_structure of a COSE_Sign1 with empty external data. */
function sigStructure(protectedBytes, payload) {
  const context = UTF8.encode("Signature1");
  return concat(cborHead(4, 4), cborHead(3, context.length), context, cborBytes(protectedBytes), cborBytes(new Uint8Array(0)), cborBytes(payload));
}

// --- COSE (CCF 7 receipts, the checkpoint key's endorsement) ----------------------------------

const COSE_ALGORITHMS = { "P-384": -35, "P-256": -7 };
const COSE_HASHES = { "P-384": "SHA-384", "P-256": "SHA-256" };

/** Parses a tagged COSE_Sign1 and checks its protected header names the service key. */
async function coseSign1(bytes, serviceCert) {
  const message = decodeCbor(bytes);
  if (message?.tag !== 18 || !Array.isArray(message.value) || message.value.length !== 4) throw new Error("not a tagged COSE_Sign1");
  const [protectedBytes, unprotected, payload, signature] = message.value;
  if (!(protectedBytes instanceof Uint8Array) || !(unprotected instanceof Map) || !(signature instanceof Uint8Array)) {
    throw new Error("not a COSE_Sign1");
  }
  const header = decodeCbor(protectedBytes);
  if (!(header instanceof Map)) throw new Error("the protected header is not a map");
  const curve = serviceCert.curve;
  if (header.get(1) !== COSE_ALGORITHMS[curve]) throw new Error(`the algorithm is not ${COSE_ALGORITHMS[curve]} (ECDSA on the service key's ${curve})`);
  const kid = UTF8.encode(toHex(await sha256(serviceCert.spki)));
  if (!(header.get(4) instanceof Uint8Array) || !equalBytes(header.get(4), kid)) throw new Error("the key id is not the service key's");
  if (signature.length !== COORDINATE_BYTES[curve] * 2) throw new Error(`the signature is not ${COORDINATE_BYTES[curve] * 2} bytes`);
  const verify = async (signedPayload) => {
    const key = await importEcKey(serviceCert);
    return subtle.verify({ name: "ECDSA", hash: COSE_HASHES[curve] }, key, signature, sigStructure(protectedBytes, signedPayload));
  };
  return { header, unprotected, payload, verify };
}

/**
 * Verifies a CCF 7 COSE receipt (detached payload: the root) against the service certificate:
 * every inclusion proof folds to a root the service key signed, at the position its transaction
 * id implies in the tree the signature covers. Returns the proven leaf (hex) and transaction ids.
 */
export async function verifyCoseReceipt(bytes, serviceCert) {
  const { header, unprotected, payload, verify } = await coseSign1(bytes, serviceCert);
  if (payload !== null) throw new Error("the payload is attached (CCF receipts detach the root)");
  if (header.get(395) !== 2) throw new Error("vds (395) is not 2 (CCF_LEDGER_SHA256)");
  const signedTxId = parseTxId(header.get("ccf.v1") instanceof Map ? header.get("ccf.v1").get("txid") : undefined);
  if (!signedTxId) throw new Error('"ccf.v1" has no "txid" transaction id');
  const cwt = header.get(15);
  if (!(cwt instanceof Map) || typeof cwt.get(6) !== "number") throw new Error("the CWT claims (15) have no whole-second iat (6)");
  const proofs = unprotected.get(396) instanceof Map ? unprotected.get(396).get(-1) : undefined;
  if (!Array.isArray(proofs) || proofs.length === 0) throw new Error("no inclusion proof (396 → -1)");
  let proven = null;
  for (const proofBytes of proofs) {
    if (!(proofBytes instanceof Uint8Array)) throw new Error("an inclusion proof is not a byte string");
    const proof = decodeCbor(proofBytes);
    const leaf = proof instanceof Map ? proof.get(1) : undefined;
    const steps = proof instanceof Map ? proof.get(2) : undefined;
    if (!Array.isArray(leaf) || leaf.length !== 3) throw new Error("the proof's leaf is not [write set digest, commit evidence, claims digest]");
    const [writeSet, evidence, claims] = leaf;
    const txid = commitEvidenceTxId(evidence);
    if (!(writeSet instanceof Uint8Array) || writeSet.length !== 32 || !(claims instanceof Uint8Array) || claims.length !== 32 || !txid || evidence.length > 1024) {
      throw new Error("the proof's leaf is malformed");
    }
    if (!Array.isArray(steps) || steps.length > 64) throw new Error("the proof's path is not a list of at most 64 steps");
    const path = steps.map((step) => {
      if (!Array.isArray(step) || step.length !== 2 || typeof step[0] !== "boolean" || !(step[1] instanceof Uint8Array) || step[1].length !== 32) {
        throw new Error("a path step is not [left: bool, hash: 32 bytes]");
      }
      return { left: step[0], hash: step[1] };
    });
    const leafDigest = await leafHash(writeSet, evidence, claims);
    const root = await foldPath(leafDigest, path);
    if (!(await verify(root))) throw new Error("the service key's signature over the root does not verify");
    const shape = pathShapeError(path, txid.seqno, signedTxId.seqno);
    if (shape) throw new Error(shape);
    proven ??= { txid, signedTxId, leaf: toHex(leafDigest), root: toHex(root) };
  }
  return proven;
}

// --- C2SP signed notes and checkpoints ---------------------------------------------------------

/** `name+hex8+base64(type ‖ key)` with its key id checked: {name, keyId, type, key}. */
async function parseVkey(vkey, expectedType) {
  const [name, id, encoded] = [vkey.split("+")[0], vkey.split("+")[1], vkey.split("+").slice(2).join("+")];
  const bytes = base64(encoded);
  if (!name || !/^[0-9a-f]{8}$/i.test(id ?? "") || !bytes || bytes.length !== 33) throw new Error(`${JSON.stringify(vkey)} is not a vkey of an Ed25519 key`);
  if (bytes[0] !== expectedType) throw new Error(`${JSON.stringify(vkey)} has signature type ${bytes[0]}, not ${expectedType}`);
  const keyId = toHex((await sha256(UTF8.encode(`${name}\n`), bytes)).subarray(0, 4));
  if (keyId !== id.toLowerCase()) throw new Error(`the key ID of ${JSON.stringify(vkey)} does not match its name and key`);
  return { name, keyId, type: bytes[0], key: bytes.subarray(1) };
}

async function ed25519Verify(publicKey, signature, message) {
  let key;
  try {
    key = await subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    throw new Error(`this browser's WebCrypto has no Ed25519 (${e.message}); checkpoints need it`);
  }
  return subtle.verify({ name: "Ed25519" }, key, signature, message);
}

/** A signed note's text and signature lines ({name, keyId (hex), signature}). */
function parseNote(note) {
  if (typeof note !== "string" || !note.endsWith("\n")) throw new Error("the note does not end with a newline");
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw new Error("the note has no signatures");
  const text = note.slice(0, split + 1);
  const lines = note.slice(split + 2, -1).split("\n");
  const signatures = lines.map((line, i) => {
    const match = /^\u2014 ([^\s+]+) ([A-Za-z0-9+/=]+)$/.exec(line);
    const bytes = match && base64(match[2]);
    if (!bytes || bytes.length < 5) throw new Error(`signature line ${i + 1} is malformed`);
    return { name: match[1], keyId: toHex(bytes.subarray(0, 4)), signature: bytes.subarray(4) };
  });
  return { text, signatures };
}

/** The origin, size and root of a checkpoint's text. */
function parseCheckpoint(text) {
  const lines = text.slice(0, -1).split("\n");
  const size = /^(0|[1-9][0-9]*)$/.test(lines[1] ?? "") ? Number(lines[1]) : NaN;
  const root = base64(lines[2]);
  if (lines.length < 3 || !lines[0] || !Number.isSafeInteger(size) || !root || root.length !== 32) throw new Error("the checkpoint text is not origin, size, root");
  return { origin: lines[0], size, root };
}

/**
 * Checks an evidence package's checkpoint for the entry whose CCF leaf is `leafHex` at `seqno`:
 * the service key vouches for the checkpoint key, which signed the checkpoint, whose RFC 6962
 * tree includes the leaf; and each witness of `witnessVkeys` cosigned it (`cosignature/v1`).
 */
export async function verifyCheckpoint(evidence, leafHex, seqno, serviceCert, witnessVkeys = []) {
  const endorsement = base64(evidence?.checkpointKey?.endorsement);
  if (!endorsement) throw new VerifyError("Checkpoint", "the checkpoint key's endorsement is not base64");
  let vkey;
  try {
    const statement = await coseSign1(endorsement, serviceCert);
    if (statement.header.get(3) !== CHECKPOINT_KEY_CONTENT_TYPE) throw new Error(`the content type is not ${CHECKPOINT_KEY_CONTENT_TYPE}`);
    if (!(statement.payload instanceof Uint8Array) || !(await statement.verify(statement.payload))) throw new Error("the service key's signature does not verify");
    if (UTF8_STRICT.decode(statement.payload) !== evidence.checkpointKey.vkey) throw new Error("the statement names another key");
    vkey = await parseVkey(evidence.checkpointKey.vkey, 0x01);
  } catch (e) {
    throw new VerifyError("Checkpoint", `the checkpoint key is not vouched for by the service key: ${e.message}`);
  }
  let note;
  let checkpoint;
  try {
    note = parseNote(evidence.checkpoint);
    checkpoint = parseCheckpoint(note.text);
  } catch (e) {
    throw new VerifyError("Checkpoint", `the checkpoint: ${e.message}`);
  }
  const text = UTF8.encode(note.text);
  const signedBy = async (key, check) => {
    const mine = note.signatures.filter((s) => s.name === key.name && s.keyId === key.keyId);
    for (const s of mine) if (!(await check(s.signature))) throw new Error(`the signature of ${key.name} does not verify`);
    return mine.length > 0;
  };
  try {
    if (!(await signedBy(vkey, (sig) => ed25519Verify(vkey.key, sig, text)))) throw new Error("no signature of the checkpoint key");
  } catch (e) {
    throw new VerifyError("Checkpoint", `the checkpoint is not signed by the ledger's checkpoint key: ${e.message}`);
  }
  const notIncluded = (reason) => new VerifyError("Checkpoint", `the entry (leaf ${evidence.leafIndex}) is not in the checkpoint's tree of ${checkpoint.size} leaves: ${reason}`);
  if (evidence.leafIndex !== seqno) throw notIncluded("the proof is for another leaf than the entry's");
  const hashes = Array.isArray(evidence.proof) ? evidence.proof.map(hash32) : [null];
  if (hashes.includes(null)) throw notIncluded("a proof hash is not 32 bytes of hex");
  const sides = seqno < checkpoint.size ? pathShape(seqno, checkpoint.size) : null;
  if (!sides || sides.length !== hashes.length) throw notIncluded("the proof does not have the length its position needs");
  const path = hashes.map((hash, i) => ({ left: sides[i], hash }));
  const leaf = await sha256(Uint8Array.of(0), hash32(leafHex));
  if (!equalBytes(await foldPath(leaf, path, Uint8Array.of(1)), checkpoint.root)) throw notIncluded("the root the proof leads to is not the checkpoint's");
  const cosignedBy = [];
  for (const witnessVkey of witnessVkeys) {
    let witness;
    try {
      witness = await parseVkey(witnessVkey.trim(), 0x04);
    } catch (e) {
      throw new VerifyError("Checkpoint", `the witness vkey is not usable: ${e.message}`);
    }
    const cosigned = await signedBy(witness, async (sig) => {
      if (sig.length !== 72) return false;
      const time = new DataView(sig.buffer, sig.byteOffset, 8).getBigUint64(0);
      if (time > (1n << 63n) - 1n) return false;
      return ed25519Verify(witness.key, sig.subarray(8), UTF8.encode(`cosignature/v1\ntime ${time}\n${note.text}`));
    }).catch(() => false);
    if (!cosigned) {
      throw new VerifyError("NotCosigned", `the checkpoint is not cosigned by witness ${witness.name}: the witness did not accept this ledger state (it may have seen a different history for this ledger: a split view)`);
    }
    cosignedBy.push(witness.name);
  }
  return { origin: checkpoint.origin, size: checkpoint.size, cosignedBy, uncheckedSignatures: Math.max(0, note.signatures.length - 1 - cosignedBy.length) };
}

// --- application claims ------------------------------------------------------------------------

/**
 * The application claims digest (acl-api.md §5.4): per claim, LedgerEntryV1 →
 * SHA-256("LedgerEntryV1" ‖ SHA-256(HMAC(key, collectionId) ‖ HMAC(key, contents))), or
 * ClaimDigest → SHA-256(protocol ‖ value); then SHA-256(u32le(count) ‖ hashes…), as hex.
 */
export async function claimsDigest(claims) {
  if (!Array.isArray(claims) || claims.length === 0) throw new Error("an application claims list must not be empty");
  const hashes = [];
  for (const claim of claims) {
    if (claim?.kind === "LedgerEntry") {
      const { collectionId, contents, protocol, secretKey } = claim.ledgerEntry ?? {};
      if (protocol !== "LedgerEntryV1") throw new Error(`unsupported claim protocol ${JSON.stringify(protocol)} (only LedgerEntryV1 exists)`);
      if (typeof collectionId !== "string" || typeof contents !== "string") throw new Error("a LedgerEntry claim needs collectionId and contents");
      const key = base64(secretKey);
      if (!key) throw new Error("the claim's secretKey is not standard padded base64");
      const inner = await sha256(await hmacSha256(key, UTF8.encode(collectionId)), await hmacSha256(key, UTF8.encode(contents)));
      hashes.push(await sha256(UTF8.encode(protocol), inner));
    } else if (claim?.kind === "ClaimDigest") {
      const { protocol, value } = claim.digest ?? {};
      if (typeof protocol !== "string" || typeof value !== "string" || !/^([0-9a-fA-F]{2})*$/.test(value)) throw new Error("the ClaimDigest value is not hex");
      hashes.push(await sha256(UTF8.encode(protocol), hexBytes(value)));
    } else {
      throw new Error(`unknown claim kind ${JSON.stringify(claim?.kind)}`);
    }
  }
  const count = new Uint8Array(4);
  new DataView(count.buffer).setUint32(0, claims.length, true);
  return toHex(await sha256(count, ...hashes));
}

// --- reports -----------------------------------------------------------------------------------

/** What each check establishes, for people reading the report. */
export const CHECK_TITLES = {
  package: "The package is a cledger evidence package",
  "service-certificate": "The service certificate is the one you pinned",
  "claims-digest": "The entry's claims match the receipt's claims digest",
  "certificate-chain": "The node certificate chains to the service certificate",
  inclusion: "The inclusion path leads from the entry's leaf to a root",
  signature: "The ledger node signed that root",
  "transaction-id": "The transaction id is the one the receipt proves",
  "cose-receipt": "The COSE receipt (CCF 7) proves the same transaction",
  checkpoint: "A checkpoint of the ledger includes the entry",
  entry: "The entry is the one the receipt's claims reveal",
  document: "The entry records this document's name, size and SHA-256",
  file: "The document's SHA-256 and size match",
};

class Report {
  constructor(ids) {
    this.checks = ids.map((id) => ({ id, title: CHECK_TITLES[id], status: "skip", detail: "not checked" }));
  }

  /** Records a check's outcome; a failure also carries its `cledger verify` error kind. */
  set(id, status, detail, kind = undefined) {
    Object.assign(
      this.checks.find((c) => c.id === id),
      kind === undefined ? { status, detail } : { status, detail, kind },
    );
  }

  /** Runs `check` for `id`: it returns the detail of a pass, or `{skip: reason}`, or throws. */
  async run(id, kind, check) {
    try {
      const outcome = await check();
      if (outcome?.skip) this.set(id, "skip", outcome.skip);
      else this.set(id, "pass", outcome);
    } catch (e) {
      this.set(id, "fail", e.message, e instanceof VerifyError ? e.kind : kind);
    }
  }

  skipRest(reason) {
    for (const c of this.checks) if (c.status === "skip" && c.detail === "not checked") c.detail = reason;
  }

  finish(summary) {
    const failed = this.checks.find((c) => c.status === "fail");
    return { state: failed ? "failed" : "verified", kind: failed?.kind ?? null, checks: this.checks, summary };
  }
}

// --- the JSON receipt ---------------------------------------------------------------------------

/** The shape errors serde reports for a receipt (the `package` check), or `null`. */
function receiptShapeError(receipt) {
  if (receipt === null || typeof receipt !== "object" || Array.isArray(receipt)) return "the receipt is not a JSON object";
  if (typeof receipt.cert !== "string") return "cert must be a string";
  const lc = receipt.leafComponents;
  if (lc === null || typeof lc !== "object") return "leafComponents must be an object";
  for (const key of ["claimsDigest", "commitEvidence", "writeSetDigest"]) if (typeof lc[key] !== "string") return `leafComponents.${key} must be a string`;
  const extra = Object.keys(lc).find((k) => !["claimsDigest", "commitEvidence", "writeSetDigest"].includes(k));
  if (extra) return `unexpected key \`${extra}\` in leafComponents`;
  if (!Array.isArray(receipt.proof)) return "proof must be a list";
  for (const [i, element] of receipt.proof.entries()) {
    const keys = element !== null && typeof element === "object" ? Object.keys(element) : null;
    if (!keys || keys.length !== 1 || !["left", "right"].includes(keys[0]) || typeof element[keys[0]] !== "string") {
      return `proof element ${i} must have exactly one of \`left\` and \`right\`, a string`;
    }
  }
  if (typeof receipt.signature !== "string") return "signature must be a string";
  if (receipt.nodeId !== undefined && typeof receipt.nodeId !== "string") return "nodeId must be a string";
  const endorsements = receipt.serviceEndorsements;
  if (endorsements !== undefined && !(Array.isArray(endorsements) && endorsements.every((e) => typeof e === "string"))) {
    return "serviceEndorsements must be a list of strings";
  }
  return null;
}

/**
 * The receipt checks shared by packages and the explorer, run into `report`: claims digest,
 * certificate chain, inclusion path, signature. Returns what they established (or `null`s).
 */
async function checkReceipt(report, receipt, serviceCertPem, claims) {
  const proven = { serviceCert: null, leaf: null, root: null, txid: null };
  await report.run("claims-digest", "ClaimsDigest", async () => {
    if (!claims) return { skip: "the receipt carries no application claims (written with an api-version before 2023-01-18-preview)" };
    const computed = await claimsDigest(claims);
    if (computed !== receipt.leafComponents.claimsDigest) {
      fail("ClaimsDigest", `the claims digest of the application claims (${computed}) does not match the receipt's claimsDigest (${receipt.leafComponents.claimsDigest})`);
    }
    return `${computed} = SHA-256 of the ${claims.length === 1 ? "claim" : `${claims.length} claims`}`;
  });
  let nodeCert = null;
  await report.run("certificate-chain", "CertChain", async () => {
    try {
      nodeCert = parseCertificate(pemToDer(receipt.cert));
      await importEcKey(nodeCert);
    } catch (e) {
      nodeCert = null;
      throw new Error(`the node certificate is unusable: ${e.message}`);
    }
    const endorsements = receipt.serviceEndorsements ?? [];
    let child = nodeCert;
    const chain = [];
    for (const [depth, pem] of [...endorsements, serviceCertPem].entries()) {
      const link = depth < endorsements.length ? `serviceEndorsements[${depth}]` : "the service certificate";
      let endorser;
      try {
        endorser = parseCertificate(pemToDer(pem));
        if (!(await issuedBy(child, endorser))) throw new Error("its key did not sign the certificate before it");
      } catch (e) {
        throw new Error(`the endorsement chain is broken at ${link}: ${e.message}`);
      }
      chain.push(endorser);
      child = endorser;
    }
    const service = chain[chain.length - 1];
    const notCa = chain.slice(0, -1).findIndex((c) => !c.isCa);
    if (notCa !== -1) throw new Error(`service endorsement ${notCa} is not a CA certificate`);
    if (!service.isCa) throw new Error("the service certificate is not a CA certificate (basicConstraints CA:TRUE)");
    if (!(await issuedBy(service, service).catch(() => false))) throw new Error("the service certificate is not self-signed");
    proven.serviceCert = service;
    return `node certificate (${nodeCert.curve}) ← ${endorsements.length ? `${endorsements.length} endorsement(s) ← ` : ""}service certificate`;
  });
  await report.run("inclusion", "ReceiptInvalid", async () => {
    const lc = receipt.leafComponents;
    const [writeSet, claimsHash] = [hash32(lc.writeSetDigest), hash32(lc.claimsDigest)];
    if (!writeSet) fail("ReceiptInvalid", "leafComponents.writeSetDigest is malformed");
    const txid = commitEvidenceTxId(lc.commitEvidence);
    if (!txid) fail("ReceiptInvalid", "leafComponents.commitEvidence is malformed");
    if (!claimsHash) fail("ReceiptInvalid", "leafComponents.claimsDigest is malformed");
    const path = receipt.proof.map((element, index) => {
      const [side] = Object.keys(element);
      const hash = hash32(element[side]);
      if (!hash) fail("ReceiptInvalid", `proof element ${index} is not a 64-character hex hash`);
      return { left: side === "left", hash };
    });
    const leaf = await leafHash(writeSet, lc.commitEvidence, claimsHash);
    const root = await foldPath(leaf, path);
    Object.assign(proven, { leaf: toHex(leaf), root: toHex(root), txid });
    return `leaf ${toHex(leaf)} of transaction ${txid.text}, ${path.length} step(s) up to root ${toHex(root)}`;
  });
  await report.run("signature", "ReceiptSignature", async () => {
    if (!nodeCert) return { skip: "not checked: the node certificate is unusable" };
    if (!proven.root) return { skip: "not checked: there is no root to check (the inclusion path failed)" };
    const spkiHash = toHex(await sha256(nodeCert.spki));
    if (receipt.nodeId !== undefined && receipt.nodeId.toLowerCase() !== spkiHash) fail("ReceiptSignature", "nodeId is not SHA-256 of the node certificate's public key");
    const signature = base64(receipt.signature);
    if (!signature) fail("ReceiptSignature", "the signature is not standard padded base64");
    let valid;
    try {
      valid = ecdsaVerifyDigest(await ecPoint(nodeCert), hash32(proven.root), signature);
    } catch (e) {
      fail("ReceiptSignature", `the signature is malformed: ${e.message}`);
    }
    if (!valid) {
      fail("ReceiptSignature", "the node's signature over the Merkle root does not verify: the entry, the path or the signature was altered, or another key signed it");
    }
    return `ECDSA ${nodeCert.curve} signature by node ${spkiHash.slice(0, 16)}… over root ${proven.root}`;
  });
  return proven;
}

// --- packages -----------------------------------------------------------------------------------

const PACKAGE_CHECKS = Object.keys(CHECK_TITLES);

/** The `package` check: the shape serde requires of an `EvidencePackage`. */
function packageShapeError(pkg) {
  if (pkg === null || typeof pkg !== "object" || Array.isArray(pkg)) return "it is not a JSON object";
  if (pkg.version !== PACKAGE_VERSION) return `version is ${JSON.stringify(pkg.version)}, expected ${JSON.stringify(PACKAGE_VERSION)}`;
  const strings = [
    ["entry.collectionId", pkg.entry?.collectionId],
    ["entry.contents", pkg.entry?.contents],
    ["entry.transactionId", pkg.entry?.transactionId],
    ["transactionId", pkg.transactionId],
    ["receipt.state", pkg.receipt?.state],
    ["receipt.transactionId", pkg.receipt?.transactionId],
    ["serviceCertificate", pkg.serviceCertificate],
    ["document.name", pkg.document?.name],
    ["document.sha256", pkg.document?.sha256],
  ];
  const missing = strings.find(([, v]) => typeof v !== "string");
  if (missing) return `${missing[0]} must be a string`;
  if (!Number.isSafeInteger(pkg.document.size) || pkg.document.size < 0) return "document.size must be a whole number of bytes";
  if (pkg.coseReceipt !== undefined && typeof pkg.coseReceipt !== "string") return "coseReceipt must be a string";
  if (pkg.checkpoint !== undefined) {
    const c = pkg.checkpoint;
    if (typeof c?.checkpoint !== "string" || typeof c.checkpointKey?.vkey !== "string" || typeof c.checkpointKey?.endorsement !== "string" || !Number.isSafeInteger(c.leafIndex) || !Array.isArray(c.proof)) {
      return "checkpoint is not {checkpoint, checkpointKey {vkey, endorsement}, leafIndex, proof}";
    }
  }
  if (pkg.receipt.receipt === undefined) return "the receipt response holds no receipt";
  const shape = receiptShapeError(pkg.receipt.receipt);
  if (shape) return `receipt: ${shape}`;
  const claims = pkg.receipt.applicationClaims;
  if (!Array.isArray(claims) || claims.length === 0) return "the receipt has no applicationClaims binding the entry";
  return null;
}

/** The document an entry records: the `doc-integrity-proof/v1` contents, checked. */
function documentProof(contents) {
  let proof;
  try {
    proof = JSON.parse(contents);
  } catch (e) {
    fail("NotAProof", `the entry is not a doc-integrity-proof/v1 record: ${e.message}`);
  }
  const ok =
    proof !== null &&
    typeof proof === "object" &&
    typeof proof.type === "string" &&
    typeof proof.name === "string" &&
    Number.isSafeInteger(proof.size) &&
    proof.size >= 0 &&
    typeof proof.sha256 === "string" &&
    typeof proof.time === "string" &&
    (proof.note === undefined || proof.note === null || typeof proof.note === "string");
  if (!ok) fail("NotAProof", "the entry is not a doc-integrity-proof/v1 record: it lacks type, name, size, sha256 or time");
  if (proof.type !== PROOF_TYPE) fail("NotAProof", `the entry is not a doc-integrity-proof/v1 record: type is ${JSON.stringify(proof.type)}`);
  return proof;
}

/**
 * Verifies an evidence package (its JSON text or parsed value). Options: `document`
 * (`{bytes: Uint8Array}`: the notarized file), `pinnedCertificate` (PEM: the service
 * certificate the package must carry), `witnessVkeys` (C2SP vkeys that must have cosigned the
 * package's checkpoint). Returns `{state: "verified" | "failed", kind, checks, summary}`; each
 * check is `{id, title, status: "pass" | "fail" | "skip", detail, kind?}`.
 */
export async function verifyPackage(input, { document, pinnedCertificate, witnessVkeys = [] } = {}) {
  const report = new Report(PACKAGE_CHECKS);
  let pkg = input;
  await report.run("package", "PackageMalformed", async () => {
    if (typeof input === "string") {
      try {
        pkg = JSON.parse(input);
      } catch (e) {
        throw new Error(`the package is not JSON: ${e.message}`);
      }
    }
    const shape = packageShapeError(pkg);
    if (shape) throw new Error(`the package is malformed: ${shape}`);
    return `${PACKAGE_VERSION}, transaction ${pkg.transactionId}, document ${JSON.stringify(pkg.document.name)}`;
  });
  if (report.checks[0].status === "fail") {
    report.skipRest("not checked: the package could not be read");
    return report.finish(null);
  }
  const summary = {
    transactionId: pkg.transactionId,
    collectionId: pkg.entry.collectionId,
    document: pkg.document,
    serviceCertificateFingerprint: await certificateFingerprint(pkg.serviceCertificate).catch(() => null),
  };
  await report.run("service-certificate", "ServiceCertMismatch", async () => {
    if (pinnedCertificate === undefined || pinnedCertificate === null) {
      return { skip: `not pinned: the package's own service certificate (${summary.serviceCertificateFingerprint ?? "unreadable"}) is trusted; choose your ledger's certificate to check it is yours` };
    }
    let want;
    try {
      want = pemToDer(pinnedCertificate);
    } catch (e) {
      throw new VerifyError("PackageMalformed", `the pinned service certificate: ${e.message}`);
    }
    const have = pemToDer(pkg.serviceCertificate);
    if (!equalBytes(want, have)) {
      fail("ServiceCertMismatch", `the package's service certificate is not the pinned one (pinned ${await certificateFingerprint(pinnedCertificate)}, package has ${summary.serviceCertificateFingerprint})`);
    }
    return `matches the pinned certificate ${summary.serviceCertificateFingerprint}`;
  });
  const receipt = pkg.receipt.receipt;
  const claims = pkg.receipt.applicationClaims;
  const proven = await checkReceipt(report, receipt, pkg.serviceCertificate, claims);
  await report.run("transaction-id", "TransactionMismatch", async () => {
    if (!proven.txid) return { skip: "not checked: the receipt names no transaction (its commit evidence is malformed)" };
    for (const [what, value] of [
      ["transactionId", pkg.transactionId],
      ["entry.transactionId", pkg.entry.transactionId],
      ["receipt.transactionId", pkg.receipt.transactionId],
    ]) {
      if (value !== proven.txid.text) fail("TransactionMismatch", `${what} is ${value}, the receipt proves ${proven.txid.text}`);
    }
    return `the receipt proves transaction ${proven.txid.text}`;
  });
  await report.run("cose-receipt", "CoseReceipt", async () => {
    if (pkg.coseReceipt === undefined) return { skip: "the package carries no COSE receipt (made before cledger served them)" };
    const bytes = base64(pkg.coseReceipt);
    if (!bytes) fail("PackageMalformed", "coseReceipt is not base64");
    let cose;
    try {
      cose = await verifyCoseReceipt(bytes, parseCertificate(pemToDer(pkg.serviceCertificate)));
    } catch (e) {
      fail("CoseReceipt", `the COSE receipt does not verify: ${e.message}`);
    }
    if (proven.leaf && (cose.leaf !== proven.leaf || cose.txid.text !== proven.txid.text)) {
      fail("CoseReceipt", `the COSE receipt does not verify: it proves leaf ${cose.leaf} of ${cose.txid.text}, the JSON receipt leaf ${proven.leaf} of ${proven.txid.text}`);
    }
    return `signed by the service key at ${cose.signedTxId.text}; same transaction and leaf`;
  });
  await report.run("checkpoint", "Checkpoint", async () => {
    const wanted = witnessVkeys.map((v) => v.trim()).filter(Boolean);
    if (pkg.checkpoint === undefined) {
      if (wanted.length) fail("NoCheckpoint", "the package carries no checkpoint, so no witness cosigned the state it proves");
      return { skip: "the package carries no checkpoint (the ledger published none when it was made)" };
    }
    if (!proven.leaf) return { skip: "not checked: the receipt's leaf is unknown (the inclusion path failed)" };
    const result = await verifyCheckpoint(pkg.checkpoint, proven.leaf, proven.txid.seqno, parseCertificate(pemToDer(pkg.serviceCertificate)), wanted);
    summary.checkpoint = result;
    const witnesses = result.cosignedBy.length ? `; cosigned by ${result.cosignedBy.join(", ")}` : "";
    const others = result.uncheckedSignatures ? `; ${result.uncheckedSignatures} other cosignature(s) not checked (give witness vkeys to check them)` : "";
    return `entry in ${result.origin} at tree size ${result.size}, signed by the ledger's checkpoint key${witnesses}${others}`;
  });
  let proof = null;
  await report.run("entry", "EntryMismatch", async () => {
    const [claim] = claims;
    if (claims.length !== 1 || claim?.kind !== "LedgerEntry") fail("EntryMismatch", "the receipt's claims are not a single LedgerEntry claim revealing the entry");
    if (claim.ledgerEntry.collectionId !== pkg.entry.collectionId) {
      fail("EntryMismatch", `entry contents mismatch: collectionId ${JSON.stringify(pkg.entry.collectionId)} in the package, ${JSON.stringify(claim.ledgerEntry.collectionId)} in the proven claim`);
    }
    if (claim.ledgerEntry.contents !== pkg.entry.contents) fail("EntryMismatch", "entry contents mismatch: the contents differ from the proven claim's contents");
    return `collection ${pkg.entry.collectionId}: the package's entry is the one the claims reveal`;
  });
  await report.run("document", "DocumentMismatch", async () => {
    proof = documentProof(pkg.entry.contents);
    for (const field of ["sha256", "size", "name"]) {
      if (proof[field] !== pkg.document[field]) {
        fail("DocumentMismatch", `document mismatch: document.${field} is ${JSON.stringify(pkg.document[field])}, the proven entry says ${JSON.stringify(proof[field])}`);
      }
    }
    summary.time = proof.time;
    summary.note = proof.note ?? null;
    return `${JSON.stringify(proof.name)}, ${proof.size} bytes, SHA-256 ${proof.sha256}, recorded ${proof.time}`;
  });
  await report.run("file", "FileHashMismatch", async () => {
    if (!document) return { skip: "no document chosen: choose the notarized file to check it is the one recorded" };
    const expected = proof ?? { sha256: pkg.document.sha256, size: pkg.document.size };
    const actual = toHex(new Uint8Array(await subtle.digest("SHA-256", document.bytes)));
    if (actual !== expected.sha256) fail("FileHashMismatch", `file hash mismatch: the file's SHA-256 is ${actual}, the package proves ${expected.sha256}`);
    if (document.bytes.length !== expected.size) fail("FileSizeMismatch", `file size mismatch: the file has ${document.bytes.length} bytes, the package proves ${expected.size}`);
    return `SHA-256 ${actual}, ${document.bytes.length} bytes`;
  });
  return report.finish(summary);
}

// --- receipts fetched by the explorer -----------------------------------------------------------

const RECEIPT_CHECKS = ["service-certificate", "claims-digest", "certificate-chain", "inclusion", "signature", "transaction-id", "entry"];

/**
 * Verifies a `GET /app/transactions/{id}/receipt` response for the entry `{transactionId,
 * collectionId, contents}` against `serviceCertificate` (PEM, as the ledger serves it); with
 * `pinnedCertificate`, that certificate must be the served one. Same result shape as
 * `verifyPackage`.
 */
export async function verifyReceiptResponse(response, entry, serviceCertificate, pinnedCertificate = undefined) {
  const report = new Report(RECEIPT_CHECKS);
  const shape = response?.receipt === undefined ? "the response holds no receipt" : receiptShapeError(response.receipt);
  if (shape) {
    report.set("inclusion", "fail", `the receipt is malformed: ${shape}`, "ReceiptInvalid");
    report.skipRest("not checked: the receipt is malformed");
    return report.finish(null);
  }
  const fingerprint = await certificateFingerprint(serviceCertificate);
  await report.run("service-certificate", "ServiceCertMismatch", async () => {
    if (!pinnedCertificate) return { skip: `not pinned: ${fingerprint} is the certificate this ledger serves; pin yours to check it independently` };
    if (!equalBytes(pemToDer(pinnedCertificate), pemToDer(serviceCertificate))) {
      fail("ServiceCertMismatch", `the ledger serves ${fingerprint}, not the pinned ${await certificateFingerprint(pinnedCertificate)}`);
    }
    return `the ledger serves the pinned certificate ${fingerprint}`;
  });
  const claims = Array.isArray(response.applicationClaims) && response.applicationClaims.length ? response.applicationClaims : null;
  const proven = await checkReceipt(report, response.receipt, serviceCertificate, claims);
  await report.run("transaction-id", "TransactionMismatch", async () => {
    if (!proven.txid) return { skip: "not checked: the receipt names no transaction" };
    if (proven.txid.text !== entry.transactionId) fail("TransactionMismatch", `the receipt proves ${proven.txid.text}, not ${entry.transactionId}`);
    return `the receipt proves transaction ${proven.txid.text}`;
  });
  await report.run("entry", "EntryMismatch", async () => {
    if (!claims) return { skip: "the receipt reveals no entry (no application claims): it proves the transaction, not its contents" };
    const [claim] = claims;
    if (claims.length !== 1 || claim?.kind !== "LedgerEntry") fail("EntryMismatch", "the claims are not a single LedgerEntry claim revealing the entry");
    if (claim.ledgerEntry.collectionId !== entry.collectionId || claim.ledgerEntry.contents !== entry.contents) {
      fail("EntryMismatch", "the entry shown is not the one the receipt's claims reveal (collection or contents differ)");
    }
    return "the entry shown is the one the receipt proves";
  });
  return report.finish({ transactionId: entry.transactionId, serviceCertificateFingerprint: fingerprint, root: proven.root });
}
