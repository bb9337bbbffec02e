// Paging with the SDK's own `paginate` over more than 100 entries (more than one page), and
// the collections list. The SDK appends `api-version` to every request, including the
// `nextLink` follow-ups that already carry it, so page 2 and later arrive with the parameter
// twice (equal values); this file proves the ledger answers them.

import assert from "node:assert/strict";
import { after, before, describe as suite, test } from "node:test";
import { paginate } from "@azure-rest/confidential-ledger";
import { LedgerServer } from "./server.mjs";
import { DEFAULT_COLLECTION, createEntry, describe, expectOk, getEntry, seqno, waitCommitted } from "./helpers.mjs";

const PAGED_ENTRIES = 130; // > one page of at most 100
const BATCH = 10; // concurrent writes at a time
// Characters that need encoding in a query, so the nextLink round trip is exercised too.
const PAGED_COLLECTION = "js-paging/ü&b=c#?+%";
const OTHER_COLLECTIONS = ["js-a", "日本語/x", "q?a&b=c#d", "subledger:1"];

let server;
let client;
/** Every request URL the SDK sent (recorded after its api-version policy). */
const sent = [];
/** The paged collection's writes: txid → contents. */
const written = new Map();

before(async () => {
  server = await LedgerServer.start();
  const recorder = {
    name: "recordRequestUrls",
    sendRequest: (request, next) => {
      sent.push(request.url);
      return next(request);
    },
  };
  client = server.client(undefined, { additionalPolicies: [{ policy: recorder, position: "perRetry" }] });

  for (let start = 0; start < PAGED_ENTRIES; start += BATCH) {
    const batch = [];
    for (let i = start; i < Math.min(start + BATCH, PAGED_ENTRIES); i++) {
      const contents = `paged entry ${i}`;
      batch.push(createEntry(client, contents, PAGED_COLLECTION).then((txid) => written.set(txid, contents)));
    }
    await Promise.all(batch);
  }
  assert.equal(written.size, PAGED_ENTRIES, "every write got its own transaction id");
  for (const txid of written.keys()) await waitCommitted(client, txid);
});

after(async () => {
  await server?.stopAndClean();
});

/** The written txids in ledger order. */
const inOrder = () => [...written.keys()].sort((a, b) => seqno(a) - seqno(b));

/** All pages of a listing through `paginate(...).byPage()`, and the requests it made. */
async function listPages(queryParameters) {
  const first = sent.length;
  const initial = await client.path("/app/transactions").get({ queryParameters });
  expectOk(initial);
  const pages = [];
  for await (const page of paginate(client, initial).byPage()) pages.push(page);
  return { initial, pages, requests: sent.slice(first) };
}

function checkEntries(entries, expectedTxids, what) {
  const got = entries.map((e) => e.transactionId);
  assert.equal(new Set(got).size, got.length, `${what}: an entry came back twice`);
  assert.deepEqual(got, expectedTxids, `${what}: not every entry, or not in ledger order`);
  for (const entry of entries) {
    assert.deepEqual(entry, { contents: written.get(entry.transactionId), collectionId: PAGED_COLLECTION, transactionId: entry.transactionId }, what);
  }
}

suite("paging through paginate()", () => {
  test(`${PAGED_ENTRIES} entries between fromTransactionId and toTransactionId, over more than one page`, async () => {
    const txids = inOrder();
    const query = { collectionId: PAGED_COLLECTION, fromTransactionId: txids[0], toTransactionId: txids.at(-1) };
    const { initial, pages, requests } = await listPages(query);

    assert.ok(pages.length >= 2, `${PAGED_ENTRIES} entries came in ${pages.length} page(s)`);
    assert.equal(typeof initial.body.nextLink, "string", `the first page has a nextLink: ${describe(initial)}`);
    assert.ok(pages[0].length <= 100 && pages[0].length > 0, `first page size ${pages[0].length}`);
    checkEntries(pages.flat(), txids, "paged listing");

    // One request per page; the follow-ups are the nextLinks, with api-version twice (the SDK
    // appends it again), and they kept the collection and the upper bound.
    assert.equal(requests.length, pages.length, `requests: ${requests.join("\n")}`);
    for (const url of requests.slice(1)) {
      const params = new URL(url).searchParams;
      assert.deepEqual(params.getAll("api-version"), ["2022-05-13", "2022-05-13"], `follow-up ${url}`);
      assert.equal(params.get("collectionId"), PAGED_COLLECTION, `follow-up ${url}`);
      assert.equal(params.get("toTransactionId"), txids.at(-1), `follow-up ${url}`);
    }
    assert.equal(new URL(requests[1]).pathname, "/app/transactions");

    // Item by item, the same (the async iterator follows the same links).
    const items = [];
    for await (const entry of paginate(client, initial)) items.push(entry);
    checkEntries(items, txids, "paginate() items");
  });

  test("inclusive bounds in the middle of the collection", async () => {
    const txids = inOrder();
    const [from, to] = [7, 121];
    const { pages } = await listPages({ collectionId: PAGED_COLLECTION, fromTransactionId: txids[from], toTransactionId: txids[to] });
    assert.ok(pages.length >= 2, `${to - from + 1} entries came in ${pages.length} page(s)`);
    checkEntries(pages.flat(), txids.slice(from, to + 1), "sub-range");
  });

  test("the whole collection without bounds", async () => {
    const { pages } = await listPages({ collectionId: PAGED_COLLECTION });
    assert.ok(pages.length >= 2, `${PAGED_ENTRIES} entries came in ${pages.length} page(s)`);
    checkEntries(pages.flat(), inOrder(), "unbounded listing");
  });

  test("the default collection holds none of them", async () => {
    const marker = await createEntry(client, "default collection marker");
    const { pages } = await listPages({});
    const entries = pages.flat();
    assert.ok(entries.every((e) => e.collectionId === DEFAULT_COLLECTION), "an entry of another collection in the default one");
    assert.deepEqual(entries.map((e) => e.transactionId), [marker]);
  });
});

suite("collections", () => {
  test("/app/collections lists every collection written, once", async () => {
    for (const collection of OTHER_COLLECTIONS) {
      const txid = await createEntry(client, `in ${collection}`, collection);
      assert.equal((await getEntry(client, txid, collection)).entry.collectionId, collection);
      assert.equal(expectOk(await client.path("/app/transactions/current").get({ queryParameters: { collectionId: collection } })).contents, `in ${collection}`);
    }
    const initial = await client.path("/app/collections").get();
    expectOk(initial);
    const ids = [];
    for await (const item of paginate(client, initial)) ids.push(item.collectionId);
    assert.equal(new Set(ids).size, ids.length, `a collection listed twice: ${JSON.stringify(ids)}`);
    assert.deepEqual(new Set(ids), new Set([DEFAULT_COLLECTION, PAGED_COLLECTION, ...OTHER_COLLECTIONS]), "collections listed");
  });

  test(
    "a collection id with a space (the SDK README's own example) is the id the SDK sent",
    async () => {
      const collection = "js my collection";
      const response = await client.path("/app/transactions").post({ body: { contents: "spaced" }, queryParameters: { collectionId: collection } });
      assert.equal(expectOk(response).collectionId, collection, describe(response));
      const current = await client.path("/app/transactions/current").get({ queryParameters: { collectionId: collection } });
      assert.equal(expectOk(current).collectionId, collection, describe(current));
      const ids = expectOk(await client.path("/app/collections").get()).collections.map((c) => c.collectionId);
      assert.ok(ids.includes(collection), `collections: ${JSON.stringify(ids)}`);
    },
  );
});
