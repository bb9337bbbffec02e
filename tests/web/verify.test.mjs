// The web verifier's module (crates/ledger-web/assets/verify.mjs) against evidence packages made
// by `cledger notarize` on a real `cledger serve`: a genuine package verifies, and each kind of
// tampering fails at the check that names it. Every verdict is compared with `cledger verify
// --json` on the same files, so the page and the CLI cannot drift apart: the first failing
// check's kind must be the error kind the CLI reports.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, generateKeyPairSync, sign } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { LedgerServer, binaryPath, makeUser, tempDir } from "../js/server.mjs";
import { CHECK_TITLES, decodeCbor, parseTxId, verifyPackage } from "../../crates/ledger-web/assets/verify.mjs";

let server;
let dir;
let genuine; // the package as notarize wrote it (parsed)
let documentBytes;
let foreignCertPem;

const cleanEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CLEDGER_")));

before(async () => {
  // Checkpoints every 200 ms, so that notarize finds one proving the entry quickly.
  server = await LedgerServer.start(["--checkpoint-interval-ms", "200"]);
  dir = tempDir("cledger-web-verify-");
  documentBytes = Buffer.from(`contract v1\n${"x".repeat(3000)}\n`);
  const documentPath = join(dir, "contract.txt");
  writeFileSync(documentPath, documentBytes);
  const args = ["notarize", documentPath, "--note", "signed copy", "--endpoint", server.endpoint];
  args.push("--cert", server.adminPemPath, "--service-cert", server.serviceCertPath);
  execFileSync(binaryPath(), args, { env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] });
  genuine = JSON.parse(readFileSync(`${documentPath}.evidence.json`, "utf8"));
  foreignCertPem = makeUser(dir, "foreign").certPem;
});

after(async () => {
  await server?.stopAndClean();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

let fileCounter = 0;

/** `cledger verify --json` on `pkg` (written to a file): `{verified, error?, reason?}`. */
function cliVerify(pkg, { document, pinned, witnessVkeys = [] } = {}) {
  const n = fileCounter++;
  const packagePath = join(dir, `package-${n}.evidence.json`);
  writeFileSync(packagePath, typeof pkg === "string" ? pkg : JSON.stringify(pkg));
  const args = ["verify", "--json", packagePath];
  if (document) {
    const documentPath = join(dir, `document-${n}`);
    writeFileSync(documentPath, document);
    args.push(documentPath);
  }
  if (pinned) {
    const pinnedPath = join(dir, `pinned-${n}.pem`);
    writeFileSync(pinnedPath, pinned);
    args.push("--service-cert", pinnedPath);
  }
  for (const vkey of witnessVkeys) args.push("--witness-vkey", vkey);
  try {
    return JSON.parse(execFileSync(binaryPath(), args, { env: cleanEnv(), encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }));
  } catch (e) {
    if (e.status !== 1 && e.status !== 2) throw e;
    return JSON.parse(e.stdout);
  }
}

/** Both verifiers on the same inputs; they must agree. Returns the web verifier's result. */
async function verifyBoth(pkg, options = {}) {
  const web = await verifyPackage(typeof pkg === "string" ? pkg : JSON.stringify(pkg), {
    document: options.document ? { bytes: new Uint8Array(options.document) } : undefined,
    pinnedCertificate: options.pinned,
    witnessVkeys: options.witnessVkeys,
  });
  const cli = cliVerify(pkg, options);
  assert.equal(web.state === "verified", cli.verified, `web says ${web.state} (${web.kind}), cledger verify says ${JSON.stringify(cli)}`);
  if (!cli.verified) assert.equal(web.kind, cli.error, `cledger verify: ${cli.reason}`);
  return web;
}

const clone = () => structuredClone(genuine);
const checkOf = (result, id) => result.checks.find((c) => c.id === id);

/**
 * Replaces the letter or digit at or after `at` by another of the same alphabet that differs
 * even ignoring case (hex is read in either case).
 */
function alter(text, at = Math.floor(text.length / 2)) {
  while (!/[A-Za-z0-9]/.test(text[at])) at++;
  const c = text[at];
  const replacement = /[0-9]/.test(c) ? (c === "7" ? "8" : "7") : c.toLowerCase() === "a" ? "b" : "a";
  return text.slice(0, at) + replacement + text.slice(at + 1);
}

test("a genuine package verifies with its document and pinned certificate, as cledger verify says", async () => {
  const result = await verifyBoth(genuine, { document: documentBytes, pinned: server.serviceCertPem });
  assert.equal(result.state, "verified");
  assert.deepEqual(
    result.checks.map((c) => c.id),
    Object.keys(CHECK_TITLES),
  );
  for (const check of result.checks) assert.equal(check.status, "pass", `${check.id}: ${check.detail}`);
  assert.equal(result.summary.transactionId, genuine.transactionId);
  assert.equal(result.summary.note, "signed copy");
  // Without the document and the pin, those two are skipped with a reason, not passed.
  const bare = await verifyBoth(genuine);
  assert.equal(bare.state, "verified");
  for (const id of ["service-certificate", "file"]) {
    assert.equal(checkOf(bare, id).status, "skip");
    assert.ok(checkOf(bare, id).detail.length > 10);
  }
});

// Each tampering: what it changes, the check that must fail first, and the kind both report.
const TAMPERINGS = [
  ["the receipt's signature", (p) => (p.receipt.receipt.signature = alter(p.receipt.receipt.signature)), "signature", "ReceiptSignature"],
  ["a hash of the inclusion path", (p) => (p.receipt.receipt.proof[0] = { [Object.keys(p.receipt.receipt.proof[0])[0]]: alter(Object.values(p.receipt.receipt.proof[0])[0]) }), "signature", "ReceiptSignature"],
  ["the side of a path step", (p) => (p.receipt.receipt.proof[0] = Object.fromEntries(Object.entries(p.receipt.receipt.proof[0]).map(([k, v]) => [k === "left" ? "right" : "left", v]))), "signature", "ReceiptSignature"],
  ["the write set digest", (p) => (p.receipt.receipt.leafComponents.writeSetDigest = alter(p.receipt.receipt.leafComponents.writeSetDigest)), "signature", "ReceiptSignature"],
  ["the node id", (p) => (p.receipt.receipt.nodeId = alter(p.receipt.receipt.nodeId)), "signature", "ReceiptSignature"],
  ["a malformed proof hash", (p) => (p.receipt.receipt.proof[0] = { left: "zz" }), "inclusion", "ReceiptInvalid"],
  ["the claim's contents", (p) => (p.receipt.applicationClaims[0].ledgerEntry.contents += " "), "claims-digest", "ClaimsDigest"],
  ["the package's entry contents", (p) => (p.entry.contents = p.entry.contents.replace("contract.txt", "contract.pdf")), "entry", "EntryMismatch"],
  ["the entry's collection", (p) => (p.entry.collectionId = "other"), "entry", "EntryMismatch"],
  ["the document's SHA-256", (p) => (p.document.sha256 = alter(p.document.sha256)), "document", "DocumentMismatch"],
  ["the document's size", (p) => (p.document.size += 1), "document", "DocumentMismatch"],
  ["the transaction id", (p) => (p.transactionId = "9.999"), "transaction-id", "TransactionMismatch"],
  ["the service certificate (another CA)", (p) => (p.serviceCertificate = foreignCertPem), "certificate-chain", "CertChain"],
  ["the node certificate", (p) => (p.receipt.receipt.cert = alter(p.receipt.receipt.cert, p.receipt.receipt.cert.length - 100)), "certificate-chain", "CertChain"],
  ["a byte of the COSE receipt's signature", (p) => (p.coseReceipt = alter(p.coseReceipt, p.coseReceipt.length - 10)), "cose-receipt", "CoseReceipt"],
  ["the checkpoint's root", (p) => (p.checkpoint.checkpoint = p.checkpoint.checkpoint.replace(/^(.*\n\d+\n)(.)/, (_, head, c) => head + (c === "A" ? "B" : "A"))), "checkpoint", "Checkpoint"],
  ["the checkpoint proof's position", (p) => (p.checkpoint.leafIndex += 1), "checkpoint", "Checkpoint"],
  ["the package version", (p) => (p.version = "cledger-evidence/v0"), "package", "PackageMalformed"],
];

for (const [what, mutate, check, kind] of TAMPERINGS) {
  test(`a package with ${what} altered fails at "${check}" (${kind}), as cledger verify says`, async () => {
    const pkg = clone();
    mutate(pkg);
    assert.notDeepEqual(pkg, genuine, "the tampering changed nothing");
    const result = await verifyBoth(pkg, { document: documentBytes });
    assert.equal(result.state, "failed");
    assert.equal(result.kind, kind);
    const first = result.checks.find((c) => c.status === "fail");
    assert.equal(first.id, check, `first failing check: ${first.id}: ${first.detail}`);
    assert.ok(first.detail.length > 20, `a reason is given: ${first.detail}`);
  });
}

test("text that is not JSON fails at the package check", async () => {
  const result = await verifyBoth("{\"version\":");
  assert.equal(result.state, "failed");
  assert.equal(result.kind, "PackageMalformed");
  assert.ok(result.checks.slice(1).every((c) => c.status === "skip"));
});

test("a changed document fails at the file check, naming both hashes", async () => {
  const changed = Buffer.from(documentBytes);
  changed[5] ^= 1;
  const result = await verifyBoth(genuine, { document: changed });
  assert.equal(result.kind, "FileHashMismatch");
  const check = checkOf(result, "file");
  assert.equal(check.status, "fail");
  assert.match(check.detail, new RegExp(genuine.document.sha256));
  assert.match(check.detail, new RegExp(createHash("sha256").update(changed).digest("hex")));
  // Everything about the package itself still verifies.
  assert.ok(result.checks.filter((c) => c.id !== "file").every((c) => c.status !== "fail"));
});

test("another service certificate than the pinned one fails at the service-certificate check", async () => {
  const result = await verifyBoth(genuine, { pinned: foreignCertPem });
  assert.equal(result.kind, "ServiceCertMismatch");
  assert.equal(checkOf(result, "service-certificate").status, "fail");
});

/** The package's checkpoint with a `cosignature/v1` line added by a new witness key. */
function cosigned(pkg, name, { corrupt = false } = {}) {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url");
  const typed = Buffer.concat([Buffer.from([0x04]), raw]);
  const keyId = createHash("sha256").update(Buffer.concat([Buffer.from(`${name}\n`), typed])).digest().subarray(0, 4);
  const vkey = `${name}+${keyId.toString("hex")}+${typed.toString("base64")}`;
  const note = pkg.checkpoint.checkpoint;
  const text = note.slice(0, note.lastIndexOf("\n\n") + 1);
  const time = Buffer.alloc(8);
  time.writeBigUInt64BE(1_790_000_000n);
  const signature = sign(null, Buffer.from(`cosignature/v1\ntime 1790000000\n${text}`), privateKey);
  if (corrupt) signature[0] ^= 1;
  pkg.checkpoint.checkpoint = `${note}\u2014 ${name} ${Buffer.concat([keyId, time, signature]).toString("base64")}\n`;
  return vkey;
}

test("witness cosignatures: one that verifies, one missing, one forged, none at all", async () => {
  assert.ok(genuine.checkpoint, "notarize put a checkpoint in the package");
  const pkg = clone();
  const vkey = cosigned(pkg, "witness.example/a");
  const ok = await verifyBoth(pkg, { witnessVkeys: [vkey] });
  assert.equal(ok.state, "verified");
  assert.deepEqual(ok.summary.checkpoint.cosignedBy, ["witness.example/a"]);
  const unchecked = await verifyBoth(pkg);
  assert.equal(unchecked.summary.checkpoint.uncheckedSignatures, 1);
  assert.match(checkOf(unchecked, "checkpoint").detail, /1 other cosignature/);

  const other = cosigned(clone(), "witness.example/b");
  const missing = await verifyBoth(pkg, { witnessVkeys: [vkey, other] });
  assert.equal(missing.kind, "NotCosigned");
  assert.match(checkOf(missing, "checkpoint").detail, /witness\.example\/b/);

  const forgedPkg = clone();
  const forged = cosigned(forgedPkg, "witness.example/c", { corrupt: true });
  assert.equal((await verifyBoth(forgedPkg, { witnessVkeys: [forged] })).kind, "NotCosigned");

  const bare = clone();
  delete bare.checkpoint;
  assert.equal((await verifyBoth(bare, { witnessVkeys: [vkey] })).kind, "NoCheckpoint");
  assert.equal(checkOf(await verifyBoth(bare), "checkpoint").status, "skip");
});

test("CBOR is read strictly: shortest heads and definite lengths only", () => {
  assert.deepEqual(decodeCbor(Uint8Array.of(0x82, 0x01, 0x20)), [1, -1]);
  assert.equal(decodeCbor(Uint8Array.of(0x18, 0x18)), 24);
  assert.throws(() => decodeCbor(Uint8Array.of(0x18, 0x05)), /shortest/);
  assert.throws(() => decodeCbor(Uint8Array.of(0x9f, 0x01, 0xff)), /indefinite/);
  assert.throws(() => decodeCbor(Uint8Array.of(0x01, 0x01)), /after/);
  assert.throws(() => decodeCbor(Uint8Array.of(0xa2, 0x01, 0x01, 0x01, 0x02)), /duplicate/);
  assert.throws(() => decodeCbor(Uint8Array.of(0x5a, 0xff, 0xff, 0xff, 0xff)), /past the end/);
  assert.equal(decodeCbor(Uint8Array.of(0xf5)), true);
  assert.equal(decodeCbor(Uint8Array.of(0xf6)), null);
  // `false` in two bytes, and a half-float whose bits read like `false`, are refused.
  assert.throws(() => decodeCbor(Uint8Array.of(0xf8, 0x14)), /simple value or float/);
  assert.throws(() => decodeCbor(Uint8Array.of(0xf9, 0x00, 0x14)), /simple value or float/);
});

test("transaction ids are parsed as cledger parses them", () => {
  assert.deepEqual(parseTxId("2.13"), { view: 2, seqno: 13, text: "2.13" });
  for (const bad of ["0.1", "1.0", "01.2", "1.+2", "1", "1.2.3", " 1.2", "99999999999999999999.1"]) assert.equal(parseTxId(bad), null, bad);
});
