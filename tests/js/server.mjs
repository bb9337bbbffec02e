// A running `cledger serve` for the JavaScript suite, mirroring tests/python/server.py, and user
// certificates made the way the ACL docs tell users to make them (openssl, P-384).
//
// The server is started on a free loopback port (`--listen 127.0.0.1:0`) in a fresh temporary
// data directory; it prints `listening on https://127.0.0.1:<port>` when ready. Clients connect
// to `https://localhost:<port>` (the node certificate has SANs `localhost` and `127.0.0.1`) and
// pin `DATA_DIR/service_cert.pem`; the first start writes the administrator's certificate and
// key to `DATA_DIR/admin.pem`.
//
// The binary is `$CLEDGER_BIN`, else `<repo>/target/debug/cledger`. When it is missing the
// suite fails (never skips): a compatibility suite that silently skips proves nothing.

import { spawn, execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import confidentialLedger from "@azure-rest/confidential-ledger";

// The package is CommonJS: its default export is `module.exports.default`.
const ConfidentialLedger = confidentialLedger.default;

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const DEFAULT_BINARY = join(REPO_ROOT, "target", "debug", "cledger");
const READY_LINE = /^listening on https:\/\/127\.0\.0\.1:(\d+)\s*$/;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 20_000;

/** Every server started and not yet stopped, killed if the test process exits early. */
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** `$CLEDGER_BIN`, else `<repo>/target/debug/cledger`; throws (the test fails) when missing. */
export function binaryPath() {
  const binary = process.env.CLEDGER_BIN || DEFAULT_BINARY;
  try {
    accessSync(binary, constants.X_OK);
    if (!statSync(binary).isFile()) throw new Error("not a file");
  } catch {
    throw new Error(
      `cledger binary not found or not executable: ${binary}\n` +
        "Build it with `cargo build -p cledger` (from the repository root), or point CLEDGER_BIN at it.",
    );
  }
  return binary;
}

export class LedgerServer {
  /** Starts `cledger serve --data-dir <fresh temp dir> --listen 127.0.0.1:0 ...extraArgs`. */
  static async start(extraArgs = []) {
    const server = new LedgerServer(binaryPath(), mkdtempSync(join(tmpdir(), "cledger-js-")), extraArgs);
    await server.#spawn();
    return server;
  }

  constructor(binary, dataDir, extraArgs) {
    this.binary = binary;
    this.dataDir = dataDir;
    this.extraArgs = extraArgs;
    this.process = null;
    this.port = null;
    this.stdout = "";
    this.stderr = "";
  }

  #spawn() {
    // Like the Python harness: the server must not pick up the caller's CLEDGER_* settings.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CLEDGER_")));
    const args = ["serve", "--data-dir", this.dataDir, "--listen", "127.0.0.1:0", ...this.extraArgs];
    const child = spawn(this.binary, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    this.process = child;
    running.add(child);
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => (this.stderr += chunk));
    child.on("exit", () => running.delete(child));
    return new Promise((resolvePromise, reject) => {
      let pending = "";
      const fail = (why) => {
        clearTimeout(timer);
        this.kill();
        reject(new Error(`\`cledger serve\` did not become ready (${why}): ${this.binary} ${args.join(" ")}\n${this.output()}`));
      };
      const timer = setTimeout(() => fail(`no ready line within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
      child.on("error", (error) => fail(error.message));
      child.on("exit", (code, signal) => {
        if (this.port === null) fail(`exited with ${signal ?? `code ${code}`}`);
      });
      child.stdout.on("data", (chunk) => {
        this.stdout += chunk;
        if (this.port !== null) return;
        pending += chunk;
        const lines = pending.split("\n");
        pending = lines.pop();
        for (const line of lines) {
          const match = READY_LINE.exec(line.trim());
          if (match) {
            this.port = Number(match[1]);
            clearTimeout(timer);
            resolvePromise(this);
            return;
          }
        }
      });
    });
  }

  /** SIGTERM, wait; resolves with the exit code (a server that hangs is killed, and that fails). */
  async stop() {
    const child = this.process;
    if (child === null) return null;
    this.process = null;
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    const exited = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
    child.kill("SIGTERM");
    let timer;
    const timeout = new Promise((r) => (timer = setTimeout(() => r(null), STOP_TIMEOUT_MS)));
    const result = await Promise.race([exited, timeout]);
    clearTimeout(timer);
    if (result === null) {
      child.kill("SIGKILL");
      await exited;
      throw new Error(`server did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM\n${this.output()}`);
    }
    return result.signal ? result.signal : result.code;
  }

  /** For `after` hooks: a graceful stop that must exit 0, then the data directory is removed. */
  async stopAndClean() {
    try {
      const code = await this.stop();
      if (code !== 0 && code !== null) {
        throw new Error(`cledger serve exited with ${code} after SIGTERM\n${this.output()}`);
      }
      rmSync(this.dataDir, { recursive: true, force: true });
    } finally {
      this.kill();
    }
  }

  kill() {
    const child = this.process;
    this.process = null;
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }

  output() {
    return `--- stdout ---\n${this.stdout}\n--- stderr ---\n${this.stderr}`;
  }

  get endpoint() {
    return `https://localhost:${this.port}`;
  }

  get serviceCertPath() {
    return join(this.dataDir, "service_cert.pem");
  }

  get serviceCertPem() {
    return readFileSync(this.serviceCertPath, "utf8");
  }

  get adminPemPath() {
    return join(this.dataDir, "admin.pem");
  }

  /**
   * The official SDK client, unchanged: the service certificate is the identity certificate
   * (the only TLS root), and the caller authenticates with a client certificate through
   * `tlsOptions: {cert, key}` as the SDK's README shows. `identity` is a PEM bundle holding a
   * certificate and its key (default: the generated administrator); `null` means no client
   * certificate at all. `options` go to the SDK (e.g. `apiVersion`).
   */
  client(identity = readFileSync(this.adminPemPath, "utf8"), options = {}) {
    const tlsOptions = identity === null ? {} : { cert: identity, key: identity };
    return ConfidentialLedger(this.endpoint, this.serviceCertPem, { ...options, tlsOptions });
  }
}

function openssl(...args) {
  try {
    return execFileSync("openssl", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (error) {
    throw new Error(`openssl ${args.join(" ")} failed: ${error.stderr ?? error.message}`);
  }
}

/**
 * A user certificate made with the ACL docs' recipe (`openssl ecparam -name secp384r1 -genkey`,
 * `openssl req -new -x509 -sha384`). Returns {name, pem (cert + key), certPem, userId}, where
 * userId is the SHA-256 fingerprint of the DER certificate, `AA:BB:...` upper case.
 */
export function makeUser(directory, name) {
  const keyPath = join(directory, `${name}_privk.pem`);
  const certPath = join(directory, `${name}_cert.pem`);
  openssl("ecparam", "-out", keyPath, "-name", "secp384r1", "-genkey");
  openssl("req", "-new", "-key", keyPath, "-x509", "-nodes", "-days", "365", "-out", certPath, "-sha384", "-subj", `/CN=${name}`);
  const certPem = readFileSync(certPath, "utf8");
  const pem = certPem + readFileSync(keyPath, "utf8");
  writeFileSync(join(directory, `${name}.pem`), pem);
  const userId = new X509Certificate(certPem).fingerprint256.toUpperCase();
  if (!/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/.test(userId)) throw new Error(`unexpected fingerprint ${userId}`);
  return { name, pem, certPem, userId };
}

/** A fresh temporary directory (for user certificates), removed by the caller. */
export function tempDir(prefix = "cledger-js-users-") {
  return mkdtempSync(join(tmpdir(), prefix));
}
