// The web pages `cledger serve` serves without authentication, in a real browser (Debian's
// headless Chromium driven by playwright-core): /verify checks an evidence package made by
// `cledger notarize` entirely in the browser (no request leaves the page; CSP connect-src
// 'none'), also on a phone-sized screen and by keyboard alone; /explorer browses the ledger
// through the public REST API with a bearer token or the browser's client certificate, pages
// through a collection and verifies an entry's receipt.
//
// One server for the file: it trusts a local token issuer (harness.mjs) and holds 250 entries in
// subledger:0 plus one notarized document (collection `documents`). Every state the tests look at
// is saved as a full-page screenshot under target/test-artifacts/web/.
//
// The tests are written against the pages' DOM contract (element ids, data-state/data-check/
// data-status attributes); see the assertions below.

import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  ARTIFACTS_DIR,
  Api,
  LedgerServer,
  LocalIssuer,
  WAIT_MS,
  describeChecks,
  flipChar,
  flipSignatureBit,
  launchChromium,
  newContext,
  notarize,
  randomUUID,
  readChecks,
  screenshot,
  sha256Hex,
  tempDir,
  waitVerdict,
} from "./harness.mjs";

const ENTRY_COUNT = 250;
const PACKAGE_CHECKS = ["package", "service-certificate", "certificate-chain", "claims-digest", "inclusion", "signature", "transaction-id", "cose-receipt", "checkpoint", "entry", "document", "file"];
const RECEIPT_CHECKS = ["service-certificate", "certificate-chain", "claims-digest", "inclusion", "signature", "transaction-id", "entry"];

let dir, server, admin, browser, launching, context, token;
let txids = [];
const files = {}; // package, document, serviceCert, tamperedSignature, tamperedDocumentSha256, changedDocument, notJson
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;

before(async () => {
  rmSync(ARTIFACTS_DIR, { recursive: true, force: true });
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  dir = tempDir();
  const issuer = new LocalIssuer();
  // Chromium starts while the ledger is filled; `after` closes it even if the setup fails.
  launching = launchChromium().then((b) => (browser = b));
  launching.catch(() => {}); // awaited (and reported) below
  // Checkpoints every 500 ms: `cledger notarize` waits for one to put in the package.
  server = await LedgerServer.start([...issuer.serveArgs(issuer.writeJwks(join(dir, "jwks.json"))), "--checkpoint-interval-ms", "500"]);
  admin = new Api(server);

  // A Reader known only by its token's object id.
  const oid = randomUUID();
  await admin.setRole(oid, "Reader");
  token = issuer.token(oid);

  txids = await admin.writeMany(ENTRY_COUNT, { concurrency: 16 });
  await admin.waitCommitted(txids.at(-1));

  // A notarized document and its evidence package, then the variants the verifier must refuse.
  const documentText = "This agreement is made between the parties named below.\n".repeat(40);
  files.document = join(dir, "contract.txt");
  writeFileSync(files.document, documentText);
  const { path, evidence } = await notarize(server, files.document, ["--collection", "documents", "--note", "browser test"]);
  files.package = path;
  files.evidence = evidence;
  files.serviceCert = server.serviceCertPath;
  assert.equal(evidence.document?.sha256, sha256Hex(documentText), "the package records the document's SHA-256");

  const variant = (name, mutate) => {
    const copy = structuredClone(evidence);
    mutate(copy);
    const file = join(dir, name);
    writeFileSync(file, JSON.stringify(copy, null, 2));
    return file;
  };
  files.tamperedSignature = variant("tampered-signature.evidence.json", (p) => (p.receipt.receipt.signature = flipSignatureBit(p.receipt.receipt.signature)));
  files.tamperedDocumentSha256 = variant("tampered-document-sha256.evidence.json", (p) => (p.document.sha256 = flipChar(p.document.sha256)));
  files.notJson = join(dir, "not-json.evidence.json");
  writeFileSync(files.notJson, "this is not JSON {");
  // Same name and size, one byte different.
  mkdirSync(join(dir, "changed"));
  files.changedDocument = join(dir, "changed", "contract.txt");
  writeFileSync(files.changedDocument, documentText.replace("agreement", "agreemenT"));
  assert.equal(readFileSync(files.changedDocument).length, readFileSync(files.document).length);

  await launching;
  context = await newContext(browser);
  context.setDefaultTimeout(WAIT_MS);
  console.log(`# setup done in ${elapsed()}: server ${server.endpoint}, ${ENTRY_COUNT} entries (last ${txids.at(-1)}), package ${files.package}, Chromium ${browser.version()}; screenshots in ${ARTIFACTS_DIR}`);
});

after(async () => {
  await launching?.catch(() => {});
  await browser?.close();
  admin?.close();
  await server?.stopAndClean();
  if (dir) rmSync(dir, { recursive: true, force: true });
  console.log(`# done in ${elapsed()}`);
});

/** A new page that records uncaught errors (asserted empty by `closePage`). */
async function openPage(browserContext = context) {
  const page = await browserContext.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error?.stack ?? error)));
  return { page, errors };
}

async function closePage({ page, errors }) {
  await page.close();
  assert.deepEqual(errors, [], "uncaught errors in the page");
}

async function shot(t, page, name) {
  const path = await screenshot(page, name);
  t.diagnostic(`screenshot: ${path}`);
}

// ---------------------------------------------------------------------------------------------
// /verify

/** Opens /verify, chooses the optional inputs, then the package (so verification runs once). */
async function verifyInPage(page, { pkg, documentFile, certFile }) {
  const response = await page.goto(`${server.endpoint}/verify`, { waitUntil: "networkidle" });
  assert.equal(response.status(), 200, "GET /verify");
  assert.equal(await page.getAttribute("#verdict", "data-state"), "idle", "#verdict before a package is chosen");
  if (certFile) await page.setInputFiles("input#cert-file", certFile);
  if (documentFile) await page.setInputFiles("input#document-file", documentFile);
  await page.setInputFiles("input#package-file", pkg);
  const state = await waitVerdict(page, "#verdict");
  const checks = await readChecks(page, "ol#checks");
  return { state, checks, response };
}

function assertCheckIds(checks, expected) {
  for (const id of expected) assert.ok(id in checks, `check ${id} is listed:\n${describeChecks(checks)}`);
  for (const [id, c] of Object.entries(checks)) {
    assert.ok(["pass", "fail", "skip"].includes(c.status), `check ${id} has data-status ${c.status}`);
    assert.notEqual(c.title, "", `check ${id} has a .check-title`);
    if (c.status === "fail") assert.notEqual(c.detail, "", `failed check ${id} explains why in .check-detail`);
  }
}

describe("/verify", () => {
  test("a valid package with its document and the pinned service certificate is verified", async (t) => {
    const p = await openPage();
    const { state, checks } = await verifyInPage(p.page, { pkg: files.package, documentFile: files.document, certFile: files.serviceCert });
    await shot(t, p.page, "verify-valid");
    assert.equal(state, "verified", `verdict:\n${describeChecks(checks)}`);
    assertCheckIds(checks, PACKAGE_CHECKS);
    for (const id of PACKAGE_CHECKS) {
      const allowed = id === "checkpoint" ? ["pass", "skip"] : ["pass"]; // no witnesses configured
      assert.ok(allowed.includes(checks[id].status), `check ${id} is ${checks[id].status}:\n${describeChecks(checks)}`);
    }
    assert.equal(checks.file.status, "pass");
    await closePage(p);
  });

  for (const [name, pkg, failing] of [
    ["one bit of the receipt's signature changed", () => files.tamperedSignature, "signature"],
    ["the document's SHA-256 in the package changed by one character", () => files.tamperedDocumentSha256, "document"],
  ]) {
    test(`a tampered package fails: ${name}`, async (t) => {
      const p = await openPage();
      const { state, checks } = await verifyInPage(p.page, { pkg: pkg(), documentFile: files.document, certFile: files.serviceCert });
      await shot(t, p.page, `verify-tampered-${failing}`);
      assert.equal(state, "failed", `verdict:\n${describeChecks(checks)}`);
      assertCheckIds(checks, PACKAGE_CHECKS);
      assert.equal(checks[failing].status, "fail", `check ${failing}:\n${describeChecks(checks)}`);
      assert.notEqual(checks[failing].detail, "");
      t.diagnostic(`${failing}: ${checks[failing].detail}`);
      await closePage(p);
    });
  }

  test("a file that is not JSON is an error, not a failed verification", async (t) => {
    const p = await openPage();
    const { state, checks } = await verifyInPage(p.page, { pkg: files.notJson });
    await shot(t, p.page, "verify-not-json");
    assert.equal(state, "error", `verdict:\n${describeChecks(checks)}`);
    await closePage(p);
  });

  test("dropping the package, the document and the certificate onto the page verifies them", async (t) => {
    const p = await openPage();
    const { page } = p;
    await page.goto(`${server.endpoint}/verify`, { waitUntil: "networkidle" });
    // A drop as the browser delivers it: one DataTransfer holding the three files, in any order.
    const dropped = [
      { name: "contract.txt", base64: readFileSync(files.document).toString("base64") },
      { name: "service_cert.pem", base64: readFileSync(files.serviceCert).toString("base64") },
      { name: "contract.txt.evidence.json", base64: readFileSync(files.package).toString("base64") },
    ];
    await page.evaluate((list) => {
      const transfer = new DataTransfer();
      for (const { name, base64 } of list) transfer.items.add(new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], name));
      document.getElementById("drop-zone").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }, dropped);
    const state = await waitVerdict(page, "#verdict");
    const checks = await readChecks(page, "ol#checks");
    await shot(t, page, "verify-dropped");
    assert.equal(state, "verified", describeChecks(checks));
    assert.equal(checks.file.status, "pass", "the dropped document was recognised as the document");
    assert.equal(checks["service-certificate"].status, "pass", "the dropped certificate was pinned");
    await closePage(p);
  });

  test("a changed document (same size, one byte different) fails the file check", async (t) => {
    const p = await openPage();
    const { state, checks } = await verifyInPage(p.page, { pkg: files.package, documentFile: files.changedDocument, certFile: files.serviceCert });
    await shot(t, p.page, "verify-changed-document");
    assert.equal(state, "failed", `verdict:\n${describeChecks(checks)}`);
    assertCheckIds(checks, PACKAGE_CHECKS);
    assert.equal(checks.file.status, "fail", `check file:\n${describeChecks(checks)}`);
    assert.match(checks.file.detail, /hash|sha-?256|digest|[0-9a-f]{64}/i, "the file check's detail is about the hash");
    await closePage(p);
  });

  test("verifying makes no request, and the page's CSP forbids connections", async (t) => {
    const p = await openPage();
    const { page } = p;
    const response = await page.goto(`${server.endpoint}/verify`, { waitUntil: "networkidle" });
    const csp = (await response.allHeaders())["content-security-policy"] ?? "";
    assert.match(csp, /(^|;)\s*connect-src\s+'none'\s*(;|$)/, `content-security-policy of /verify: ${JSON.stringify(csp)}`);

    const requests = [];
    page.on("request", (request) => requests.push(`${request.method()} ${request.url()}`));
    await page.setInputFiles("input#cert-file", files.serviceCert);
    await page.setInputFiles("input#document-file", files.document);
    await page.setInputFiles("input#package-file", files.package);
    const state = await waitVerdict(page, "#verdict");
    await page.waitForTimeout(300); // anything sent late still counts
    await shot(t, page, "verify-no-network");
    assert.equal(state, "verified", describeChecks(await readChecks(page, "ol#checks")));
    assert.deepEqual(requests, [], "requests made by /verify after it loaded");

    // The browser enforces the policy: the page could not send anything even if it tried.
    const probe = await page.evaluate(() => fetch("/verify").then(() => "sent", () => "blocked"));
    assert.equal(probe, "blocked", "fetch() from /verify");
    await closePage(p);
  });
});

/** What keeps a page usable without a mouse or a wide screen (none of these may be listed). */
const usabilityProblems = (page) =>
  page.evaluate(() => {
    const problems = [];
    if (document.documentElement.scrollWidth > window.innerWidth) problems.push(`scrolls sideways: ${document.documentElement.scrollWidth} > ${window.innerWidth} px`);
    for (const field of document.querySelectorAll("input, textarea")) if (field.labels.length === 0) problems.push(`#${field.id} has no label`);
    for (const button of document.querySelectorAll("button")) if (!(button.getAttribute("aria-label") || button.textContent.trim())) problems.push(`a button has no name: ${button.outerHTML}`);
    return problems;
  });

test("/verify on a phone, by keyboard only: Tab to the drop zone, Enter chooses the package", async (t) => {
  const phone = await newContext(browser, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  try {
    const p = await openPage(phone);
    const { page } = p;
    // Listening before the page loads: Playwright intercepts file choosers only once a listener
    // exists, and turning that on is asynchronous.
    const chooser = page.waitForEvent("filechooser");
    await page.goto(`${server.endpoint}/verify`, { waitUntil: "networkidle" });
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "drop-zone", "the first Tab stop");
    await page.keyboard.press("Enter");
    await (await chooser).setFiles(files.package);
    assert.equal(await waitVerdict(page, "#verdict"), "verified", describeChecks(await readChecks(page, "ol#checks")));
    await shot(t, page, "verify-phone");
    assert.deepEqual(await usabilityProblems(page), []);
    await closePage(p);
  } finally {
    await phone.close();
  }
});

// ---------------------------------------------------------------------------------------------
// /explorer

/** The txids of the rows of table#entries, in order. */
const rowTxids = (page) => page.$$eval("table#entries tbody tr[data-txid]", (rows) => rows.map((r) => r.getAttribute("data-txid")));

/** Clicks `button` (#page-next / #page-prev) and waits until another page is shown. */
async function turnPage(page, button) {
  const before = { txids: (await rowTxids(page)).join(","), info: await page.textContent("#page-info") };
  await page.click(button);
  await page.waitForFunction(
    ({ txids, info }) => {
      const rows = [...document.querySelectorAll("table#entries tbody tr[data-txid]")].map((r) => r.getAttribute("data-txid"));
      const infoNow = document.querySelector("#page-info")?.textContent;
      return rows.join(",") !== txids || (infoNow !== info && rows.length === 0);
    },
    before,
    { timeout: WAIT_MS },
  );
  return rowTxids(page);
}

describe("/explorer", () => {
  test("with a bearer token: collections, paging through 250 entries, an entry and its verified receipt", async (t) => {
    const p = await openPage();
    const { page } = p;
    const response = await page.goto(`${server.endpoint}/explorer`);
    assert.equal(response.status(), 200, "GET /explorer");
    await page.fill("textarea#token-input", token);
    await page.click("button#token-submit");
    await page.waitForSelector('#collections button[data-collection="subledger:0"]');
    await page.waitForSelector('#collections button[data-collection="documents"]');
    await shot(t, page, "explorer-collections");

    await page.click('#collections button[data-collection="subledger:0"]');
    await page.waitForSelector("table#entries tbody tr[data-txid]");
    assert.equal(await page.isDisabled("button#page-prev"), true, "#page-prev on the first page");
    const pages = [await rowTxids(page)];
    await shot(t, page, "explorer-page-1");
    assert.deepEqual(await usabilityProblems(page), [], "/explorer");
    while (!(await page.isDisabled("button#page-next"))) {
      assert.ok(pages.length < 100, "more than 100 pages: #page-next never gets disabled");
      pages.push(await turnPage(page, "button#page-next"));
      assert.notEqual((await page.textContent("#page-info")).trim(), "", "#page-info");
      await shot(t, page, `explorer-page-${pages.length}`);
    }
    const seen = new Set(pages.flat());
    const missing = txids.filter((txid) => !seen.has(txid));
    assert.deepEqual(missing, [], `written entries not shown on any of ${pages.length} pages`);
    assert.ok(pages.length >= 2, `${ENTRY_COUNT} entries on ${pages.length} page(s): paging is not exercised`);
    t.diagnostic(`${seen.size} entries on ${pages.length} pages (${pages.map((r) => r.length).join(" + ")})`);

    const back = await turnPage(page, "button#page-prev");
    assert.deepEqual(back, pages.at(-2), "#page-prev shows the previous page again");
    assert.equal(await page.isDisabled("button#page-next"), false, "#page-next after going back");
    await shot(t, page, "explorer-page-back");

    const txid = back[0];
    assert.ok(txids.includes(txid), `${txid} is one of the written entries`);
    await page.click(`table#entries tbody tr[data-txid="${txid}"] button.entry-open`);
    await page.waitForSelector("#entry-detail", { state: "visible" });
    await page.waitForFunction(() => /Committed/.test(document.querySelector("#entry-status")?.textContent ?? ""), null, { timeout: WAIT_MS });
    assert.match(await page.textContent("#entry-status"), /\bCommitted\b/, "#entry-status");
    await shot(t, page, "explorer-entry");

    // Unpinned: the receipt is checked against the certificate the ledger serves; the
    // service-certificate check may then say so (skip) rather than pass.
    await page.click("button#verify-receipt");
    const state = await waitVerdict(page, "#receipt-verdict");
    const checks = await readChecks(page, "ol#receipt-checks");
    await shot(t, page, "explorer-receipt");
    assert.equal(state, "verified", `receipt of ${txid}:\n${describeChecks(checks)}`);
    assertCheckIds(checks, RECEIPT_CHECKS);
    for (const id of RECEIPT_CHECKS) {
      const allowed = id === "service-certificate" ? ["pass", "skip"] : ["pass"];
      assert.ok(allowed.includes(checks[id].status), `receipt check ${id}:\n${describeChecks(checks)}`);
    }

    // Pinned (input#explorer-cert-file): every receipt check passes.
    await page.setInputFiles("input#explorer-cert-file", files.serviceCert);
    await page.click("button#verify-receipt");
    await page.waitForSelector('ol#receipt-checks > li[data-check="service-certificate"][data-status="pass"]');
    const pinnedState = await waitVerdict(page, "#receipt-verdict");
    const pinned = await readChecks(page, "ol#receipt-checks");
    await shot(t, page, "explorer-receipt-pinned");
    assert.equal(pinnedState, "verified", `receipt of ${txid}, service certificate pinned:\n${describeChecks(pinned)}`);
    assertCheckIds(pinned, RECEIPT_CHECKS);
    for (const id of RECEIPT_CHECKS) assert.equal(pinned[id].status, "pass", `receipt check ${id} (pinned):\n${describeChecks(pinned)}`);
    const error = await page.evaluate(() => document.querySelector("#explorer-error")?.textContent.trim() ?? "");
    assert.equal(error, "", "#explorer-error after a successful session");
    await closePage(p);
  });

  test("with the browser's client certificate (the administrator's): an entry and its verified receipt", async (t) => {
    // Playwright presents the certificate in the TLS handshake, as a browser with it installed would.
    const pem = readFileSync(server.adminPemPath, "utf8");
    const block = (label) => pem.match(new RegExp(`-----BEGIN ${label}-----[\\s\\S]+?-----END ${label}-----\\n?`))[0];
    const withCert = await newContext(browser, {
      viewport: { width: 1280, height: 900 },
      clientCertificates: [{ origin: server.endpoint, cert: Buffer.from(block("CERTIFICATE")), key: Buffer.from(block("(?:EC |)PRIVATE KEY")) }],
    });
    withCert.setDefaultTimeout(WAIT_MS);
    try {
      const p = await openPage(withCert);
      const { page } = p;
      await page.goto(`${server.endpoint}/explorer`);
      await page.click("button#use-client-cert");
      await page.click('#collections button[data-collection="documents"]');
      await page.click(`table#entries tbody tr[data-txid="${files.evidence.transactionId}"] button.entry-open`);
      await page.waitForFunction(() => /Committed/.test(document.querySelector("#entry-status")?.textContent ?? ""));
      await page.click("button#verify-receipt");
      const state = await waitVerdict(page, "#receipt-verdict");
      const checks = await readChecks(page, "ol#receipt-checks");
      await shot(t, page, "explorer-client-certificate");
      assert.equal(state, "verified", describeChecks(checks));
      assert.equal(checks.entry.status, "pass", "the notarized entry is the one its receipt reveals");
      await closePage(p);
    } finally {
      await withCert.close();
    }
  });

  test("without a token and without a client certificate: a clear 401 message", async (t) => {
    // A fresh context: no token remembered from the previous test, and Chromium has no client
    // certificate to offer, so the ledger sees an unauthenticated caller.
    const fresh = await newContext(browser);
    fresh.setDefaultTimeout(WAIT_MS);
    const p = await openPage(fresh);
    const { page } = p;
    const response = await page.goto(`${server.endpoint}/explorer`);
    assert.equal(response.status(), 200, "GET /explorer");
    await page.click("button#use-client-cert");
    await page.waitForFunction(() => (document.querySelector("#explorer-error")?.textContent ?? "").trim() !== "", null, { timeout: WAIT_MS });
    await shot(t, page, "explorer-no-credentials");
    assert.equal(await page.isVisible("#explorer-error"), true, "#explorer-error is visible");
    const message = (await page.textContent("#explorer-error")).trim();
    assert.match(message, /401|not authenticated|unauthori[sz]ed|authenticat/i, `#explorer-error: ${message}`);
    await closePage(p);
    await fresh.close();
  });
});
