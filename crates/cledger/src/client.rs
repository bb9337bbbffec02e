//! The client subcommands of `cledger` (over `ledger-client`).

use base64::Engine as _;
use clap::{Args, Subcommand};
use ledger_client::evidence;
use ledger_client::{Auth, Client, ClientConfig, Error, ListQuery};
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Connection settings. Precedence: flag > environment variable > --profile > default.
#[derive(Args, Debug, Clone, Default)]
pub struct Connection {
    /// Ledger endpoint, e.g. https://127.0.0.1:8443.
    #[arg(long, global = true, env = "CLEDGER_ENDPOINT")]
    pub endpoint: Option<String>,
    /// PEM file holding your client certificate and its private key.
    #[arg(long, global = true, env = "CLEDGER_CERT")]
    pub cert: Option<PathBuf>,
    /// Bearer token (instead of --cert).
    #[arg(long, global = true, env = "CLEDGER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The ledger's service certificate (PEM): the only TLS root trusted, and what receipts must
    /// chain to. For `verify`: the certificate the package must carry.
    #[arg(long, global = true, env = "CLEDGER_SERVICE_CERT")]
    pub service_cert: Option<PathBuf>,
    /// Use the named profile of the profiles file.
    #[arg(long, global = true, env = "CLEDGER_PROFILE")]
    pub profile: Option<String>,
    /// Profiles file (TOML) [default: $HOME/.config/cledger/profiles.toml].
    #[arg(long, global = true, env = "CLEDGER_PROFILES")]
    pub profiles: Option<PathBuf>,
    /// api-version sent to the server [default: 2022-05-13].
    #[arg(long, global = true, env = "CLEDGER_API_VERSION")]
    pub api_version: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Fetch the ledger's service certificate (trust on first use) and print its SHA-256
    /// fingerprint; with --profile NAME --save, pin it in the profile.
    #[command(
        after_help = "Example:\n  cledger identity --endpoint https://127.0.0.1:8443 --profile dev --save"
    )]
    Identity {
        /// Ledger id served at /ledgerIdentity/<id>.
        #[arg(long, default_value = "cledger")]
        ledger_id: String,
        /// Store the endpoint and the certificate (written next to the profiles file) in --profile.
        #[arg(long, requires = "profile")]
        save: bool,
    },
    /// Append an entry; prints its transaction id once committed.
    #[command(
        after_help = "Example:\n  cledger append --collection approvals --tag q3 'invoice 42 approved'"
    )]
    Append {
        #[arg(long)]
        collection: Option<String>,
        /// Tag (repeatable; needs an api-version with tags, chosen automatically).
        #[arg(long)]
        tag: Vec<String>,
        contents: String,
    },
    /// Print the entry written by a transaction.
    #[command(after_help = "Example:\n  cledger get 2.15 --collection approvals")]
    Get {
        txid: String,
        #[arg(long)]
        collection: Option<String>,
    },
    /// Print the newest entry of a collection.
    #[command(after_help = "Example:\n  cledger current --collection approvals")]
    Current {
        #[arg(long)]
        collection: Option<String>,
    },
    /// List entries (follows paging).
    #[command(
        after_help = "Example:\n  cledger list --collection approvals --from 2.10 --to 2.90 --tag q3"
    )]
    List {
        #[arg(long)]
        collection: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        tag: Option<String>,
    },
    /// Print a transaction's status (Committed, Pending).
    #[command(after_help = "Example:\n  cledger status 2.15")]
    Status { txid: String },
    /// List the collections.
    #[command(after_help = "Example:\n  cledger collections --json")]
    Collections,
    /// Manage ledger users (certificate fingerprints or token object ids).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Fetch a receipt, verify it against the service certificate, print or save it.
    #[command(
        after_help = "Examples:\n  cledger receipt 2.15 --out receipt.json\n  cledger receipt 2.15 --cose --out receipt.cose"
    )]
    Receipt {
        txid: String,
        /// Write the receipt to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The COSE receipt (CCF 7's format, binary COSE_Sign1) instead of the JSON one;
        /// written as bytes to --out, or as base64 to stdout.
        #[arg(long)]
        cose: bool,
    },
    /// Check that the ledger only grew: verify its newest signed state (the service key's root
    /// signature) and the consistency proof from the state this client verified last, kept per
    /// profile; refuse a state that is not a consistent extension of it.
    #[command(
        after_help = "Examples:\n  cledger consistency --profile prod\n  cledger consistency --from 2.100 --to 2.500"
    )]
    Consistency {
        /// Prove consistency between two signature transactions instead (verified, nothing
        /// kept).
        #[arg(long, requires = "to")]
        from: Option<String>,
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// The file the verified state is kept in [default: verified-state/<profile>.json
        /// beside the profiles file, with --profile].
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Notarize files: hash each (streamed), record a doc-integrity-proof/v1 entry, wait for
    /// commit, and write FILE.evidence.json.
    #[command(after_help = "Example:\n  cledger notarize contract.pdf --note 'signed version'")]
    Notarize {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        collection: Option<String>,
        /// Wait until this C2SP witness (vkey) has cosigned a checkpoint proving the entry,
        /// and put it in the package (repeatable).
        #[arg(long)]
        witness_vkey: Vec<String>,
    },
    /// Verify an evidence package offline (no network). Exit 0 verified, 1 failed, 2 usage/IO.
    #[command(
        after_help = "Example:\n  cledger verify contract.pdf.evidence.json contract.pdf --service-cert service_cert.pem"
    )]
    Verify {
        package: PathBuf,
        /// The document; its SHA-256 and size must match the package.
        file: Option<PathBuf>,
        /// A C2SP witness (vkey) that must have cosigned the package's checkpoint
        /// (repeatable); without it, cosignatures are reported but not checked.
        #[arg(long)]
        witness_vkey: Vec<String>,
    },
    /// Append every line of a JSONL file ({"contents": "...", "collectionId"?: "...", "tags"?: [..]}).
    #[command(after_help = "Example:\n  cledger import records.jsonl")]
    Import { file: PathBuf },
    /// Export entries as JSON lines ({"collectionId","contents","transactionId"}).
    #[command(
        after_help = "Example:\n  cledger export --collection approvals --out approvals.jsonl --resume"
    )]
    Export {
        #[arg(long)]
        collection: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// Output file [default: stdout].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue after the last line of --out (appending to it).
        #[arg(long, requires = "out", conflicts_with = "from")]
        resume: bool,
    },
    /// Load-test a ledger: closed-loop writes, reads, receipts and range listings over N
    /// connections; prints throughput and latency percentiles per phase.
    #[command(
        after_help = "Example:\n  cledger bench --endpoint https://127.0.0.1:8443 --cert admin.pem \\\n    --service-cert service_cert.pem --connections 64 --size 256 --duration 60 --output bench.json"
    )]
    Bench(crate::bench::BenchArgs),
    /// Operate a cluster: status of its nodes, approve or remove a node, make a join token.
    #[command(subcommand)]
    Cluster(crate::cluster::ClusterCommand),
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  cledger completions bash > /etc/bash_completion.d/cledger")]
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// List every user.
    #[command(after_help = "Example:\n  cledger users list")]
    List,
    /// Show one user.
    #[command(after_help = "Example:\n  cledger users get AA:BB:...")]
    Get { id: String },
    /// Add a user with a role (Administrator, Contributor, Reader).
    #[command(after_help = "Example:\n  cledger users add AA:BB:... --role Contributor")]
    Add {
        id: String,
        #[arg(long)]
        role: String,
    },
    /// Change a user's role.
    #[command(after_help = "Example:\n  cledger users set-role AA:BB:... --role Reader")]
    SetRole {
        id: String,
        #[arg(long)]
        role: String,
    },
    /// Remove a user.
    #[command(after_help = "Example:\n  cledger users remove AA:BB:...")]
    Remove { id: String },
}

/// A failure and its exit code.
pub struct Failure {
    pub exit: u8,
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            exit: 2,
            code: "Usage".into(),
            message: message.into(),
            hint: None,
        }
    }
}

fn hint_for(code: &str) -> Option<String> {
    Some(match code {
        "NotAllowed" | "Forbidden" => "this certificate is not a ledger user (or its role does not allow this); ask an Administrator to run `cledger users add <fingerprint> --role Contributor`".into(),
        "Unauthorized" | "InvalidAuthenticationInfo" | "InvalidAuthenticationInformation" | "MissingAuthenticationInformation" => "pass --cert PEM (certificate and key) or --token TOKEN".into(),
        "TransactionPendingOrUnknown" => "the transaction is not committed yet or does not exist; check `cledger status TXID`".into(),
        "InvalidTransactionId" => "transaction ids look like 2.15 (view.seqno)".into(),
        "UnsupportedApiVersion" => "try --api-version 2022-05-13".into(),
        "EntryTooLarge" | "EntrySizeCapacityExceeded" => "the server limits entry size (--max-entry-bytes on the server)".into(),
        _ => return None,
    })
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        match e {
            Error::Api { status, code, message } => Failure {
                exit: 1,
                hint: hint_for(&code),
                message: format!("{message} (HTTP {status})"),
                code,
            },
            Error::Verification(r) => Failure {
                exit: 1,
                code: "VerificationFailed".into(),
                message: r.to_string(),
                hint: Some("the receipt does not chain to the pinned service certificate".into()),
            },
            Error::Transport(m) => Failure {
                exit: 2,
                code: "Transport".into(),
                hint: m.contains("certificate").then(|| {
                    "check --service-cert (pin it with `cledger identity --profile NAME --save`)".into()
                }),
                message: m,
            },
            Error::Protocol(m) => Failure { exit: 1, code: "Protocol".into(), message: m, hint: None },
            Error::Timeout(m) => Failure { exit: 1, code: "Timeout".into(), message: m, hint: None },
            Error::Config(m) => Failure::usage(m),
            Error::Io(m) => Failure { exit: 2, code: "Io".into(), message: m, hint: None },
            Error::Consistency(e) => Failure {
                exit: 1,
                code: "NotConsistent".into(),
                message: e.to_string(),
                hint: Some("keep the kept state file and this output as evidence; do not trust the ledger's newer answers".into()),
            },
            Error::Fork(m) => Failure {
                exit: 1,
                code: "NotConsistent".into(),
                message: format!("FORK: {m}"),
                hint: Some("keep the kept state file and this output as evidence; do not trust the ledger's newer answers".into()),
            },
        }
    }
}

pub(crate) fn io_failure(path: &Path, e: std::io::Error) -> Failure {
    io(path, e)
}

fn io(path: &Path, e: std::io::Error) -> Failure {
    Failure {
        exit: 2,
        code: "Io".into(),
        message: format!("{}: {e}", path.display()),
        hint: None,
    }
}

pub fn report(failure: &Failure, json_mode: bool) -> ExitCode {
    eprintln!("error: {}: {}", failure.code, failure.message);
    if let Some(hint) = &failure.hint {
        eprintln!("hint: {hint}");
    }
    if json_mode {
        println!(
            "{}",
            json!({"error": {"code": failure.code, "message": failure.message, "hint": failure.hint}})
        );
    }
    ExitCode::from(failure.exit)
}

// ---------- consistency ----------

fn consistency(
    conn: &Connection,
    between: Option<(String, String)>,
    state: Option<PathBuf>,
) -> Result<(), Failure> {
    use ledger_client::verified_state::{self, Growth};
    let client = connect(conn)?;
    let show = |s: &ledger_core::consistency::VerifiedState| json!({"transactionId": s.transaction_id.to_string(), "treeSize": s.tree_size, "root": s.root.to_hex()});
    if let Some((from, to)) = between {
        let (from, to) = client.verified_consistency(&from, &to)?;
        if conn.json {
            print_json(&json!({"consistent": true, "from": show(&from), "to": show(&to)}));
        } else {
            println!(
                "CONSISTENT: {} (size {}, root {}) is extended by {} (size {}, root {}); both signed by the service key",
                from.transaction_id,
                from.tree_size,
                from.root,
                to.transaction_id,
                to.tree_size,
                to.root
            );
        }
        return Ok(());
    }
    let path = match (state, &conn.profile) {
        (Some(path), _) => Some(path),
        (None, Some(profile)) => profiles_path(conn).map(|p| {
            p.with_file_name("verified-state")
                .join(format!("{profile}.json"))
        }),
        (None, None) => None,
    };
    let known = match &path {
        Some(path) => verified_state::load_state(path)?,
        None => None,
    };
    let growth = client.check_growth(known.as_ref())?;
    if let Some(path) = &path {
        verified_state::save_state(path, &growth.state())?;
    }
    let kept = path.as_ref().map(|p| p.display().to_string());
    if conn.json {
        let (result, from) = match &growth {
            Growth::First(_) => ("first", None),
            Growth::Unchanged(_) => ("unchanged", None),
            Growth::Extended { from, .. } => ("extended", Some(show(from))),
        };
        print_json(&json!({
            "consistent": true, "result": result, "from": from, "state": show(&growth.state()), "kept": kept,
        }));
        return Ok(());
    }
    let now = growth.state();
    match growth {
        Growth::First(_) => println!(
            "FIRST: trusting the ledger's signed state {} (size {}, root {}) from now on",
            now.transaction_id, now.tree_size, now.root
        ),
        Growth::Unchanged(_) => println!(
            "UNCHANGED: the ledger's newest signed state is still {} (size {})",
            now.transaction_id, now.tree_size
        ),
        Growth::Extended { from, .. } => println!(
            "CONSISTENT: {} (size {}) extends the verified {} (size {}); root {}",
            now.transaction_id, now.tree_size, from.transaction_id, from.tree_size, now.root
        ),
    }
    match kept {
        Some(path) => println!("  verified state kept in {path}"),
        None => println!(
            "  not kept: pass --profile NAME or --state FILE to keep it and check the next time"
        ),
    }
    Ok(())
}

// ---------- profiles ----------

fn profiles_path(conn: &Connection) -> Option<PathBuf> {
    conn.profiles.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/cledger/profiles.toml"))
    })
}

fn read_profiles(path: &Path) -> Result<toml::Table, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<toml::Table>()
            .map_err(|e| Failure::usage(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => Err(io(path, e)),
    }
}

/// Resolved settings.
struct Settings {
    endpoint: Option<String>,
    cert: Option<PathBuf>,
    token: Option<String>,
    service_cert: Option<PathBuf>,
    api_version: Option<String>,
}

fn settings(conn: &Connection) -> Result<Settings, Failure> {
    settings_opt(conn, false)
}

/// `allow_missing`: a profile that does not exist yet adds nothing (for `identity --save`).
fn settings_opt(conn: &Connection, allow_missing: bool) -> Result<Settings, Failure> {
    let mut s = Settings {
        endpoint: conn.endpoint.clone(),
        cert: conn.cert.clone(),
        token: conn.token.clone(),
        service_cert: conn.service_cert.clone(),
        api_version: conn.api_version.clone(),
    };
    if let Some(name) = &conn.profile {
        let path =
            profiles_path(conn).ok_or_else(|| Failure::usage("no --profiles and no $HOME"))?;
        let table = read_profiles(&path)?;
        let empty = toml::Table::new();
        let profile = match table.get(name).and_then(|v| v.as_table()) {
            Some(p) => p,
            None if allow_missing => &empty,
            None => {
                return Err(Failure::usage(format!(
                    "no profile [{name}] in {}",
                    path.display()
                )));
            }
        };
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let text = |k: &str| profile.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let file = |k: &str| text(k).map(|p| dir.join(p));
        s.endpoint = s.endpoint.or_else(|| text("endpoint"));
        s.cert = s.cert.or_else(|| file("cert"));
        s.token = s.token.or_else(|| text("token"));
        s.service_cert = s.service_cert.or_else(|| file("service_cert"));
        s.api_version = s.api_version.or_else(|| text("api_version"));
    }
    Ok(s)
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

pub(crate) fn connect(conn: &Connection) -> Result<Client, Failure> {
    Ok(Client::new(client_config(conn)?)?)
}

fn client_config(conn: &Connection) -> Result<ClientConfig, Failure> {
    let s = settings(conn)?;
    let endpoint = s.endpoint.ok_or_else(|| {
        Failure::usage("no endpoint: pass --endpoint URL, set CLEDGER_ENDPOINT or use --profile")
    })?;
    let service_cert = s.service_cert.ok_or_else(|| {
        Failure::usage(
            "no service certificate: pass --service-cert PEM (fetch it with `cledger identity`)",
        )
    })?;
    let auth = match (s.cert, s.token) {
        (Some(cert), _) => Auth::Certificate(read(&cert)?),
        (None, Some(token)) => Auth::Token(token),
        (None, None) => Auth::None,
    };
    let mut config = ClientConfig::new(endpoint, read(&service_cert)?, auth);
    if let Some(v) = s.api_version {
        config.api_version = v;
    }
    Ok(config)
}

// ---------- commands ----------

pub(crate) fn print_json(v: &Value) {
    println!("{v}");
}

fn entry_line(e: &ledger_client::Entry) -> String {
    format!("{}\t{}\t{}", e.transaction_id, e.collection_id, e.contents)
}

pub fn run(cmd: ClientCommand, conn: &Connection) -> ExitCode {
    match run_inner(cmd, conn) {
        Ok(code) => code,
        Err(f) => report(&f, conn.json),
    }
}

fn run_inner(cmd: ClientCommand, conn: &Connection) -> Result<ExitCode, Failure> {
    let json_mode = conn.json;
    match cmd {
        ClientCommand::Completions { shell } => {
            let mut command = <crate::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "cledger", &mut std::io::stdout());
        }
        ClientCommand::Verify {
            package,
            file,
            witness_vkey,
        } => return verify(conn, &package, file.as_deref(), &witness_vkey),
        ClientCommand::Bench(args) => crate::bench::run(args, client_config(conn)?, json_mode)?,
        ClientCommand::Identity { ledger_id, save } => identity(conn, &ledger_id, save)?,
        ClientCommand::Append {
            collection,
            tag,
            contents,
        } => {
            let client = connect(conn)?;
            let a = client.append(&contents, collection.as_deref(), &tag)?;
            if json_mode {
                print_json(&json!(a));
            } else {
                println!("{}", a.transaction_id);
            }
        }
        ClientCommand::Get { txid, collection } => {
            let e = connect(conn)?.get_entry(&txid, collection.as_deref())?;
            if json_mode {
                print_json(&json!(e))
            } else {
                println!("{}", e.contents)
            }
        }
        ClientCommand::Current { collection } => {
            let e = connect(conn)?.current(collection.as_deref())?;
            if json_mode {
                print_json(&json!(e))
            } else {
                println!("{}", entry_line(&e))
            }
        }
        ClientCommand::List {
            collection,
            from,
            to,
            tag,
        } => {
            let client = connect(conn)?;
            let query = ListQuery {
                collection,
                from,
                to,
                tag,
            };
            if json_mode {
                let all = client.list_all(&query)?;
                print_json(&json!({"entries": all}));
            } else {
                for e in client.list(&query) {
                    println!("{}", entry_line(&e?));
                }
            }
        }
        ClientCommand::Status { txid } => {
            let s = connect(conn)?.status(&txid)?;
            if json_mode {
                print_json(&json!(s))
            } else {
                println!("{}", s.state)
            }
        }
        ClientCommand::Collections => {
            let c = connect(conn)?.collections()?;
            if json_mode {
                print_json(&json!({"collections": c}));
            } else {
                c.iter().for_each(|c| println!("{c}"));
            }
        }
        ClientCommand::Users(u) => users(conn, u)?,
        ClientCommand::Cluster(c) => crate::cluster::run(c, conn)?,
        ClientCommand::Consistency { from, to, state } => consistency(conn, from.zip(to), state)?,
        ClientCommand::Receipt {
            txid,
            out,
            cose: true,
        } => {
            let r = connect(conn)?.cose_receipt(&txid)?;
            let root = r.verified.root.to_hex();
            let signed_by = r.verified.signature.txid;
            match out {
                Some(path) => std::fs::write(&path, &r.bytes).map_err(|e| io(&path, e))?,
                None if !json_mode => {
                    println!(
                        "{}",
                        base64::engine::general_purpose::STANDARD.encode(&r.bytes)
                    )
                }
                None => {}
            }
            if json_mode {
                print_json(&json!({
                    "transactionId": txid, "verified": true, "root": root,
                    "signatureTransactionId": signed_by.to_string(),
                    "coseReceipt": base64::engine::general_purpose::STANDARD.encode(&r.bytes),
                }));
            } else {
                eprintln!(
                    "COSE receipt for {txid} verified (root {root}, signed at {signed_by} by the service key)"
                );
            }
        }
        ClientCommand::Receipt {
            txid,
            out,
            cose: false,
        } => {
            let r = connect(conn)?.receipt(&txid)?;
            let text = serde_json::to_string_pretty(&r.response)
                .map_err(|e| Failure::usage(e.to_string()))?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text + "\n").map_err(|e| io(&path, e))?;
                    if json_mode {
                        print_json(
                            &json!({"transactionId": txid, "verified": true, "root": r.verified.root.to_hex(), "out": path}),
                        );
                    } else {
                        println!(
                            "receipt for {txid} verified (root {}); saved to {}",
                            r.verified.root.to_hex(),
                            path.display()
                        );
                    }
                }
                None => {
                    if json_mode {
                        print_json(&serde_json::to_value(&r.response).unwrap_or_default());
                    } else {
                        eprintln!(
                            "receipt for {txid} verified (root {})",
                            r.verified.root.to_hex()
                        );
                        println!("{text}");
                    }
                }
            }
        }
        ClientCommand::Notarize {
            files,
            note,
            collection,
            witness_vkey,
        } => {
            let client = connect(conn)?;
            let mut results = Vec::new();
            for file in &files {
                let (pkg, out) = evidence::notarize(
                    &client,
                    file,
                    note.as_deref(),
                    collection.as_deref(),
                    &witness_vkey,
                )?;
                if json_mode {
                    results.push(json!({"file": file, "transactionId": pkg.transaction_id, "evidence": out, "sha256": pkg.document.sha256, "size": pkg.document.size}));
                } else {
                    println!(
                        "{}\t{}\t{}",
                        file.display(),
                        pkg.transaction_id,
                        out.display()
                    );
                }
            }
            if json_mode {
                print_json(&json!({"results": results}));
            }
        }
        ClientCommand::Import { file } => import(conn, &file)?,
        ClientCommand::Export {
            collection,
            from,
            to,
            out,
            resume,
        } => export(conn, collection, from, to, out, resume)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn identity(conn: &Connection, ledger_id: &str, save: bool) -> Result<(), Failure> {
    let s = settings_opt(conn, true)?;
    let endpoint = s
        .endpoint
        .ok_or_else(|| Failure::usage("no endpoint: pass --endpoint URL"))?;
    let pem = ledger_client::fetch_identity_unverified(&endpoint, ledger_id)?;
    let fingerprint = ledger_client::cert_fingerprint(&pem)?;
    let mut saved = None;
    if save {
        let name = conn.profile.as_deref().unwrap_or_default();
        let path =
            profiles_path(conn).ok_or_else(|| Failure::usage("no --profiles and no $HOME"))?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let cert_path = dir.join(format!("{name}.service_cert.pem"));
        std::fs::write(&cert_path, &pem).map_err(|e| io(&cert_path, e))?;
        let mut table = read_profiles(&path)?;
        let entry = table
            .entry(name.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let t = entry.as_table_mut().ok_or_else(|| {
            Failure::usage(format!("[{name}] in {} is not a table", path.display()))
        })?;
        t.insert("endpoint".into(), toml::Value::String(endpoint.clone()));
        t.insert(
            "service_cert".into(),
            toml::Value::String(cert_path.display().to_string()),
        );
        t.insert(
            "ledger_id".into(),
            toml::Value::String(ledger_id.to_owned()),
        );
        std::fs::write(&path, table.to_string()).map_err(|e| io(&path, e))?;
        saved = Some((path, cert_path));
    }
    if conn.json {
        print_json(&json!({
            "ledgerId": ledger_id, "fingerprint": fingerprint, "serviceCertificate": pem,
            "profiles": saved.as_ref().map(|s| &s.0), "serviceCertPath": saved.as_ref().map(|s| &s.1),
        }));
    } else {
        println!("service certificate SHA-256 fingerprint: {fingerprint}");
        match saved {
            Some((p, c)) => println!(
                "pinned in profile {} ({}); certificate saved to {}",
                conn.profile.as_deref().unwrap_or_default(),
                p.display(),
                c.display()
            ),
            None => {
                println!("{}", pem.trim_end());
                eprintln!(
                    "compare the fingerprint out of band, then pin it with --profile NAME --save or --service-cert FILE"
                );
            }
        }
    }
    Ok(())
}

fn users(conn: &Connection, cmd: UsersCommand) -> Result<(), Failure> {
    let client = connect(conn)?;
    let show = |u: &ledger_client::User| {
        if conn.json {
            print_json(&json!(u))
        } else {
            println!("{}\t{}", u.user_id, u.assigned_role)
        }
    };
    match cmd {
        UsersCommand::List => {
            let list = client.users_list()?;
            if conn.json {
                print_json(&json!({"users": list}));
            } else {
                list.iter().for_each(show);
            }
        }
        UsersCommand::Get { id } => show(&client.user_get(&id)?),
        UsersCommand::Add { id, role } | UsersCommand::SetRole { id, role } => {
            show(&client.user_set_role(&id, &role)?)
        }
        UsersCommand::Remove { id } => {
            client.user_remove(&id)?;
            if conn.json {
                print_json(&json!({"userId": id, "removed": true}));
            } else {
                println!("removed {id}");
            }
        }
    }
    Ok(())
}

fn verify(
    conn: &Connection,
    package: &Path,
    file: Option<&Path>,
    witness_vkeys: &[String],
) -> Result<ExitCode, Failure> {
    let expected = match &conn.service_cert {
        Some(p) => Some(read(p)?),
        None => None,
    };
    let result = evidence::load_package(package)
        .and_then(|pkg| evidence::verify_package(&pkg, file, expected.as_deref(), witness_vkeys));
    match result {
        Ok(v) => {
            if conn.json {
                print_json(&json!({
                    "verified": true, "transactionId": v.transaction_id, "collectionId": v.collection_id,
                    "document": v.document, "time": v.time, "note": v.note, "root": v.root,
                    "serviceCertificateFingerprint": v.service_cert_fingerprint,
                    "fileChecked": v.file_checked, "serviceCertificatePinned": v.service_cert_pinned,
                    "coseReceiptChecked": v.cose_receipt_checked,
                    "checkpoint": v.checkpoint.as_ref().map(|c| json!({
                        "origin": c.checkpoint.origin, "treeSize": c.checkpoint.size,
                        "cosignedBy": c.cosigned_by, "uncheckedSignatures": c.unchecked_signatures,
                    })),
                }));
            } else {
                println!("VERIFIED {}", package.display());
                println!(
                    "  receipt signature and certificate chain: ok (root {})",
                    v.root
                );
                println!(
                    "  service certificate: {}{}",
                    v.service_cert_fingerprint,
                    if v.service_cert_pinned {
                        " (matches --service-cert)"
                    } else {
                        " (not pinned: pass --service-cert to check it is your ledger's)"
                    }
                );
                println!("  entry contents match the receipt's claims digest: ok");
                if v.cose_receipt_checked {
                    println!(
                        "  COSE receipt: ok (same transaction and leaf, signed by the service key)"
                    );
                } else {
                    println!("  COSE receipt: none in this package");
                }
                match &v.checkpoint {
                    Some(c) => {
                        println!(
                            "  checkpoint: ok (entry in {} at tree size {}, signed by the ledger's checkpoint key)",
                            c.checkpoint.origin, c.checkpoint.size
                        );
                        for witness in &c.cosigned_by {
                            println!("  cosigned by witness {witness}: ok");
                        }
                        if c.unchecked_signatures > 0 {
                            println!(
                                "  {} other cosignature(s) not checked: pass --witness-vkey to check them",
                                c.unchecked_signatures
                            );
                        }
                    }
                    None => println!("  checkpoint: none in this package"),
                }
                println!(
                    "  transaction {} in collection {} at {}",
                    v.transaction_id, v.collection_id, v.time
                );
                println!(
                    "  document {} ({} bytes) sha256 {}",
                    v.document.name, v.document.size, v.document.sha256
                );
                match file {
                    Some(f) => println!("  file {}: hash and size match", f.display()),
                    None => println!("  file: not checked (pass FILE to check it)"),
                }
                if let Some(note) = v.note {
                    println!("  note: {note}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let exit = if e.is_io() { 2 } else { 1 };
            if conn.json {
                print_json(&json!({"verified": false, "error": e.kind(), "reason": e.to_string()}));
            } else {
                println!("VERIFICATION FAILED: {e}");
            }
            eprintln!("error: {}: {e}", e.kind());
            if e.is_io() {
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::from(exit))
        }
    }
}

fn progress(len: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} entries  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} entries  {per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        ),
    };
    Some(bar)
}

fn import(conn: &Connection, file: &Path) -> Result<(), Failure> {
    let open = || {
        std::fs::File::open(file)
            .map(BufReader::new)
            .map_err(|e| io(file, e))
    };
    let total = open()?
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .count();
    let client = connect(conn)?;
    let bar = progress(Some(total as u64));
    let mut count = 0u64;
    let mut last = None;
    for (n, line) in open()?.lines().enumerate() {
        let line = line.map_err(|e| io(file, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| Failure::usage(format!("{}:{}: {e}", file.display(), n + 1)))?;
        let contents = v["contents"].as_str().ok_or_else(|| {
            Failure::usage(format!(
                "{}:{}: no \"contents\" string",
                file.display(),
                n + 1
            ))
        })?;
        let tags: Vec<String> = v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        // A refused line stops the import; say which, and what is already in the ledger.
        let a = client
            .append(contents, v["collectionId"].as_str(), &tags)
            .map_err(|e| {
                let mut failure = Failure::from(e);
                failure.message = format!(
                    "{}:{}: {} ({count} entries before it were imported)",
                    file.display(),
                    n + 1,
                    failure.message
                );
                failure
            })?;
        last = Some(a.transaction_id);
        count += 1;
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if conn.json {
        print_json(&json!({"imported": count, "lastTransactionId": last}));
    } else {
        println!("{count}");
    }
    Ok(())
}

/// The txid after the one on the last non-empty line of `path`.
fn resume_from(path: &Path) -> Result<Option<String>, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(line)
        .map_err(|e| Failure::usage(format!("{}: last line is not JSON: {e}", path.display())))?;
    let txid = v["transactionId"]
        .as_str()
        .and_then(|t| ledger_core::TxId::parse(t).ok())
        .ok_or_else(|| {
            Failure::usage(format!(
                "{}: last line has no transactionId",
                path.display()
            ))
        })?;
    Ok(Some(format!("{}.{}", txid.view(), txid.seqno() + 1)))
}

fn export(
    conn: &Connection,
    collection: Option<String>,
    from: Option<String>,
    to: Option<String>,
    out: Option<PathBuf>,
    resume: bool,
) -> Result<(), Failure> {
    let from = match (&out, resume) {
        (Some(path), true) => resume_from(path)?,
        _ => from,
    };
    let client = connect(conn)?;
    let mut writer: Box<dyn std::io::Write> = match &out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(resume)
                .write(true)
                .truncate(!resume)
                .open(path)
                .map_err(|e| io(path, e))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = out.as_ref().and_then(|_| progress(None));
    let query = ListQuery {
        collection,
        from,
        to,
        tag: None,
    };
    let mut count = 0u64;
    let mut last = None;
    let out_name = out
        .as_ref()
        .map_or_else(|| Path::new("stdout").to_path_buf(), Clone::clone);
    for entry in client.list(&query) {
        let entry = entry?;
        writeln!(writer, "{}", json!(entry)).map_err(|e| io(&out_name, e))?;
        last = Some(entry.transaction_id);
        count += 1;
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    writer.flush().map_err(|e| io(&out_name, e))?;
    drop(writer);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if out.is_some() {
        if conn.json {
            print_json(&json!({"exported": count, "lastTransactionId": last, "out": out}));
        } else {
            println!("{count}");
        }
    } else {
        eprintln!("exported {count} entries");
    }
    Ok(())
}
