// User-defined functions and hooks through the official JavaScript SDK's REST-level client
// (@azure-rest/confidential-ledger 1.0.0, unchanged, at api-version 2024-12-09-preview): the
// SDK 1.0.0 predates these routes, so they are reached with `client.path(...)` as any REST
// client would. The functions are Microsoft's published samples (learn.microsoft.com, "User
// defined functions in Azure confidential ledger"). One server for the file.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { LedgerServer } from "./server.mjs";
import { describe } from "./helpers.mjs";

const API_VERSION = "2024-12-09-preview";
const VALIDATE =
  "export function main() { if (isNaN(context.contents)) { throw new Error('Contents is not a number'); } }";
const DETECT_HIGH =
  "export function main() { let value = 'Normal'; if (context.contents > 50) { value = 'Alert' } " +
  "ccf.kv['public:payment_metadata'].set(ccf.strToBuf(context.collectionId), ccf.strToBuf(value)); }";
const CHECK_METADATA =
  "export function main(user) { const value = ccf.kv['public:payment_metadata'].get(ccf.strToBuf(user)); " +
  "if (value === undefined) { throw new Error('UnknownUser'); } return ccf.bufToStr(value); }";

let server;
let client;

before(async () => {
  server = await LedgerServer.start();
  // No retries: the SDK's pipeline retries a 500 (a hook's refusal, as ACL answers it) three
  // times with back-off, which only slows the test down.
  client = server.client(undefined, { apiVersion: API_VERSION, retryOptions: { maxRetries: 0 } });
});

after(async () => {
  await server?.stopAndClean();
});

async function put(id, code) {
  const r = await client.path("/app/userDefinedFunctions/{functionId}", id).put({ contentType: "application/json", body: { code } });
  assert.equal(r.status, "201", describe(r));
  assert.deepEqual(r.body, { id, code });
}

async function write(collectionId, contents, preHooks = [], postHooks = []) {
  return client.path("/app/transactions").post({
    contentType: "application/json",
    queryParameters: { collectionId },
    body: {
      contents,
      preHooks: preHooks.map((functionId) => ({ functionId })),
      postHooks: postHooks.map((functionId) => ({ functionId })),
    },
  });
}

async function execute(id, args) {
  const r = await client.path("/app/userDefinedFunctions/{functionId}:execute", id).post({ contentType: "application/json", body: { arguments: args } });
  assert.equal(r.status, "200", describe(r));
  return r.body;
}

test("the published banking samples: a validating pre-hook, an enriching post-hook, a query", async () => {
  await put("validateTransaction", VALIDATE);
  await put("detectHighTransaction", DETECT_HIGH);
  await put("checkPaymentMetadataTable", CHECK_METADATA);

  const refused = await write("Mark", "This is not a number", ["validateTransaction"]);
  assert.equal(refused.status, "500", describe(refused));
  assert.equal(refused.body.error.code, "InternalError");
  assert.match(refused.body.error.message, /^Error while executing function validateTransaction: Error: Contents is not a number/);
  assert.equal(refused.headers["x-ms-ccf-transaction-id"], undefined, "a refused write names no transaction");

  for (const [user, amount] of [["Mark", "100"], ["John", "20"]]) {
    const r = await write(user, amount, ["validateTransaction"], ["detectHighTransaction"]);
    assert.equal(r.status, "200", describe(r));
    assert.match(r.headers["x-ms-ccf-transaction-id"], /^\d+\.\d+$/);
  }
  assert.deepEqual(await execute("checkPaymentMetadataTable", ["Mark"]), { status: "Succeeded", result: { returnValue: "Alert" }, logs: [] });
  assert.deepEqual((await execute("checkPaymentMetadataTable", ["John"])).result, { returnValue: "Normal" });
  const unknown = await execute("checkPaymentMetadataTable", ["Jane"]);
  assert.equal(unknown.status, "Failed");
  assert.match(unknown.error.message, /^Error while executing function checkPaymentMetadataTable: Error: UnknownUser/);

  const listed = await client.path("/app/userDefinedFunctions").get();
  assert.equal(listed.status, "200", describe(listed));
  assert.deepEqual(listed.body.functions.map((f) => f.id), ["checkPaymentMetadataTable", "detectHighTransaction", "validateTransaction"]);
  const deleted = await client.path("/app/userDefinedFunctions/{functionId}", "detectHighTransaction").delete();
  assert.equal(deleted.status, "204", describe(deleted));
});
