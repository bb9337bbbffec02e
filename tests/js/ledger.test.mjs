// The official JavaScript SDK (@azure-rest/confidential-ledger 1.0.0), unchanged, against a live
// `cledger serve`: entries, status, receipts, the current entry, api-versions and errors.
// One server for the file (see server.mjs), stopped with SIGTERM at the end.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { rmSync } from "node:fs";
import { after, before, describe as suite, test } from "node:test";
import { LedgerServer, makeUser, tempDir } from "./server.mjs";
import { ReceiptError, leafHash, verifyReceipt } from "./receipt.mjs";
import { DEFAULT_COLLECTION, TXID, createEntry, describe, expectError, expectOk, getEntry, getReceipt, waitCommitted } from "./helpers.mjs";

let server;
let client;
const scratch = tempDir();

before(async () => {
  server = await LedgerServer.start();
  client = server.client();
});

after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await server?.stopAndClean();
});

/** Writes, waits for Committed, reads it back; returns the txid. */
async function writeAndRead(ledger, contents, collectionId = undefined) {
  const txid = await createEntry(ledger, contents, collectionId);
  const status = await waitCommitted(ledger, txid);
  assert.deepEqual(status, { state: "Committed", transactionId: txid });
  const got = await getEntry(ledger, txid, collectionId);
  assert.deepEqual(
    got,
    { state: "Ready", entry: { contents, collectionId: collectionId ?? DEFAULT_COLLECTION, transactionId: txid } },
    `GET /app/transactions/${txid}`,
  );
  return txid;
}

/** Fetches a receipt, checks its shape, and verifies it with the node:crypto verifier. */
async function checkReceipt(ledger, txid) {
  const body = await getReceipt(ledger, txid);
  assert.equal(body.transactionId, txid, "receipt of another transaction");
  const receipt = body.receipt;
  assert.match(receipt.leafComponents.commitEvidence, new RegExp(`^ce:${txid.replace(".", "\\.")}:[0-9a-f]{64}$`), "commitEvidence names the transaction");
  verifyReceipt(receipt, server.serviceCertPem, body.applicationClaims);
  return body;
}

suite("entries", () => {
  test("create → Committed status → get returns the same contents", async () => {
    const contents = `hello from the JavaScript SDK ✓ ${Date.now()}`;
    const txid = await writeAndRead(client, contents);

    // The ledger's own listing has it exactly once, in the default collection.
    const listed = expectOk(await client.path("/app/transactions").get({ queryParameters: { fromTransactionId: txid, toTransactionId: txid } }));
    assert.deepEqual(listed.entries, [{ contents, collectionId: DEFAULT_COLLECTION, transactionId: txid }]);
  });

  test("entries in a named collection are read back from it, and only from it", async () => {
    const collection = `js-orders-${process.pid}`;
    const txid = await writeAndRead(client, "an order", collection);
    expectError(await client.path("/app/transactions/{transactionId}", txid).get(), 404, "ResourceNotFound");
  });

  test("every write gets a new, increasing transaction id", async () => {
    const first = await createEntry(client, "first");
    const second = await createEntry(client, "second");
    const [v1, s1] = first.split(".").map(Number);
    const [v2, s2] = second.split(".").map(Number);
    assert.ok(v2 > v1 || (v2 === v1 && s2 > s1), `${second} does not follow ${first}`);
  });
});

suite("current entry", () => {
  test("/app/transactions/current is the newest entry of the default collection", async () => {
    const contents = `newest default ${Date.now()}`;
    const txid = await createEntry(client, contents);
    await createEntry(client, "written elsewhere afterwards", `js-current-other-${process.pid}`);
    const response = await client.path("/app/transactions/current").get();
    const current = expectOk(response);
    assert.equal(current.contents, contents, describe(response));
    assert.equal(current.collectionId, DEFAULT_COLLECTION);
    // transactionId is the read's transaction, as in ACL: at or after the write.
    assert.match(current.transactionId, TXID);
    assert.ok(Number(current.transactionId.split(".")[1]) >= Number(txid.split(".")[1]), describe(response));
  });

  test("with collectionId it is the newest entry of that collection", async () => {
    const collection = `js-current-${process.pid}`;
    await createEntry(client, "older", collection);
    await createEntry(client, "newer", collection);
    await createEntry(client, "default after", undefined);
    const response = await client.path("/app/transactions/current").get({ queryParameters: { collectionId: collection } });
    const current = expectOk(response);
    assert.equal(current.contents, "newer", describe(response));
    assert.equal(current.collectionId, collection);
    // And the default collection's newest is the later default write.
    assert.equal(expectOk(await client.path("/app/transactions/current").get()).contents, "default after");
  });

  test("a collection with no entries has no current entry", async () => {
    expectError(await client.path("/app/transactions/current").get({ queryParameters: { collectionId: `js-empty-${process.pid}` } }), 404, "ResourceNotFound");
  });
});

suite("receipts", () => {
  test("receipts of several entries verify against the service certificate", async () => {
    const txids = [];
    for (let i = 0; i < 5; i++) txids.push(await createEntry(client, `receipt ${i}`, i % 2 ? `js-receipts-${process.pid}` : undefined));
    for (const txid of txids) {
      await waitCommitted(client, txid);
      const body = await checkReceipt(client, txid);
      assert.equal(body.state, "Ready");
      assert.equal(body.applicationClaims, undefined, "2022-05-13 receipts carry no applicationClaims");
      assert.equal(body.receipt.leafComponents.claimsDigest, "0".repeat(64), "2022-05-13 writes record no claims");
    }
  });

  test("the verifier rejects every tampered receipt (so it can fail)", async () => {
    const txid = await createEntry(client, "to be tampered with");
    await waitCommitted(client, txid);
    const { receipt } = await getReceipt(client, txid);
    verifyReceipt(receipt, server.serviceCertPem);
    assert.ok(receipt.proof.length > 0, "the ledger has more than one leaf, so the proof is not empty");

    const flipHex = (hex, at = 0) => hex.slice(0, at) + ((parseInt(hex[at], 16) + 1) % 16).toString(16) + hex.slice(at + 1);
    const flipBase64Byte = (b64) => {
      const bytes = Buffer.from(b64, "base64");
      bytes[bytes.length - 5] ^= 0x01; // inside s
      return bytes.toString("base64");
    };
    const otherService = makeUser(scratch, "not-the-service").certPem;
    const tamperings = {
      "a byte of a proof element": (r) => {
        const [side] = Object.keys(r.proof[0]);
        r.proof[0][side] = flipHex(r.proof[0][side], 10);
      },
      "left and right swapped in the proof": (r) => {
        r.proof = r.proof.map((e) => ("left" in e ? { right: e.left } : { left: e.right }));
      },
      "a proof element dropped": (r) => r.proof.pop(),
      "writeSetDigest (the leaf)": (r) => (r.leafComponents.writeSetDigest = flipHex(r.leafComponents.writeSetDigest, 63)),
      "claimsDigest (the leaf)": (r) => (r.leafComponents.claimsDigest = flipHex(r.leafComponents.claimsDigest, 0)),
      "commitEvidence (the leaf)": (r) => (r.leafComponents.commitEvidence = r.leafComponents.commitEvidence.replace(/.$/, (c) => (c === "0" ? "1" : "0"))),
      "a byte of the signature": (r) => (r.signature = flipBase64Byte(r.signature)),
      nodeId: (r) => (r.nodeId = flipHex(r.nodeId, 5)),
      "the node certificate replaced by another": (r) => (r.cert = otherService),
    };
    for (const [what, tamper] of Object.entries(tamperings)) {
      const forged = structuredClone(receipt);
      tamper(forged);
      assert.throws(() => verifyReceipt(forged, server.serviceCertPem), ReceiptError, `a receipt with ${what} tampered with was accepted`);
    }
    assert.throws(() => verifyReceipt(receipt, otherService), /not endorsed by the service certificate/, "a receipt verified against a foreign service certificate");
    // The leaf really is the recipe's: the untouched receipt still verifies, and its leaf is
    // SHA-256 over the three components (recomputed independently here).
    const lc = receipt.leafComponents;
    const expected = createHash("sha256")
      .update(Buffer.from(lc.writeSetDigest, "hex"))
      .update(createHash("sha256").update(lc.commitEvidence).digest())
      .update(Buffer.from(lc.claimsDigest, "hex"))
      .digest("hex");
    assert.equal(leafHash(lc).toString("hex"), expected);
    verifyReceipt(receipt, server.serviceCertPem);
  });
});

suite("api-versions", () => {
  test("the SDK's default api-version is 2022-05-13, and every request carries it once", async () => {
    const response = await client.path("/app/transactions/current").get();
    expectOk(response);
    assert.deepEqual(new URL(response.request.url).searchParams.getAll("api-version"), ["2022-05-13"]);
  });

  test("create, status, get, current and receipt with apiVersion 2024-12-09-preview", async () => {
    const newer = server.client(undefined, { apiVersion: "2024-12-09-preview" });
    const contents = "written with 2024-12-09-preview";
    const txid = await writeAndRead(newer, contents);
    const response = await newer.path("/app/transactions/current").get();
    assert.deepEqual(new URL(response.request.url).searchParams.getAll("api-version"), ["2024-12-09-preview"]);
    assert.equal(expectOk(response).contents, contents);
    const receipt = await checkReceipt(newer, txid);
    assert.equal(receipt.applicationClaims, undefined);
    // Read back with the default version too: one ledger, whatever the version.
    assert.equal((await getEntry(client, txid)).entry.contents, contents);
  });

  test("apiVersion 2026-02-23 writes application claims, and the receipt proves them", async () => {
    const claimsClient = server.client(undefined, { apiVersion: "2026-02-23" });
    const collection = `js-claims-${process.pid}`;
    const contents = "claimed contents";
    const txid = await createEntry(claimsClient, contents, collection);
    await waitCommitted(claimsClient, txid);
    const body = await checkReceipt(claimsClient, txid); // verifies the claims digest too
    assert.equal(body.applicationClaims?.length, 1, `applicationClaims: ${JSON.stringify(body)}`);
    const claim = body.applicationClaims[0];
    assert.equal(claim.kind, "LedgerEntry");
    assert.equal(claim.ledgerEntry.protocol, "LedgerEntryV1");
    assert.equal(claim.ledgerEntry.collectionId, collection);
    assert.equal(claim.ledgerEntry.contents, contents);
    assert.notEqual(body.receipt.leafComponents.claimsDigest, "0".repeat(64));
    // Claims that are not the entry's are refused by the verifier.
    const lie = structuredClone(body.applicationClaims);
    lie[0].ledgerEntry.contents = "something else";
    assert.throws(() => verifyReceipt(body.receipt, server.serviceCertPem, lie), /applicationClaims do not match/);
  });

  test("an api-version the ledger does not know is refused", async () => {
    const unknown = server.client(undefined, { apiVersion: "2099-01-01" });
    expectError(await unknown.path("/app/transactions/current").get(), 400, "UnsupportedApiVersion");
  });
});

suite("errors", () => {
  test("a well-formed transaction id the ledger has not reached: 404 TransactionPendingOrUnknown", async () => {
    const txid = await createEntry(client, "the newest for now");
    const [view, seq] = txid.split(".").map(Number);
    const unknown = `${view}.${seq + 1_000_000}`;
    for (const path of ["/app/transactions/{transactionId}", "/app/transactions/{transactionId}/status", "/app/transactions/{transactionId}/receipt"]) {
      expectError(await client.path(path, unknown).get(), 404, "TransactionPendingOrUnknown");
    }
  });

  test("a transaction id of another view: 404 InvalidTransactionId", async () => {
    const txid = await createEntry(client, "in this view");
    const [view, seq] = txid.split(".").map(Number);
    for (const path of ["/app/transactions/{transactionId}", "/app/transactions/{transactionId}/status", "/app/transactions/{transactionId}/receipt"]) {
      expectError(await client.path(path, `${view + 1}.${seq}`).get(), 404, "InvalidTransactionId");
    }
  });

  test("a malformed transaction id: 404 InvalidTransactionId in the path, 400 in the query", async () => {
    for (const bad of ["not-a-txid", "1.x", "1.2.3", "0.1"]) {
      for (const path of ["/app/transactions/{transactionId}", "/app/transactions/{transactionId}/status", "/app/transactions/{transactionId}/receipt"]) {
        // In the path it names a resource that cannot exist: 404, which the SDK pollers treat as final.
        expectError(await client.path(path, bad).get(), 404, "InvalidTransactionId");
      }
      for (const parameter of ["fromTransactionId", "toTransactionId"]) {
        expectError(await client.path("/app/transactions").get({ queryParameters: { [parameter]: bad } }), 400, "InvalidTransactionId");
      }
    }
  });

  test("a client without a certificate: 401 InvalidAuthenticationInfo", async () => {
    const anonymous = server.client(null);
    expectError(await anonymous.path("/app/transactions/current").get(), 401, "InvalidAuthenticationInfo");
    expectError(await anonymous.path("/app/transactions").post({ body: { contents: "x" } }), 401, "InvalidAuthenticationInfo");
  });

  test("a certificate the ledger does not know: 403 NotAllowed", async () => {
    const stranger = server.client(makeUser(scratch, "stranger").pem);
    expectError(await stranger.path("/app/transactions/current").get(), 403, "NotAllowed");
    expectError(await stranger.path("/app/transactions").post({ body: { contents: "x" } }), 403, "NotAllowed");
  });

  test("an entry over 8192 bytes: 400 EntrySizeCapacityExceeded, and nothing is written", async () => {
    const before = expectOk(await client.path("/app/transactions/current").get()).contents;
    expectError(await client.path("/app/transactions").post({ body: { contents: "a".repeat(8193) } }), 400, "EntrySizeCapacityExceeded");
    assert.equal(expectOk(await client.path("/app/transactions/current").get()).contents, before);
    await writeAndRead(client, "é".repeat(4096)); // exactly 8192 UTF-8 bytes is allowed
  });

  test("a query parameter repeated with different values: 400 InvalidQueryParameterValue", async () => {
    // The SDK appends its own api-version to whatever the path carries (as it does to nextLink):
    // equal values are one value, different ones are refused.
    expectOk(await client.pathUnchecked("/app/transactions/current?api-version=2022-05-13").get());
    expectError(await client.pathUnchecked("/app/transactions/current?api-version=2024-12-09-preview").get(), 400, "InvalidQueryParameterValue");
  });
});
