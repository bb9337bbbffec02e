//! Crash safety of the whole server: write load over HTTPS from several clients, SIGKILL of
//! `cledger serve` at a random moment, restart on the same data directory, and a check that
//! every write the server acknowledged is still there, unchanged, with a receipt that verifies.
//! At the end the server is stopped gracefully and `cledger audit` must pass.
//!
//! * An acknowledged write is a `POST /app/transactions` answered 200 with an
//!   `x-ms-ccf-transaction-id` header: the server answers a write only once it is committed
//!   (`routes/transactions.rs`, `create`). Writes that fail with a transport error (the kill)
//!   are not acknowledged and may or may not exist afterwards.
//! * Writes vary: three collections (the default one sometimes named, sometimes implied),
//!   plain writes (2022-05-13), tagged writes (2024-12-09-preview), writes with a
//!   `LedgerEntryV1` application claim (2023-01-18-preview) and both (2026-02-23); padding of
//!   random size and characters (quotes, backslashes, multi-byte UTF-8), now and then a large
//!   entry (20–100 kB, the server runs with a larger `--max-entry-bytes`).
//! * After each restart: the service certificate is the one pinned at the first start (the
//!   clients trust nothing else), the ledger did not end before the newest acknowledged write,
//!   and every write acknowledged in the round that was just killed — plus a random sample of
//!   earlier rounds — reads back with exactly its collection and contents, has status
//!   `Committed`, and a receipt that verifies against the pinned certificate (with claims:
//!   the revealed `LedgerEntryV1` claim names exactly its collection and contents; without:
//!   the claims digest is zero). Listing the collections (per tag, too) from the round's first
//!   write shows each write with exactly its tags. Every acknowledged transaction id is new
//!   (a seqno is never handed out twice, nor at or below the ledger end found at the restart).
//! * After the last kill every acknowledged write of every round is checked this way, the whole
//!   ledger is listed (no write appears twice), and after a graceful stop `cledger audit` must
//!   exit 0.
//!
//! Knobs: `CLEDGER_KILL_ROUNDS=N` (kills, default 30) for long runs; `CLEDGER_KILL_SEED=S`
//! replays the random choices (delays, sizes, collections) of a run that printed `seed=S`.
//! Run with `--nocapture` to see the per-round lines and the summary.

mod support;

use ledger_client::{Auth, Client as LedgerClient, ClientConfig, ListQuery};
use ledger_core::TxId;
use ledger_core::claims::ApplicationClaim;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Server, TXID_HEADER, enc};

const ROUNDS_ENV: &str = "CLEDGER_KILL_ROUNDS";
const SEED_ENV: &str = "CLEDGER_KILL_SEED";
/// The minimum number of kills.
const DEFAULT_ROUNDS: u64 = 30;
const WRITERS: u64 = 6;
/// Each writer pauses up to this long before each write.
const PACE_MS: u64 = 8;
/// Parallel verifying clients.
const VERIFIERS: usize = 3;
/// Earlier writes re-checked after every kill (all of them after the last).
const EARLIER_SAMPLE: usize = 25;
/// How long the server may take to come back after a kill.
const RESTART_LIMIT: Duration = Duration::from_secs(10);
/// The server is killed this long (random, in ms) after the writers start.
const KILL_DELAY_MS: (u64, u64) = (50, 400);
const MAX_ENTRY_BYTES: usize = 128 * 1024;
const COLLECTIONS: [&str; 3] = ["subledger:0", "kill-a", "kill-b"];
const DEFAULT_COLLECTION: &str = "subledger:0";
const PLAIN_VERSION: &str = "2022-05-13";
const TAGS_VERSION: &str = "2024-12-09-preview";
const CLAIMS_VERSION: &str = "2023-01-18-preview";
const TAGS_AND_CLAIMS_VERSION: &str = "2026-02-23";
const ZERO_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// splitmix64: small and deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform-enough in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo < hi);
        lo + self.next_u64() % (hi - lo)
    }
}

/// A write the server acknowledged.
#[derive(Clone, Debug)]
struct Ack {
    txid: String,
    seqno: u64,
    round: u64,
    collection: String,
    contents: String,
    /// Sorted, distinct.
    tags: Vec<String>,
    claims: bool,
}

/// What one writer thread saw in one round.
#[derive(Default)]
struct WriterReport {
    acks: Vec<Ack>,
    attempts: u64,
    /// Transport errors after the kill began: expected.
    errors_after_kill: u64,
    /// Anything else (an error status, a bad acknowledgement, a transport error while the
    /// server was alive): each fails the test.
    failures: Vec<String>,
}

/// The tags any write may carry (so that listing per tag checks tags exactly).
fn tag_universe() -> Vec<String> {
    let mut tags: Vec<String> = ["even", "odd", "big"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tags.extend((0..WRITERS).map(|t| format!("t{t}")));
    tags.sort();
    tags
}

/// Random padding of `bytes` bytes (or a little more): letters, digits, JSON-escaped
/// characters and multi-byte UTF-8.
fn padding(rng: &mut Rng, bytes: usize) -> String {
    const ALPHABET: [&str; 16] = [
        "a", "b", "q", "z", "0", "7", " ", "-", "\"", "\\", "/", "é", "✓", "\n", "x", "🦀",
    ];
    let mut out = String::with_capacity(bytes + 4);
    while out.len() < bytes {
        // Mostly plain letters, so that escapes are present but not everywhere.
        let pick = if rng.range(0, 4) == 0 {
            rng.range(0, ALPHABET.len() as u64)
        } else {
            rng.range(0, 2) * 3
        };
        out.push_str(ALPHABET[pick as usize]);
    }
    out
}

/// Everything a writer needs to build and send write `counter`.
struct PlannedWrite {
    url: String,
    collection: String,
    contents: String,
    tags: Vec<String>,
    claims: bool,
}

fn plan_write(rng: &mut Rng, base: &str, round: u64, thread: u64, counter: u64) -> PlannedWrite {
    let big = rng.range(0, 40) == 0;
    let size = if big {
        rng.range(20_000, 100_000)
    } else {
        rng.range(0, 700)
    } as usize;
    let mode = rng.range(0, 4); // 0 plain, 1 tags, 2 claims, 3 tags + claims
    let contents = format!(
        "kill r{round} t{thread} n{counter} m{mode} | {}",
        padding(rng, size)
    );
    assert!(contents.len() <= MAX_ENTRY_BYTES);
    let collection = COLLECTIONS[rng.range(0, COLLECTIONS.len() as u64) as usize];
    let (version, tagged, claims) = match mode {
        0 => (PLAIN_VERSION, false, false),
        1 => (TAGS_VERSION, true, false),
        2 => (CLAIMS_VERSION, false, true),
        _ => (TAGS_AND_CLAIMS_VERSION, true, true),
    };
    let mut url = format!("{base}/app/transactions?api-version={version}");
    // The default collection is sometimes named and sometimes implied.
    if collection != DEFAULT_COLLECTION || rng.range(0, 2) == 0 {
        url.push_str(&format!("&collectionId={}", enc(collection)));
    }
    let mut tags = Vec::new();
    if tagged {
        tags.push(format!("t{thread}"));
        tags.push(
            if counter.is_multiple_of(2) {
                "even"
            } else {
                "odd"
            }
            .to_owned(),
        );
        if big {
            tags.push("big".to_owned());
        }
        // Sent in a random order, once with a duplicate: the server keeps each tag once.
        let mut sent = tags.clone();
        if rng.range(0, 2) == 0 {
            sent.reverse();
        }
        if rng.range(0, 5) == 0 {
            sent.push(sent[0].clone());
        }
        url.push_str(&format!("&tags={}", enc(&sent.join(","))));
        tags.sort();
    }
    PlannedWrite {
        url,
        collection: collection.to_owned(),
        contents,
        tags,
        claims,
    }
}

fn http_client(service_cert: &str, admin: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(service_cert.as_bytes()).unwrap()])
        .identity(reqwest::Identity::from_pem(admin.as_bytes()).expect("admin.pem"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("HTTP client")
}

fn ledger_client(base: &str, service_cert: &str, admin: &str) -> LedgerClient {
    LedgerClient::new(ClientConfig::new(
        base,
        service_cert,
        Auth::Certificate(admin.to_owned()),
    ))
    .expect("ledger client")
}

/// One writer: writes until `stop`. Transport errors are expected only once `killing` is set.
fn writer(
    http: &reqwest::blocking::Client,
    base: &str,
    round: u64,
    thread: u64,
    seed: u64,
    killing: &AtomicBool,
    stop: &AtomicBool,
) -> WriterReport {
    let mut rng = Rng::new(seed ^ (round << 32) ^ (thread << 16) ^ 0xA5A5);
    let mut report = WriterReport::default();
    let mut counter = 0u64;
    while !stop.load(Ordering::SeqCst) {
        // A short random pause keeps the volume (and so the checks) within the time budget,
        // while the writers still meet in the same commit batches.
        thread::sleep(Duration::from_millis(rng.range(0, PACE_MS + 1)));
        let plan = plan_write(&mut rng, base, round, thread, counter);
        counter += 1;
        report.attempts += 1;
        let body = serde_json::json!({ "contents": plan.contents }).to_string();
        let sent = http
            .post(&plan.url)
            .header("content-type", "application/json")
            .body(body)
            .send();
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                if killing.load(Ordering::SeqCst) {
                    report.errors_after_kill += 1;
                    // The server is gone: do not spin.
                    thread::sleep(Duration::from_millis(2));
                } else {
                    report.failures.push(format!(
                        "round {round} thread {thread}: write failed while the server was \
                         alive: {e:?}"
                    ));
                    thread::sleep(Duration::from_millis(20));
                }
                continue;
            }
        };
        let status = response.status();
        let txid = response
            .headers()
            .get(TXID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status.as_u16() == 200
            && let Some(txid) = txid
        {
            // Status line and header arrived: the write is committed and acknowledged, even if
            // the kill cuts the body off.
            let Ok(parsed) = TxId::parse(&txid) else {
                report.failures.push(format!(
                    "round {round} thread {thread}: acknowledged with a bad transaction id \
                     {txid:?}"
                ));
                continue;
            };
            if let Ok(text) = response.text() {
                let expected = serde_json::json!({ "collectionId": plan.collection });
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(value) if value == expected => {}
                    _ => report.failures.push(format!(
                        "round {round} thread {thread}: write {txid} answered {text:?}, \
                         expected {expected}"
                    )),
                }
            }
            report.acks.push(Ack {
                txid,
                seqno: parsed.seqno(),
                round,
                collection: plan.collection,
                contents: plan.contents,
                tags: plan.tags,
                claims: plan.claims,
            });
        } else {
            // A response is an answer of a living server: it must acknowledge the write.
            let text = response.text().unwrap_or_default();
            report.failures.push(format!(
                "round {round} thread {thread}: write answered {status} {}: {}",
                if status.as_u16() == 200 {
                    format!("without a {TXID_HEADER} header")
                } else {
                    String::new()
                },
                text.chars().take(300).collect::<String>()
            ));
        }
    }
    report
}

/// The last committed transaction, from the header of a read.
fn ledger_end(http: &reqwest::blocking::Client, base: &str) -> Result<TxId, String> {
    let response = http
        .get(format!(
            "{base}/app/collections?api-version={PLAIN_VERSION}"
        ))
        .send()
        .map_err(|e| format!("GET /app/collections failed: {e:?}"))?;
    let status = response.status();
    let header = response
        .headers()
        .get(TXID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match header {
        Some(h) if status.is_success() => {
            TxId::parse(&h).map_err(|e| format!("bad {TXID_HEADER} {h:?}: {e}"))
        }
        _ => Err(format!(
            "GET /app/collections answered {status} without {TXID_HEADER}: {}",
            response.text().unwrap_or_default()
        )),
    }
}

/// Checks one acknowledged write through the API: entry, status, receipt. Returns what is
/// wrong, if anything.
fn check_one(client: &LedgerClient, ack: &Ack) -> Result<(), String> {
    let txid = &ack.txid;
    let what = format!(
        "acknowledged write {txid} (round {}, collection {}, contents {:?}…)",
        ack.round,
        ack.collection,
        ack.contents.chars().take(40).collect::<String>()
    );
    let entry = client
        .get_entry(txid, Some(&ack.collection))
        .map_err(|e| format!("{what}: GET entry failed: {e}"))?;
    if entry.transaction_id != *txid || entry.collection_id != ack.collection {
        return Err(format!(
            "{what}: GET entry names transaction {} in collection {}",
            entry.transaction_id, entry.collection_id
        ));
    }
    if entry.contents != ack.contents {
        return Err(format!(
            "{what}: contents changed: now {} bytes starting {:?}",
            entry.contents.len(),
            entry.contents.chars().take(60).collect::<String>()
        ));
    }
    let status = client
        .status(txid)
        .map_err(|e| format!("{what}: GET status failed: {e}"))?;
    if status.state != "Committed" || status.transaction_id != *txid {
        return Err(format!("{what}: status is {status:?}"));
    }
    if ack.claims {
        let receipt = client
            .receipt_with_claims(txid)
            .map_err(|e| format!("{what}: receipt (with claims) failed: {e}"))?;
        match receipt.response.application_claims.as_deref() {
            Some([ApplicationClaim::LedgerEntry { ledger_entry }])
                if ledger_entry.collection_id == ack.collection
                    && ledger_entry.contents == ack.contents => {}
            other => {
                return Err(format!(
                    "{what}: the receipt's verified application claims do not reveal exactly \
                     this entry: {other:?}"
                ));
            }
        }
    } else {
        let receipt = client
            .receipt(txid)
            .map_err(|e| format!("{what}: receipt failed: {e}"))?;
        let digest = receipt
            .response
            .receipt
            .as_ref()
            .map(|r| r.leaf_components.claims_digest.clone());
        if digest.as_deref() != Some(ZERO_DIGEST) || receipt.response.application_claims.is_some() {
            return Err(format!(
                "{what}: a write without claims has claims digest {digest:?} / claims {:?}",
                receipt.response.application_claims
            ));
        }
    }
    Ok(())
}

/// Checks `acks` one by one with `VERIFIERS` parallel clients; returns the failures.
fn check_each(base: &str, service_cert: &str, admin: &str, acks: &[&Ack]) -> Vec<String> {
    if acks.is_empty() {
        return Vec::new();
    }
    let chunk = acks.len().div_ceil(VERIFIERS);
    thread::scope(|s| {
        let handles: Vec<_> = acks
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let client = ledger_client(base, service_cert, admin);
                    part.iter()
                        .filter_map(|ack| check_one(&client, ack).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("verifier thread"))
            .collect()
    })
}

/// Lists each collection (and each tag of it) from the first of `acks` in it, and checks
/// that each ack is listed with exactly its contents and tags. With `whole`, the listing
/// starts at the beginning and no contents may appear twice. Returns (failures, entries
/// listed that nobody saw acknowledged).
fn check_listing(client: &LedgerClient, acks: &[&Ack], whole: bool) -> (Vec<String>, usize) {
    let mut failures = Vec::new();
    let mut unacknowledged = 0;
    let universe = tag_universe();
    for collection in COLLECTIONS {
        let mine: Vec<&&Ack> = acks.iter().filter(|a| a.collection == collection).collect();
        let Some(first) = mine.iter().min_by_key(|a| a.seqno) else {
            continue;
        };
        let from = (!whole).then(|| first.txid.clone());
        let list = |tag: Option<&str>| -> Result<Vec<ledger_client::Entry>, String> {
            client
                .list_all(&ListQuery {
                    collection: Some(collection.to_owned()),
                    from: from.clone(),
                    to: None,
                    tag: tag.map(str::to_owned),
                })
                .map_err(|e| format!("listing {collection} (tag {tag:?}) failed: {e}"))
        };
        let entries = match list(None) {
            Ok(entries) => entries,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let by_txid: HashMap<&str, &ledger_client::Entry> = entries
            .iter()
            .map(|e| (e.transaction_id.as_str(), e))
            .collect();
        if whole {
            let mut seen: HashMap<&str, &str> = HashMap::new();
            for e in &entries {
                if let Some(before) = seen.insert(e.contents.as_str(), e.transaction_id.as_str()) {
                    failures.push(format!(
                        "{collection}: the same write appears twice, at {before} and {} ({:?}…)",
                        e.transaction_id,
                        e.contents.chars().take(40).collect::<String>()
                    ));
                }
            }
        }
        let acked: BTreeSet<&str> = mine.iter().map(|a| a.txid.as_str()).collect();
        unacknowledged += entries
            .iter()
            .filter(|e| !acked.contains(e.transaction_id.as_str()))
            .count();
        for ack in &mine {
            match by_txid.get(ack.txid.as_str()) {
                Some(e) if e.contents == ack.contents && e.collection_id == collection => {}
                Some(e) => failures.push(format!(
                    "{collection}: acknowledged {} is listed with other contents ({:?}…)",
                    ack.txid,
                    e.contents.chars().take(40).collect::<String>()
                )),
                None => failures.push(format!(
                    "{collection}: acknowledged {} (round {}) is missing from the listing",
                    ack.txid, ack.round
                )),
            }
        }
        for tag in &universe {
            let tagged: BTreeSet<String> = match list(Some(tag)) {
                Ok(entries) => entries.into_iter().map(|e| e.transaction_id).collect(),
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            for ack in &mine {
                let has = ack.tags.iter().any(|t| t == tag);
                if has != tagged.contains(&ack.txid) {
                    failures.push(format!(
                        "{collection}: acknowledged {} written with tags {:?} is {}listed under \
                         tag {tag}",
                        ack.txid,
                        ack.tags,
                        if has { "not " } else { "" }
                    ));
                }
            }
        }
    }
    (failures, unacknowledged)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

fn fail_with(what: &str, failures: &[String], server: Option<&Server>) -> ! {
    let shown: Vec<&str> = failures.iter().take(20).map(String::as_str).collect();
    panic!(
        "{what}: {} problem(s), the first {}:\n  {}\n{}",
        failures.len(),
        shown.len(),
        shown.join("\n  "),
        server.map(|s| s.output.describe()).unwrap_or_default()
    );
}

/// Starts the server on `data`; fails unless it is listening within `RESTART_LIMIT`.
fn start_server(data: &Path, args: &[&str], what: &str) -> Server {
    let started = Instant::now();
    let server = Server::try_start(data, args).unwrap_or_else(|f| {
        panic!(
            "{what}: cledger serve did not come back (exit status {:?})\n--- stdout ---\n{}\n\
             --- stderr ---\n{}",
            f.status, f.stdout, f.stderr
        )
    });
    let took = started.elapsed();
    assert!(
        took <= RESTART_LIMIT,
        "{what}: the server took {took:?} to listen (limit {RESTART_LIMIT:?})\n{}",
        server.output.describe()
    );
    server
}

/// SIGKILL, after checking that the server is still running (it must not have died on its
/// own). The process is reaped when `server` is dropped.
fn kill9(server: &mut Server, what: &str) {
    server.assert_alive();
    let status = Command::new("kill")
        .arg("-KILL")
        .arg(server.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "{what}: kill -KILL failed");
}

#[test]
fn acknowledged_writes_survive_repeated_sigkill_of_the_server() {
    let rounds = env_u64(ROUNDS_ENV).unwrap_or(DEFAULT_ROUNDS);
    assert!(rounds >= 1, "{ROUNDS_ENV} must be at least 1");
    let seed = env_u64(SEED_ENV).unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("kill_e2e: {rounds} kills, seed={seed} (set {SEED_ENV}={seed} to replay)");
    let mut rng = Rng::new(seed);

    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let max_entry = MAX_ENTRY_BYTES.to_string();
    let args = ["--max-entry-bytes", max_entry.as_str()];
    let test_started = Instant::now();
    let mut server = start_server(&data, &args, "first start");
    // Pinned once: every later client trusts only this certificate.
    let service_cert = server.service_cert_pem();
    let admin = server.admin_bundle_pem();
    let http: Arc<reqwest::blocking::Client> = Arc::new(http_client(&service_cert, &admin));

    let mut all: Vec<Ack> = Vec::new();
    let mut by_txid: HashMap<String, usize> = HashMap::new();
    let mut by_seqno: BTreeMap<u64, String> = BTreeMap::new();
    let (mut attempts, mut killed_errors, mut checked, mut unacked_seen) = (0u64, 0u64, 0u64, 0);
    let (mut in_writes, mut in_restarts, mut in_checks) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut restart_max = Duration::ZERO;

    for round in 0..rounds {
        // Where the ledger ends before this round's writes: every new acknowledgement is after it.
        let end_before = ledger_end(&http, &server.base)
            .unwrap_or_else(|e| panic!("round {round}: reading the ledger end: {e}"));
        let delay = Duration::from_millis(rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1 + 1));
        let killing = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Instant::now();
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (http, base) = (http.clone(), server.base.clone());
                let (killing, stop) = (killing.clone(), stop.clone());
                thread::spawn(move || writer(&http, &base, round, t, seed, &killing, &stop))
            })
            .collect();
        thread::sleep(delay);
        killing.store(true, Ordering::SeqCst);
        kill9(&mut server, &format!("round {round}"));
        stop.store(true, Ordering::SeqCst);
        let mut new_acks = Vec::new();
        let mut failures = Vec::new();
        let mut round_attempts = 0;
        for handle in writers {
            let report = handle.join().expect("writer thread");
            round_attempts += report.attempts;
            killed_errors += report.errors_after_kill;
            failures.extend(report.failures);
            new_acks.extend(report.acks);
        }
        attempts += round_attempts;
        drop(server); // reaps the killed process
        in_writes += phase.elapsed();
        if !failures.is_empty() {
            fail_with(&format!("round {round}: writes"), &failures, None);
        }

        // Seqnos are never handed out twice.
        for ack in &new_acks {
            assert!(
                ack.seqno > end_before.seqno(),
                "round {round}: acknowledged {} is not after the ledger end {end_before} found \
                 at the restart: a seqno was reused",
                ack.txid
            );
            if let Some(before) = by_seqno.insert(ack.seqno, ack.txid.clone()) {
                panic!(
                    "round {round}: seqno {} acknowledged twice ({before} and {})",
                    ack.seqno, ack.txid
                );
            }
            assert!(
                by_txid.insert(ack.txid.clone(), all.len()).is_none(),
                "round {round}: {} acknowledged twice",
                ack.txid
            );
            all.push(ack.clone());
        }

        let phase = Instant::now();
        server = start_server(&data, &args, &format!("restart after kill {}", round + 1));
        let took = phase.elapsed();
        restart_max = restart_max.max(took);
        in_restarts += took;
        assert_eq!(
            server.service_cert_pem(),
            service_cert,
            "round {round}: the service certificate changed across the restart"
        );

        let phase = Instant::now();
        let end_after = ledger_end(&http, &server.base)
            .unwrap_or_else(|e| panic!("round {round}: reading the ledger end: {e}"));
        let newest = by_seqno.keys().next_back().copied().unwrap_or(0);
        assert!(
            end_after.seqno() >= newest,
            "round {round}: after the restart the ledger ends at {end_after}, before the newest \
             acknowledged write (seqno {newest})\n{}",
            server.output.describe()
        );
        let last = round + 1 == rounds;
        let round_acks: Vec<&Ack> = all.iter().filter(|a| a.round == round).collect();
        let to_check: Vec<&Ack> = if last {
            all.iter().collect()
        } else {
            let earlier: Vec<&Ack> = all.iter().filter(|a| a.round < round).collect();
            let mut sample = round_acks.clone();
            for _ in 0..EARLIER_SAMPLE.min(earlier.len()) {
                sample.push(earlier[rng.range(0, earlier.len() as u64) as usize]);
            }
            sample
        };
        let mut failures = check_each(&server.base, &service_cert, &admin, &to_check);
        let client = ledger_client(&server.base, &service_cert, &admin);
        let (listing_failures, unacked) = if last {
            check_listing(&client, &to_check, true)
        } else {
            check_listing(&client, &round_acks, false)
        };
        failures.extend(listing_failures);
        if !failures.is_empty() {
            fail_with(
                &format!("after kill {} (seed={seed})", round + 1),
                &failures,
                Some(&server),
            );
        }
        checked += to_check.len() as u64;
        if last {
            unacked_seen = unacked;
        }
        in_checks += phase.elapsed();
        eprintln!(
            "kill_e2e: round {round}: killed after {delay:?}, {round_attempts} writes tried, {} \
             acknowledged, ledger end {end_before} -> {end_after}, restart {took:.1?}, \
             {} checked",
            round_acks.len(),
            to_check.len()
        );
    }

    // Graceful stop, then the offline audit of the whole directory.
    let status = server.terminate();
    assert!(
        status.success(),
        "the server exited with {status} on SIGTERM"
    );
    let phase = Instant::now();
    let audit = Command::new(support::binary())
        .arg("audit")
        .arg("--data-dir")
        .arg(&data)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("run cledger audit");
    let audit_out = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success(),
        "cledger audit failed ({}):\n{audit_out}\n{}",
        audit.status,
        String::from_utf8_lossy(&audit.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(audit_out.trim())
        .unwrap_or_else(|e| panic!("cledger audit --json printed no JSON ({e}): {audit_out}"));
    assert_eq!(report["ok"], true, "audit: {report}");
    let audited = report["transactions"].as_u64().expect("audit transactions");
    let newest = by_seqno.keys().next_back().copied().unwrap_or(0);
    assert!(
        audited >= newest,
        "the audit verified {audited} transactions, fewer than the newest acknowledged seqno \
         {newest}: {report}"
    );
    assert_eq!(
        report["unsignedTail"], 0,
        "a graceful stop signs everything: {report}"
    );
    let in_audit = phase.elapsed();

    let final_checked = all.len();
    assert!(
        final_checked > 0,
        "no write was acknowledged in {rounds} rounds"
    );
    eprintln!(
        "kill_e2e: {rounds} kills survived, {final_checked} acknowledged writes checked after the \
         last kill (0 lost), {checked} checks over all rounds, {attempts} writes tried, \
         {killed_errors} failed at kills, {unacked_seen} unacknowledged writes survived, audit \
         {audited} transactions OK, seed={seed}; total {:.1?} (writing {in_writes:.1?}, \
         restarts {in_restarts:.1?} (max {restart_max:.1?}), checks {in_checks:.1?}, audit \
         {in_audit:.1?})",
        test_started.elapsed()
    );
}
