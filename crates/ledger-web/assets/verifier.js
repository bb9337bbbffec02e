import { PACKAGE_VERSION, verifyPackage } from "./verify.mjs";
import { showReport, showVerdict } from "./report-view.js";

// The evidence verifier page: reads the chosen files in the browser and verifies them with
// verify.mjs. Nothing is sent anywhere (the page's CSP forbids connections); files are read
// with the File API only.

const $ = (id) => document.getElementById(id);
const chosen = { package: null, document: null, certificate: null };
let run = 0;

async function readPackage(file) {
  chosen.package = { name: file.name, text: await file.text() };
  $("package-chosen").textContent = `${file.name} (${file.size} bytes)`;
}

async function readDocument(file) {
  chosen.document = { name: file.name, bytes: new Uint8Array(await file.arrayBuffer()) };
  $("document-chosen").textContent = `${file.name} (${file.size} bytes)`;
}

async function readCertificate(file) {
  chosen.certificate = { name: file.name, pem: await file.text() };
  $("cert-chosen").textContent = file.name;
}

function showSummary(summary) {
  const list = $("summary");
  const rows = [
    ["Transaction", summary.transactionId],
    ["Collection", summary.collectionId],
    ["Document", `${summary.document.name} (${summary.document.size} bytes)`],
    ["SHA-256", summary.document.sha256],
    ["Recorded", summary.time],
    ["Note", summary.note],
    ["Service certificate", summary.serviceCertificateFingerprint],
  ].filter(([, value]) => value !== undefined && value !== null);
  list.replaceChildren(
    ...rows.flatMap(([term, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      if (term === "SHA-256" || term === "Service certificate") dd.className = "mono";
      return [dt, dd];
    }),
  );
  list.hidden = rows.length === 0;
}

async function verify() {
  const mine = ++run;
  const verdict = $("verdict");
  if (!chosen.package) {
    showVerdict(verdict, "idle", "Choose an evidence package.");
    $("checks").replaceChildren();
    $("summary").hidden = true;
    return;
  }
  showVerdict(verdict, "running", "Verifying\u2026");
  let result;
  try {
    result = await verifyPackage(chosen.package.text, {
      document: chosen.document ?? undefined,
      pinnedCertificate: chosen.certificate?.pem,
      witnessVkeys: $("witness-vkeys").value.split("\n"),
    });
  } catch (e) {
    if (mine === run) showVerdict(verdict, "error", `The package could not be verified: ${e.message}`);
    return;
  }
  if (mine !== run) return; // a newer choice started another run
  showReport(verdict, $("checks"), result);
  if (result.summary) showSummary(result.summary);
  else $("summary").hidden = true;
  if (result.kind === "PackageMalformed" && result.checks[0].status === "fail" && !result.summary) {
    showVerdict(verdict, "error", `\u2717 This is not a readable ${PACKAGE_VERSION} package: ${result.checks[0].detail}`);
  }
}

/** Sorts dropped files: packages by name or content, certificates by PEM header, the rest is the document. */
async function dropped(files) {
  for (const file of files) {
    const head = await file.slice(0, 64).text();
    if (file.name.endsWith(".evidence.json") || (file.name.endsWith(".json") && !chosen.package)) await readPackage(file);
    else if (head.startsWith("-----BEGIN CERTIFICATE-----")) await readCertificate(file);
    else await readDocument(file);
  }
  await verify();
}

function wire() {
  const inputs = [
    ["package-file", readPackage],
    ["document-file", readDocument],
    ["cert-file", readCertificate],
  ];
  for (const [id, read] of inputs) {
    $(id).addEventListener("change", async (event) => {
      const [file] = event.target.files;
      if (file) await read(file);
      await verify();
    });
  }
  $("witness-vkeys").addEventListener("change", verify);
  $("verify-button").addEventListener("click", verify);
  $("clear-button").addEventListener("click", () => {
    Object.assign(chosen, { package: null, document: null, certificate: null });
    for (const [id] of inputs) $(id).value = "";
    for (const id of ["package-chosen", "document-chosen", "cert-chosen"]) $(id).textContent = "";
    $("witness-vkeys").value = "";
    verify();
  });
  const zone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  document.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    dropped([...event.dataTransfer.files]);
  });
  // Keyboard: Enter or Space on the drop zone opens the package chooser.
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      $("package-file").click();
    }
  });
}

wire();
