// Shared pieces of the browser tests: a `cledger serve` that trusts a local bearer-token issuer,
// the administrator's HTTPS calls (node:https with DATA_DIR/admin.pem, pinned to the service
// certificate), bulk writes, `cledger notarize`, and headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core, which downloads no browser).
//
// The server itself is tests/js/server.mjs's LedgerServer (it imports the JavaScript SDK, which
// resolves from tests/js/node_modules: `npm ci --prefix tests/js` first, as scripts/test.sh does).

import { execFile } from "node:child_process";
import { createHash, generateKeyPairSync, randomUUID, sign } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { LedgerServer, REPO_ROOT } from "../js/server.mjs";

export { LedgerServer, REPO_ROOT };

/** Where screenshots go (one PNG per state the tests look at). */
export const ARTIFACTS_DIR = join(REPO_ROOT, "target", "test-artifacts", "web");
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
export const WAIT_MS = 15_000;
export const WRITE_API_VERSION = "2023-01-18-preview"; // receipts then carry applicationClaims
export const API_VERSION = "2022-05-13";

const b64url = (data) => Buffer.from(data).toString("base64url");

/**
 * A local token issuer: a P-256 key, its JWKS, and ES256 JWTs signed by hand (compact JWS), shaped
 * like Entra ID access tokens (`iss`, `aud`, `tid`, `oid`, `iat`, `nbf`, `exp`; the server's
 * default user claim is `oid`). Like tests/python/token_issuer.py, with an EC key.
 */
export class LocalIssuer {
  constructor({ issuer = "https://login.example.test/tenant-1/v2.0", audience = "https://confidential-ledger.azure.com", tenant = "tenant-1", kid = "web-test-key-1" } = {}) {
    Object.assign(this, { issuer, audience, tenant, kid });
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    this.privateKey = privateKey;
    this.publicJwk = { ...publicKey.export({ format: "jwk" }), kid, use: "sig", alg: "ES256" };
  }

  writeJwks(path) {
    writeFileSync(path, JSON.stringify({ keys: [this.publicJwk] }));
    return path;
  }

  /** `cledger serve` flags trusting this issuer (its keys from the JWKS file at `jwksPath`). */
  serveArgs(jwksPath) {
    return ["--jwt-issuer", this.issuer, "--jwt-audience", this.audience, "--jwt-jwks-file", jwksPath, "--jwt-tenant-id", this.tenant];
  }

  token(oid, { lifetime = 3600, ...overrides } = {}) {
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: this.issuer, aud: this.audience, tid: this.tenant, oid, iat: now - 10, nbf: now - 10, exp: now + lifetime, ...overrides };
    const header = { alg: "ES256", typ: "JWT", kid: this.kid };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = sign("sha256", Buffer.from(input), { key: this.privateKey, dsaEncoding: "ieee-p1363" });
    return `${input}.${b64url(signature)}`;
  }
}

/**
 * HTTPS calls to the ledger: `identity` is {cert, key} PEM (default: the administrator's
 * DATA_DIR/admin.pem), `{token}` for a bearer token, or `null` for neither. The service
 * certificate is the only trusted root. Resolves {status, headers, body (parsed JSON or text)}.
 */
export class Api {
  constructor(server, identity) {
    this.server = server;
    const tls = identity === undefined ? { cert: readFileSync(server.adminPemPath), key: readFileSync(server.adminPemPath) } : identity && identity.cert ? identity : {};
    this.token = identity && identity.token ? identity.token : null;
    this.agent = new Agent({ keepAlive: true, maxSockets: 16, ca: server.serviceCertPem, ...tls });
  }

  call(method, path, body = undefined, contentType = "application/json") {
    const payload = body === undefined ? undefined : Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
    const headers = { accept: "application/json" };
    if (payload) Object.assign(headers, { "content-type": contentType, "content-length": payload.length });
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const url = new URL(path, this.server.endpoint);
    return new Promise((resolve, reject) => {
      const req = request(url, { method, headers, agent: this.agent, servername: "localhost" }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed = text;
          try {
            parsed = text ? JSON.parse(text) : null;
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode, headers: res.headers, body: parsed, describe: `${method} ${path} → ${res.statusCode} ${text.slice(0, 500)}` });
        });
      });
      req.setTimeout(WAIT_MS, () => req.destroy(new Error(`${method} ${path}: no response within ${WAIT_MS} ms`)));
      req.on("error", reject);
      if (payload) req.write(payload);
      req.end();
    });
  }

  async ok(method, path, body, contentType) {
    const response = await this.call(method, path, body, contentType);
    if (response.status < 200 || response.status >= 300) throw new Error(`unexpected response: ${response.describe}`);
    return response;
  }

  /** PATCH /app/users/{id} {"assignedRole": role} (merge-patch, as the SDKs send it). */
  setRole(userId, role) {
    return this.ok("PATCH", `/app/users/${encodeURIComponent(userId)}?api-version=${API_VERSION}`, { assignedRole: role }, "application/merge-patch+json");
  }

  /** POST /app/transactions; returns the transaction id. */
  async write(contents, collectionId = "subledger:0") {
    const query = new URLSearchParams({ "api-version": WRITE_API_VERSION, collectionId });
    const response = await this.ok("POST", `/app/transactions?${query}`, { contents });
    const txid = response.headers["x-ms-ccf-transaction-id"];
    if (!/^\d+\.\d+$/.test(txid ?? "")) throw new Error(`no transaction id: ${response.describe}`);
    return txid;
  }

  /** `count` entries written `concurrency` at a time; the txids in the order of `contentsOf(i)`. */
  async writeMany(count, { concurrency = 16, collectionId = "subledger:0", contentsOf = (i) => `web test entry ${i}` } = {}) {
    const txids = new Array(count);
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const i = next++;
        txids[i] = await this.write(contentsOf(i), collectionId);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
    return txids;
  }

  /** Polls GET /app/transactions/{id}/status until Committed. */
  async waitCommitted(txid, timeoutMs = WAIT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const response = await this.ok("GET", `/app/transactions/${txid}/status?api-version=${API_VERSION}`);
      if (response.body?.state === "Committed") return;
      if (Date.now() > deadline) throw new Error(`${txid} not Committed within ${timeoutMs} ms: ${response.describe}`);
      await sleep(50);
    }
  }

  close() {
    this.agent.destroy();
  }
}

/** A fresh temporary directory. */
export function tempDir(prefix = "cledger-web-") {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * `cledger notarize <file> ...` with the administrator's certificate; returns the evidence
 * package's path (`<file>.evidence.json`) and its parsed JSON.
 */
export async function notarize(server, file, extraArgs = []) {
  const args = ["notarize", file, "--endpoint", server.endpoint, "--cert", server.adminPemPath, "--service-cert", server.serviceCertPath, ...extraArgs];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CLEDGER_")));
  try {
    await promisify(execFile)(server.binary, args, { env, timeout: 30_000 });
  } catch (error) {
    throw new Error(`cledger ${args.join(" ")} failed: ${error.stderr || error.message}`);
  }
  const path = `${file}.evidence.json`;
  return { path, evidence: JSON.parse(readFileSync(path, "utf8")) };
}

export function sha256Hex(data) {
  return createHash("sha256").update(data).digest("hex");
}

/** Changes one character of a string (base64, hex or text alike) at index `at` (default: middle). */
export function flipChar(text, at = Math.floor(text.length / 2)) {
  const c = text[at];
  const replacement = c === "A" ? "B" : c === "0" ? "1" : /[0-9]/.test(c) ? "0" : /[a-z]/.test(c) ? (c === "a" ? "b" : "a") : "A";
  return text.slice(0, at) + replacement + text.slice(at + 1);
}

/**
 * A base64 DER ECDSA signature with the lowest bit of its last byte (the end of the INTEGER s)
 * flipped: still well-formed DER, so the verifier must reject it cryptographically, not parse it
 * away as malformed.
 */
export function flipSignatureBit(base64) {
  const bytes = Buffer.from(base64, "base64");
  bytes[bytes.length - 1] ^= 1;
  return bytes.toString("base64");
}

/** Headless Debian Chromium (no sandbox: the tests run as root in a container). */
export async function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
}

/**
 * A browser context for the ledger's pages. The ledger's TLS certificate is issued by its own
 * service CA, which Chromium does not trust; trust is not what these tests are about.
 */
export function newContext(browser, options = { viewport: { width: 1280, height: 900 } }) {
  return browser.newContext({ ignoreHTTPSErrors: true, ...options });
}

/** A full-page screenshot at target/test-artifacts/web/<name>.png; returns its path. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const path = join(ARTIFACTS_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Waits until `selector`'s data-state is final (not idle/running); returns it. */
export async function waitVerdict(page, selector, timeout = WAIT_MS) {
  const handle = await page.waitForFunction(
    (sel) => {
      const state = document.querySelector(sel)?.getAttribute("data-state");
      return state && state !== "idle" && state !== "running" ? state : null;
    },
    selector,
    { timeout },
  );
  return handle.jsonValue();
}

/** The checks under `listSelector`: {id: {status, title, detail}}, in order. */
export async function readChecks(page, listSelector) {
  const rows = await page.$$eval(`${listSelector} > li[data-check]`, (items) =>
    items.map((li) => ({
      id: li.getAttribute("data-check"),
      status: li.getAttribute("data-status"),
      title: li.querySelector(".check-title")?.textContent.trim() ?? "",
      detail: li.querySelector(".check-detail")?.textContent.trim() ?? "",
    })),
  );
  return Object.fromEntries(rows.map(({ id, ...rest }) => [id, rest]));
}

/** A readable dump of checks for assertion messages. */
export function describeChecks(checks) {
  return Object.entries(checks)
    .map(([id, c]) => `  ${id}: ${c.status}${c.detail ? ` (${c.detail})` : ""}`)
    .join("\n");
}

export { randomUUID };
