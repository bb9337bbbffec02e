//! `cledger`: command-line entry point. Argument parsing and wiring only; the logic lives in
//! the library crates (`ledger-core`, `ledger-store`, `ledger-identity`, `ledger-server`,
//! `ledger-client`, `ledger-web`).

mod bench;
mod client;
mod cluster;

// The server allocates and frees many small buffers per request across threads; glibc's
// malloc spent ~10% of the server's CPU on that under load (perf, docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ledger_core::TxId;
use ledger_core::entry::{ApplicationEntry, DEFAULT_COLLECTION};
use ledger_core::receipt::ReceiptResponse;
use ledger_core::signing::EcSigningKey;
use ledger_identity::Curve;
use ledger_identity::files::NodeFiles;
use ledger_store::{Genesis, KekSource, Ledger, NodeIdentity, StoreConfig, WriteRequest};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cledger",
    version,
    about = "A self-hosted confidential ledger, wire-compatible with Azure confidential ledger",
    after_help = "Examples:\n  cledger serve\n  cledger identity --endpoint https://127.0.0.1:8443 --profile dev --save\n  cledger --profile dev --cert cledger-data/admin.pem notarize contract.pdf\n  cledger verify contract.pdf.evidence.json contract.pdf"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    conn: client::Connection,
}

// `serve` has many flags; the enum is built once per process, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the ledger server (HTTPS, Azure confidential ledger API). The first start creates
    /// the ledger, its identity and (unless --admin-cert is given) an administrator
    /// certificate in DATA_DIR/admin.pem. Stops gracefully on SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Verify a ledger directory offline: every frame, every leaf, every signature and the
    /// certificate chain (no key needed), then the files derived from the ledger (index.redb,
    /// tree/frames.idx, tree/level-*.hashes) against what the ledger implies. Exit 0 only if
    /// everything verifies. The derived files are checked only while no server uses the
    /// directory (it checks them itself when it starts); their private rows (collections,
    /// tags) need the key-encryption key, found as `cledger serve` finds it.
    ///
    /// --service-cert PEM: the service certificate the ledger must have been created with;
    /// defaults to DATA_DIR/service_cert.pem when that file exists. --json: print the summary
    /// as JSON.
    Audit {
        #[command(flatten)]
        dir: DataDir,
        /// Rebuild the derived files from the ledger (after checking the ledger), then audit
        /// again. The server must be stopped.
        #[arg(long)]
        repair: bool,
    },
    /// Copy a ledger directory, safely even while a server writes to it, and audit the copy.
    /// The copy is a complete data directory: serve it to restore (see docs/OPERATIONS.md).
    Backup {
        #[arg(long, env = "CLEDGER_DATA_DIR", default_value = "./cledger-data")]
        data_dir: PathBuf,
        /// New directory for the copy.
        #[arg(long)]
        to: PathBuf,
    },
    /// Write the offline evidence verifier (one self-contained HTML file, the page `cledger
    /// serve` serves at /verify) to FILE, or to stdout.
    VerifierPage {
        /// File to create or overwrite [default: stdout].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Operate on a ledger directory directly, without a server (the server must not be running).
    #[command(subcommand)]
    Local(LocalCommand),
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Settings of `cledger serve`. Precedence: flag > environment variable > --config file >
/// default (the defaults are `ledger_server::ServeConfig::default()`, shown in --help).
#[derive(Args, Debug)]
struct ServeArgs {
    /// TOML file with the same settings in snake_case (data_dir, listen, hostname = [..],
    /// admin_cert = [..], admin_oid = [..], ledger_id, max_entry_bytes, max_collections,
    /// kek_file, [[jwt_issuers]] tables with issuer, audiences, jwks_file | jwks_url |
    /// oidc_discovery, user_claim, tenant_id, ...).
    #[arg(long, env = "CLEDGER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./cledger-data].
    #[arg(long, env = "CLEDGER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8443].
    #[arg(long, env = "CLEDGER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Extra DNS name or IP for the node certificate (repeatable; used on first start;
    /// localhost, 127.0.0.1 and ::1 are always included). Env: comma-separated.
    #[arg(long, env = "CLEDGER_HOSTNAME", value_delimiter = ',')]
    hostname: Vec<String>,
    /// Curve of the service identity and node key, chosen on first start [default: p384, as
    /// ACL and CCF]. p256 signs each batch of writes about five times faster; on an existing
    /// ledger it must be the ledger's curve.
    #[arg(long, env = "CLEDGER_CURVE", value_enum)]
    curve: Option<CurveArg>,
    /// PEM file with a client certificate to register as Administrator (repeatable; on a
    /// restart, certificates not yet registered are added). Env: comma-separated.
    #[arg(long, env = "CLEDGER_ADMIN_CERT", value_delimiter = ',')]
    admin_cert: Vec<PathBuf>,
    /// Ledger name, recorded on first start [default: cledger].
    #[arg(long, env = "CLEDGER_LEDGER_ID")]
    ledger_id: Option<String>,
    /// Largest entry contents in bytes, at most 1048576 [default: 8192].
    #[arg(long, env = "CLEDGER_MAX_ENTRY_BYTES")]
    max_entry_bytes: Option<usize>,
    /// Most collections besides the default one [default: 5000].
    #[arg(long, env = "CLEDGER_MAX_COLLECTIONS")]
    max_collections: Option<usize>,
    /// Key-encryption key: a file holding 64 hex characters [default: DATA_DIR/keys/kek].
    #[arg(long, env = "CLEDGER_KEK_FILE")]
    kek_file: Option<PathBuf>,
    /// Token principal (the user claim, `oid` by default, e.g. an Entra object id) to register
    /// as Administrator (repeatable; like --admin-cert). Env: comma-separated.
    #[arg(long, env = "CLEDGER_ADMIN_OID", value_delimiter = ',')]
    admin_oid: Vec<String>,
    /// Trust bearer tokens (JWT) from this issuer: the exact `iss`, e.g.
    /// https://login.microsoftonline.com/<tenant>/v2.0. More issuers: [[jwt_issuers]] in --config.
    #[arg(long, env = "CLEDGER_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Accepted token audience (`aud`; repeatable, at least one with --jwt-issuer).
    #[arg(
        long,
        env = "CLEDGER_JWT_AUDIENCE",
        value_delimiter = ',',
        requires = "jwt_issuer"
    )]
    jwt_audience: Vec<String>,
    /// The issuer's signing keys from a local JWKS file.
    #[arg(long, env = "CLEDGER_JWT_JWKS_FILE", requires = "jwt_issuer",
          conflicts_with_all = ["jwt_jwks_url", "jwt_oidc_discovery"])]
    jwt_jwks_file: Option<PathBuf>,
    /// The issuer's signing keys from a JWKS URL (https, or http on loopback).
    #[arg(
        long,
        env = "CLEDGER_JWT_JWKS_URL",
        requires = "jwt_issuer",
        conflicts_with = "jwt_oidc_discovery"
    )]
    jwt_jwks_url: Option<String>,
    /// The issuer's OpenID discovery URL ({issuer}/.well-known/openid-configuration).
    #[arg(long, env = "CLEDGER_JWT_OIDC_DISCOVERY", requires = "jwt_issuer")]
    jwt_oidc_discovery: Option<String>,
    /// The token claim that holds the user id [default: oid].
    #[arg(long, env = "CLEDGER_JWT_USER_CLAIM", requires = "jwt_issuer")]
    jwt_user_claim: Option<String>,
    /// Only accept tokens whose `tid` claim is this tenant id.
    #[arg(long, env = "CLEDGER_JWT_TENANT_ID", requires = "jwt_issuer")]
    jwt_tenant_id: Option<String>,
    /// Log lines on stderr as `text` or `json` [default: text].
    #[arg(long, env = "CLEDGER_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormatArg>,
    /// Log filter: a level (`info`, `debug`, ...) or `tracing` directives [default: info].
    #[arg(long, env = "CLEDGER_LOG")]
    log_level: Option<String>,
    /// Run as a cluster node: serve the peer protocol (Raft, mutual TLS) on this address.
    /// Without --join, the node founds a cluster (of one, until others join).
    #[arg(long, env = "CLEDGER_PEER_LISTEN")]
    peer_listen: Option<SocketAddr>,
    /// Join the service one of whose nodes serves clients at this URL (https://host:port).
    #[arg(long, env = "CLEDGER_JOIN", requires_all = ["peer_listen", "service_cert"])]
    join: Option<String>,
    /// The service certificate (PEM) of the service to join.
    #[arg(long, env = "CLEDGER_SERVICE_CERT", requires = "join")]
    service_cert: Option<PathBuf>,
    /// A file holding a join token (`cledger cluster join-token`): joins without waiting for
    /// an Administrator's approval.
    #[arg(long, env = "CLEDGER_JOIN_TOKEN", requires = "join")]
    join_token: Option<PathBuf>,
    /// Found a new cluster of one on this data directory's ledger: a copy (`cledger backup`)
    /// of a node of a cluster that is lost. Everything in the copy up to its last signature is
    /// kept; the old nodes are retired; others join as usual. Only for a copy: refused on a
    /// member's own directory (see docs/OPERATIONS.md, "Restoring a cluster").
    #[arg(long, requires = "peer_listen", conflicts_with = "join")]
    recover: bool,
    /// Serve /metrics only on this address (HTTPS with the node's certificate), not on the
    /// client listener.
    #[arg(long, env = "CLEDGER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Publish the newest signed state as a C2SP checkpoint every this many milliseconds, 0
    /// for none [default: 5000].
    #[arg(long, env = "CLEDGER_CHECKPOINT_INTERVAL_MS")]
    checkpoint_interval_ms: Option<u64>,
    /// Sign once this many milliseconds have passed since the last signature (at most 1000;
    /// a write is acknowledged once a signature after it is committed) [default: 1].
    #[arg(long, env = "CLEDGER_SIGNATURE_INTERVAL_MS")]
    signature_interval_ms: Option<u64>,
    /// ...or once this many transactions wait for a signature [default: 1000].
    #[arg(long, env = "CLEDGER_SIGNATURE_TX_COUNT")]
    signature_tx_count: Option<u64>,
    /// The checkpoints' origin line [default: cledger/<ledger id>/<service key hash>].
    #[arg(long, env = "CLEDGER_CHECKPOINT_ORIGIN")]
    checkpoint_origin: Option<String>,
    /// A C2SP witness to submit checkpoints to, as VKEY@URL (repeatable; replaces the config
    /// file's [[witnesses]]).
    #[arg(long)]
    witness: Vec<String>,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl ServeArgs {
    fn into_overrides(self) -> ledger_server::Overrides {
        ledger_server::Overrides {
            config: self.config,
            data_dir: self.data_dir,
            listen: self.listen,
            hostnames: self.hostname,
            curve: self.curve.map(Curve::from),
            admin_certs: self.admin_cert,
            ledger_id: self.ledger_id,
            max_entry_bytes: self.max_entry_bytes,
            max_collections: self.max_collections,
            kek_file: self.kek_file,
            admin_oids: self.admin_oid,
            jwt_issuer: self.jwt_issuer,
            jwt_audiences: self.jwt_audience,
            jwt_jwks_file: self.jwt_jwks_file,
            jwt_jwks_url: self.jwt_jwks_url,
            jwt_oidc_discovery: self.jwt_oidc_discovery,
            jwt_user_claim: self.jwt_user_claim,
            jwt_tenant_id: self.jwt_tenant_id,
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Text => ledger_server::config::LogFormat::Text,
                LogFormatArg::Json => ledger_server::config::LogFormat::Json,
            }),
            log_level: self.log_level,
            peer_listen: self.peer_listen,
            join: self.join,
            service_cert: self.service_cert,
            join_token_file: self.join_token,
            recover: self.recover,
            metrics_listen: self.metrics_listen,
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            signature_interval_ms: self.signature_interval_ms,
            signature_tx_count: self.signature_tx_count,
            checkpoint_origin: self.checkpoint_origin,
            witnesses: self.witness,
        }
    }
}

fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let config =
        ledger_server::ServeConfig::load(args.into_overrides()).map_err(|e| e.to_string())?;
    ledger_server::run_until_signal(config).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
struct DataDir {
    #[arg(long, env = "CLEDGER_DATA_DIR", default_value = "./cledger-data")]
    data_dir: PathBuf,
    /// Key-encryption key: a file holding 64 hex characters (default: DATA_DIR/keys/kek).
    #[arg(long, env = "CLEDGER_KEK_FILE", conflicts_with = "kek_env")]
    kek_file: Option<PathBuf>,
    /// Name of an environment variable holding the key-encryption key as 64 hex characters.
    #[arg(long)]
    kek_env: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CurveArg {
    P256,
    P384,
}

impl From<CurveArg> for Curve {
    fn from(curve: CurveArg) -> Curve {
        match curve {
            CurveArg::P256 => Curve::P256,
            CurveArg::P384 => Curve::P384,
        }
    }
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Create a new ledger: service identity, node key and certificate, ledger secret.
    Init {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long, value_enum, default_value = "p384")]
        curve: CurveArg,
        #[arg(long, default_value = "cledger")]
        ledger_id: String,
        /// Extra names for the node certificate (localhost and 127.0.0.1 are always included).
        #[arg(long)]
        hostname: Vec<String>,
    },
    /// Append one entry per CONTENTS argument; prints each committed transaction id.
    Append {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long, default_value = DEFAULT_COLLECTION)]
        collection: String,
        #[arg(long)]
        tag: Vec<String>,
        /// Record a LedgerEntryV1 application claim for each entry.
        #[arg(long)]
        claims: bool,
        #[arg(required = true)]
        contents: Vec<String>,
    },
    /// Bulk-load COUNT entries of SIZE bytes (for benchmarks on large ledgers); prints the
    /// rate. Entries are written with many in flight, so they commit in group commits.
    Fill {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long, default_value = DEFAULT_COLLECTION)]
        collection: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 256)]
        size: usize,
    },
    /// Print the receipt of a committed transaction as ACL's GET .../receipt returns it.
    Receipt {
        #[command(flatten)]
        dir: DataDir,
        txid: String,
    },
    /// Print the entry written by a transaction.
    Get {
        #[command(flatten)]
        dir: DataDir,
        txid: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Audit { dir, repair } => {
            audit(&dir, repair, cli.conn.service_cert.clone(), cli.conn.json)
        }
        Command::Backup { data_dir, to } => backup(&data_dir, &to, cli.conn.json),
        Command::VerifierPage { out } => verifier_page(out.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::Local(cmd) => local(cmd).map(|()| ExitCode::SUCCESS),
        Command::Client(cmd) => Ok(client::run(cmd, &cli.conn)),
    }
}

/// `cledger verifier-page`: the page is compiled in, so this needs no server and no network.
fn verifier_page(out: Option<&Path>) -> Result<(), String> {
    let page = ledger_web::verifier_page();
    match out {
        Some(path) => {
            std::fs::write(path, page).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!(
                "wrote {} ({} bytes); open it in a browser to verify evidence packages offline",
                path.display(),
                page.len()
            );
        }
        None => {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(page.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| format!("stdout: {e}"))?;
        }
    }
    Ok(())
}

fn backup(data_dir: &Path, to: &Path, json: bool) -> Result<ExitCode, String> {
    match ledger_store::backup::backup(data_dir, to) {
        Ok(r) => {
            let last = r.last.map_or_else(|| "none".to_owned(), |t| t.to_string());
            if json {
                let value = serde_json::json!({
                    "ok": true, "segments": r.segments, "bytes": r.bytes, "cutBytes": r.cut_bytes,
                    "lastTransactionId": last, "transactions": r.audit.transactions,
                    "unsignedTail": r.audit.unsigned_tail,
                });
                println!("{value}");
            } else {
                println!(
                    "backed up {} transactions ({} bytes in {} segment(s)) to {}; the copy verifies",
                    r.audit.transactions,
                    r.bytes,
                    r.segments,
                    to.display()
                );
                println!("  last transaction: {last}");
                if r.cut_bytes > 0 {
                    println!(
                        "  left out {} bytes of a write still in progress",
                        r.cut_bytes
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("backup failed: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The data directory's lock (the one a running server holds), taken for the duration of a
/// command that must not run beside a server. `Ok(None)`: a server holds it.
fn lock_data_dir(data_dir: &Path) -> Result<Option<std::fs::File>, String> {
    let path = data_dir.join(ledger_server::node::LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

fn audit(
    dir: &DataDir,
    repair: bool,
    service_cert: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode, String> {
    let data_dir = &dir.data_dir;
    let pin_path =
        service_cert.or_else(|| Some(data_dir.join("service_cert.pem")).filter(|p| p.exists()));
    let pinned = match &pin_path {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    // Held until the audit (and repair) is over: no server may start meanwhile.
    let lock = lock_data_dir(data_dir)?;
    if lock.is_none() && repair {
        return Err(format!(
            "{} is in use by a running cledger server; stop it before --repair",
            data_dir.display()
        ));
    }
    let mut notes = Vec::new();
    let secret = match ledger_store::ledger_secret(data_dir, &store_config(dir).kek) {
        Ok(secret) => Some(secret),
        Err(e) => {
            notes.push(format!(
                "the private rows of the index (collections, tags) were not checked: the ledger secret is not available ({e}); give --kek-file or --kek-env"
            ));
            None
        }
    };
    // The audit follows the ledger's secret rotations from the first secret on.
    let keys = secret.map(ledger_store::KeyRing::new);
    let run = |keys: Option<&ledger_store::KeyRing>| match lock {
        Some(_) => ledger_store::audit::audit_all(data_dir, pinned.as_deref(), keys),
        None => ledger_store::audit::audit(data_dir, pinned.as_deref()),
    };
    if lock.is_none() {
        notes.push(
            "the derived files were not checked: a server is using the directory (it checks them when it starts)".into(),
        );
    }
    let mut result = run(keys.as_ref());
    let mut repaired = None;
    if repair {
        if let Err(failure) = &result {
            print_audit(&result, &pin_path, &notes, None, json);
            eprintln!(
                "not repaired: the ledger itself fails the audit ({failure}); derived files can only be rebuilt from an intact ledger"
            );
            return Ok(ExitCode::from(1));
        }
        let report = Ledger::rebuild_derived(data_dir, &store_config(dir))
            .map_err(|e| format!("rebuilding the derived files failed: {e}"))?;
        repaired = Some(report);
        result = run(keys.as_ref());
    }
    if let Ok(report) = &result
        && let Some(derived) = report.derived.as_ref().filter(|d| !d.damaged.is_empty())
    {
        // Some damage (rows altered with their page checksums) is invisible to the checks a
        // server makes when it starts: mark what was found, so that it rebuilds it.
        if let Err(e) = ledger_store::mark_for_rebuild(data_dir, &derived.damaged, "cledger audit")
        {
            notes.push(format!(
                "could not mark the damaged files for rebuilding: {e}"
            ));
        }
    }
    let ok = print_audit(&result, &pin_path, &notes, repaired.as_ref(), json);
    drop(lock);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Prints the audit's result; true if everything verified.
fn print_audit(
    result: &Result<ledger_store::audit::AuditReport, ledger_store::audit::AuditFailure>,
    pin_path: &Option<PathBuf>,
    notes: &[String],
    repaired: Option<&ledger_store::RecoveryReport>,
    json: bool,
) -> bool {
    let r = match result {
        Ok(r) => r,
        Err(failure) => {
            if json {
                let value = serde_json::json!({
                    "ok": false, "transactionId": failure.txid, "reason": failure.reason,
                    "file": failure.location.as_ref().map(|(f, _)| f.display().to_string()),
                    "offset": failure.location.as_ref().map(|(_, o)| o),
                });
                println!("{value}");
            } else {
                println!("AUDIT FAILED: {failure}");
            }
            return false;
        }
    };
    let damaged = r.derived.as_ref().map_or(&[][..], |d| &d.damaged[..]);
    let last = r
        .last_verified
        .map_or_else(|| "none".to_owned(), |t| t.to_string());
    if json {
        let derived = r.derived.as_ref().map(|d| {
            serde_json::json!({
                "checked": d.checked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "damaged": d.damaged.iter().map(|x| serde_json::json!({
                    "file": x.file.display().to_string(), "reason": x.reason,
                })).collect::<Vec<_>>(),
                "unchecked": d.unchecked,
            })
        });
        let value = serde_json::json!({
            "ok": damaged.is_empty(), "segments": r.segments, "transactions": r.transactions,
            "entries": r.entries, "kvTransactions": r.kv_transactions, "governance": r.governance, "signatures": r.signatures,
            "lastVerifiedTransactionId": last, "unsignedTail": r.unsigned_tail, "nodes": r.nodes,
            "keyRotations": r.key_rotations,
            "derived": derived, "notes": notes, "repaired": repaired.is_some(),
        });
        println!("{value}");
        return damaged.is_empty();
    }
    if let Some(report) = repaired {
        println!(
            "rebuilt index.redb and tree/ from the ledger ({} transactions)",
            report.transactions
        );
    }
    println!(
        "ledger verified: {} transactions in {} segment(s)",
        r.transactions, r.segments
    );
    println!(
        "  entries {}, key-value {}, governance {}, signatures {}, nodes {}, key rotations {}",
        r.entries, r.kv_transactions, r.governance, r.signatures, r.nodes, r.key_rotations
    );
    println!("  last verified transaction: {last}");
    if r.unsigned_tail > 0 {
        println!(
            "  {} transaction(s) after the last signature are not verified yet",
            r.unsigned_tail
        );
    }
    if pin_path.is_none() {
        println!("  note: no service certificate was pinned (use --service-cert)");
    }
    if let Some(derived) = &r.derived
        && damaged.is_empty()
    {
        println!(
            "derived files verified: {} file(s) agree with the ledger",
            derived.checked.len()
        );
    }
    for d in damaged {
        println!("DERIVED FILE DAMAGED: {d}");
    }
    if !damaged.is_empty() {
        println!(
            "  these files are derived from the ledger, which is intact, and can be rebuilt from it: \
             stop the server and run `cledger audit --repair`, or start the server, which rebuilds them"
        );
    }
    if let Some(derived) = &r.derived {
        for u in &derived.unchecked {
            println!("  note: not checked: {u}");
        }
    }
    for note in notes {
        println!("  note: {note}");
    }
    damaged.is_empty()
}

fn store_config(dir: &DataDir) -> StoreConfig {
    let kek = match (&dir.kek_file, &dir.kek_env) {
        (Some(file), _) => KekSource::File(file.clone()),
        (None, Some(var)) => KekSource::Env(var.clone()),
        (None, None) => KekSource::DataDir,
    };
    // A cluster member's ledger is opened as a replica: opened standalone, it would commit
    // (and sign) a tail that consensus may have cut, and leave the cluster's log.
    let role = if is_cluster_member(&dir.data_dir) {
        ledger_store::Role::Replica
    } else {
        ledger_store::Role::Standalone
    };
    StoreConfig {
        kek,
        role,
        ..StoreConfig::default()
    }
}

fn is_cluster_member(data_dir: &Path) -> bool {
    data_dir.join(ledger_server::node::CLUSTER_DIR).exists()
}

/// Local writes go around consensus: refused on a cluster member's ledger.
fn refuse_cluster_member(dir: &DataDir) -> Result<(), String> {
    if is_cluster_member(&dir.data_dir) {
        return Err(format!(
            "{} belongs to a cluster: write through the cluster (cledger append --endpoint URL), not to a node's files",
            dir.data_dir.display()
        ));
    }
    Ok(())
}

fn node_identity(files: &NodeFiles) -> Result<NodeIdentity, String> {
    Ok(NodeIdentity {
        signing_key: EcSigningKey::from_pkcs8_pem(&files.node_key_pem)
            .map_err(|e| format!("identity/node_key.pem: {e}"))?,
        cert_pem: files.node_cert_pem.clone(),
        service_key: EcSigningKey::from_pkcs8_pem(&files.service_key_pem)
            .map_err(|e| format!("identity/service_key.pem: {e}"))?,
    })
}

fn open(dir: &DataDir) -> Result<Ledger, String> {
    let files = NodeFiles::load(&dir.data_dir).map_err(|e| e.to_string())?;
    let node = node_identity(&files)?;
    let (ledger, report) =
        Ledger::open(&dir.data_dir, store_config(dir), node).map_err(|e| e.to_string())?;
    if let Some((file, offset, bytes)) = &report.truncated_tail {
        eprintln!(
            "recovery: cut a torn write of {bytes} bytes at {} offset {offset}",
            file.display()
        );
    }
    Ok(ledger)
}

fn parse_txid(text: &str) -> Result<TxId, String> {
    TxId::parse(text).map_err(|e| e.to_string())
}

/// Writes `count` entries keeping up to `IN_FLIGHT` submitted, so the writer batches them.
fn fill(ledger: &Ledger, collection: &str, count: u64, size: usize) -> Result<(), String> {
    const IN_FLIGHT: u64 = 16_384;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<TxId, String>>();
    let start = std::time::Instant::now();
    let (mut submitted, mut finished) = (0u64, 0u64);
    let wait_one = |finished: &mut u64| -> Result<(), String> {
        done_rx
            .recv()
            .map_err(|_| "the ledger closed".to_owned())??;
        *finished += 1;
        Ok(())
    };
    while submitted < count {
        if submitted - finished >= IN_FLIGHT {
            wait_one(&mut finished)?;
            continue;
        }
        let mut contents = format!("fill {submitted} ");
        contents.extend(std::iter::repeat_n(
            'x',
            size.saturating_sub(contents.len()),
        ));
        let entry = ApplicationEntry {
            collection_id: collection.to_owned(),
            contents,
            tags: Vec::new(),
            claims_key: None,
            idempotency: None,
            kv_writes: Vec::new(),
        };
        let tx = done_tx.clone();
        let done = Box::new(move |r: Result<TxId, ledger_store::AppendError>| {
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        match ledger.submit(WriteRequest::Entry(entry), done) {
            Ok(()) => submitted += 1,
            Err(ledger_store::AppendError::Busy) => wait_one(&mut finished)?,
            Err(ledger_store::AppendError::Limit(e)) => {
                return Err(format!(
                    "entries of --size {size} cannot be stored: {e}; {}",
                    match submitted {
                        0 => "nothing was written".to_owned(),
                        n => format!("only the {n} entries before it were written"),
                    }
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    while finished < count {
        wait_one(&mut finished)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wrote {count} entries of {size} bytes in {secs:.1} s ({:.0} committed writes/s); last {}",
        count as f64 / secs,
        ledger
            .committed()
            .map_or_else(String::new, |t| t.to_string())
    );
    Ok(())
}

fn local(cmd: LocalCommand) -> Result<(), String> {
    match cmd {
        LocalCommand::Init {
            dir,
            curve,
            ledger_id,
            hostname,
        } => {
            let curve = Curve::from(curve);
            if dir.data_dir.join("ledger").exists() && NodeFiles::load(&dir.data_dir).is_ok() {
                // Like `git init`: running it again is harmless and says so.
                println!(
                    "{} already holds a ledger; nothing to do",
                    dir.data_dir.display()
                );
                return Ok(());
            }
            let files =
                NodeFiles::create(&dir.data_dir, curve, &hostname).map_err(|e| e.to_string())?;
            let node = node_identity(&files)?;
            let genesis = Genesis {
                ledger_id,
                service_cert_pem: files.service_cert_pem.clone(),
                writes: Vec::new(),
            };
            let ledger = Ledger::create(&dir.data_dir, store_config(&dir), node, genesis)
                .map_err(|e| e.to_string())?;
            ledger.close();
            println!("created ledger in {}", dir.data_dir.display());
            println!(
                "service certificate: {}",
                dir.data_dir.join("service_cert.pem").display()
            );
        }
        LocalCommand::Append {
            dir,
            collection,
            tag,
            claims,
            contents,
        } => {
            refuse_cluster_member(&dir)?;
            let ledger = open(&dir)?;
            for text in contents {
                let claims_key = if claims {
                    Some(ledger_store::crypto::random_key().map_err(|e| e.to_string())?)
                } else {
                    None
                };
                let entry = ApplicationEntry {
                    collection_id: collection.clone(),
                    contents: text,
                    tags: tag.clone(),
                    claims_key,
                    idempotency: None,
                    kv_writes: Vec::new(),
                };
                let txid = ledger
                    .append(WriteRequest::Entry(entry))
                    .map_err(|e| e.to_string())?;
                println!("{txid}");
            }
            ledger.close();
        }
        LocalCommand::Fill {
            dir,
            collection,
            count,
            size,
        } => {
            refuse_cluster_member(&dir)?;
            fill(&open(&dir)?, &collection, count, size)?
        }
        LocalCommand::Receipt { dir, txid } => {
            let txid = parse_txid(&txid)?;
            let ledger = open(&dir)?;
            let bundle = ledger
                .receipt(txid)
                .map_err(|e| e.to_string())?
                .ok_or(format!("{txid} is not a committed transaction"))?;
            let response = ReceiptResponse {
                application_claims: bundle.application_claims,
                receipt: Some(bundle.receipt),
                state: "Ready".into(),
                transaction_id: txid.to_string(),
            };
            println!(
                "{}",
                serde_json::to_string(&response).map_err(|e| e.to_string())?
            );
        }
        LocalCommand::Get { dir, txid } => {
            let txid = parse_txid(&txid)?;
            let ledger = open(&dir)?;
            let record = ledger
                .entry(txid)
                .map_err(|e| e.to_string())?
                .ok_or(format!("{txid} wrote no entry"))?;
            let value = serde_json::json!({
                "collectionId": record.entry.collection_id, "contents": record.entry.contents,
                "tags": record.entry.tags, "transactionId": txid.to_string(),
            });
            println!("{value}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod serve_args_tests {
    use super::*;

    #[test]
    fn serve_flags_map_onto_overrides() {
        let cli = Cli::try_parse_from([
            "cledger",
            "serve",
            "--data-dir",
            "d",
            "--listen",
            "127.0.0.1:0",
            "--hostname",
            "a.example",
            "--hostname",
            "10.0.0.1",
            "--admin-cert",
            "x.pem",
            "--ledger-id",
            "mine",
            "--max-entry-bytes",
            "100",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let o = args.into_overrides();
        assert_eq!(o.data_dir, Some(PathBuf::from("d")));
        assert_eq!(o.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(o.hostnames, ["a.example", "10.0.0.1"]);
        assert_eq!(o.admin_certs, [PathBuf::from("x.pem")]);
        assert_eq!(o.ledger_id.as_deref(), Some("mine"));
        assert_eq!(o.max_entry_bytes, Some(100));
        assert!(Cli::try_parse_from(["cledger", "serve", "--listen", "nope"]).is_err());
    }
}
