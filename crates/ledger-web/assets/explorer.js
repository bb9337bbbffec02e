import { certificateFingerprint, verifyReceiptResponse } from "./verify.mjs";
import { showReport, showVerdict } from "./report-view.js";

// The read-only ledger explorer: collections, pages of entries, an entry's status and receipt,
// and the receipt verified in the browser by verify.mjs. It calls only this origin's public REST
// API (the CSP allows nothing else). A pasted bearer token lives in a variable of this module and
// nowhere else; without one, requests carry whatever client certificate the browser presents.

// The newest stable version: its receipts show the entry's applicationClaims (2024-12-09-preview's do not).
const API_VERSION = "2026-02-23";
const LEDGER_ID = document.querySelector('meta[name="cledger-ledger-id"]').content;
const POLL_MS = 300;
const POLL_TRIES = 30;

const $ = (id) => document.getElementById(id);
let token = null;
/** Increments on every navigation, so that a late answer to an older one is dropped. */
let generation = 0;
const paging = { collection: null, urls: [], index: 0, next: null };
let openEntry = null; // { entry, receipt }

class ApiError extends Error {}

function withVersion(path) {
  const url = new URL(path, location.origin);
  url.searchParams.set("api-version", API_VERSION);
  return url.pathname + url.search;
}

/** GET on this origin's API; the parsed JSON, or an ApiError saying what the ledger answered. */
async function api(path) {
  const headers = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(withVersion(path), { headers, credentials: "same-origin", cache: "no-store" });
  } catch (e) {
    throw new ApiError(`The ledger could not be reached: ${e.message}`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // an error page that is not JSON: reported by status below
  }
  if (!response.ok) {
    const error = body?.error;
    const why = error ? `${error.code}: ${error.message}` : text.slice(0, 200) || response.statusText;
    const hint = response.status === 401 ? " (sign in with a token, or a client certificate this ledger knows)" : "";
    throw new ApiError(`${response.status} ${why}${hint}`);
  }
  return body;
}

/** Like `api`, polling while the ledger answers `state: "Loading"`. */
async function apiReady(path) {
  for (let i = 0; i < POLL_TRIES; i++) {
    const body = await api(path);
    if (body?.state !== "Loading") return body;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new ApiError(`the ledger is still loading ${path}; try again`);
}

function showError(error) {
  $("explorer-error").textContent = error ? error.message : "";
  $("explorer-error").hidden = !error;
}

async function guarded(action) {
  try {
    await action();
    showError(null);
  } catch (e) {
    showError(e);
  }
}

async function signIn(withToken) {
  token = withToken;
  $("token-input").value = ""; // the token stays only in `token`
  await guarded(async () => {
    const body = await api("/app/collections");
    $("auth").hidden = true;
    $("browser").hidden = false;
    const ids = (body.collections ?? []).map((c) => c.collectionId);
    $("collections").replaceChildren(
      ...ids.map((id) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "secondary";
        button.dataset.collection = id;
        button.setAttribute("aria-pressed", "false");
        button.textContent = id;
        button.addEventListener("click", () => guarded(() => openCollection(id)));
        return button;
      }),
    );
    if (ids.length === 0) $("page-info").textContent = "This ledger has no entries yet.";
  });
}

function signOut() {
  token = null;
  generation++;
  $("browser").hidden = true;
  $("entry-detail").hidden = true;
  $("auth").hidden = false;
  showError(null);
}

async function openCollection(id) {
  for (const button of $("collections").querySelectorAll("button")) button.setAttribute("aria-pressed", String(button.dataset.collection === id));
  $("entries-collection").textContent = `in ${id}`;
  Object.assign(paging, { collection: id, urls: [`/app/transactions?collectionId=${encodeURIComponent(id)}`], index: 0, next: null });
  await showPage();
}

async function showPage() {
  const mine = ++generation;
  const body = await apiReady(paging.urls[paging.index]);
  if (mine !== generation) return;
  const entries = body.entries ?? [];
  paging.next = body.nextLink ?? body["@nextLink"] ?? null;
  $("entries").tBodies[0].replaceChildren(...entries.map(entryRow));
  $("page-info").textContent = entries.length ? `Page ${paging.index + 1}: ${entries.length} entries (${entries[0].transactionId} \u2026 ${entries[entries.length - 1].transactionId})` : paging.index === 0 ? "No entries in this collection." : "No more entries.";
  $("page-prev").disabled = paging.index === 0;
  $("page-next").disabled = !paging.next;
}

function entryRow(entry) {
  const row = document.createElement("tr");
  row.dataset.txid = entry.transactionId;
  const txid = document.createElement("td");
  txid.className = "txid";
  txid.textContent = entry.transactionId;
  const contents = document.createElement("td");
  contents.className = "entry-contents";
  contents.textContent = entry.contents.length > 160 ? `${entry.contents.slice(0, 160)}\u2026` : entry.contents;
  const cell = document.createElement("td");
  const open = document.createElement("button");
  open.type = "button";
  open.className = "entry-open secondary";
  open.textContent = "Open";
  open.setAttribute("aria-label", `Open transaction ${entry.transactionId}`);
  open.addEventListener("click", () => guarded(() => showEntry(entry)));
  cell.append(open);
  row.append(txid, contents, cell);
  return row;
}

async function turnPage(step) {
  if (step > 0) {
    if (!paging.next) return;
    paging.urls = paging.urls.slice(0, paging.index + 1).concat(paging.next);
  }
  paging.index = Math.max(0, paging.index + step);
  await showPage();
}

async function showEntry(entry) {
  const mine = ++generation;
  openEntry = { entry: { ...entry, collectionId: entry.collectionId ?? paging.collection }, receipt: null };
  $("entry-detail").hidden = false;
  $("entry-txid").textContent = entry.transactionId;
  $("entry-collection").textContent = openEntry.entry.collectionId;
  $("entry-contents").textContent = entry.contents;
  $("entry-status").textContent = "\u2026";
  $("entry-receipt").textContent = "\u2026";
  showVerdict($("receipt-verdict"), "idle", "");
  $("receipt-checks").replaceChildren();
  $("verify-receipt").disabled = true;
  const id = encodeURIComponent(entry.transactionId);
  const status = await api(`/app/transactions/${id}/status`);
  if (mine !== generation) return;
  $("entry-status").textContent = status.state;
  const receipt = await apiReady(`/app/transactions/${id}/receipt`);
  if (mine !== generation) return;
  openEntry.receipt = receipt;
  $("entry-receipt").textContent = JSON.stringify(receipt, null, 2);
  $("verify-receipt").disabled = false;
  $("entry-title").scrollIntoView({ block: "start" });
  $("verify-receipt").focus({ preventScroll: true });
}

async function verifyOpenReceipt() {
  const verdict = $("receipt-verdict");
  if (!openEntry?.receipt) return;
  showVerdict(verdict, "running", "Verifying\u2026");
  try {
    const identity = await api(`/ledgerIdentity/${encodeURIComponent(LEDGER_ID)}`);
    const file = $("explorer-cert-file").files[0];
    const pinned = file ? await file.text() : undefined;
    const result = await verifyReceiptResponse(openEntry.receipt, openEntry.entry, identity.ledgerTlsCertificate, pinned);
    showReport(verdict, $("receipt-checks"), result);
    if (result.state === "verified" && !pinned) {
      verdict.textContent += ` Service certificate ${await certificateFingerprint(identity.ledgerTlsCertificate)} (as served by this ledger).`;
    }
  } catch (e) {
    showVerdict(verdict, "error", `The receipt could not be verified: ${e.message}`);
  }
}

$("token-submit").addEventListener("click", () => {
  const pasted = $("token-input").value.trim().replace(/^Bearer\s+/i, "");
  if (!pasted) {
    showError(new Error("Paste a bearer token first (or use your client certificate)."));
    return;
  }
  signIn(pasted);
});
$("use-client-cert").addEventListener("click", () => signIn(null));
$("sign-out").addEventListener("click", signOut);
$("page-next").addEventListener("click", () => guarded(() => turnPage(1)));
$("page-prev").addEventListener("click", () => guarded(() => turnPage(-1)));
$("verify-receipt").addEventListener("click", verifyOpenReceipt);
$("close-entry").addEventListener("click", () => {
  $("entry-detail").hidden = true;
  openEntry = null;
});
