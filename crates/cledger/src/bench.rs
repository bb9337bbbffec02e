//! `cledger bench`: a closed-loop HTTPS load generator over the project's async client.
//!
//! Each of `--connections` workers keeps exactly one request in flight: the next request
//! starts when the previous answer arrives, so the measured rate is what the server sustains
//! at that concurrency, and the latency is what a caller sees. A worker's writes go over one
//! TLS connection of its own (over HTTP/1.1 through a [`Writer`], which follows a backup's
//! redirect to the primary and stays there), its reads over another (its [`Client`]).
//! Phases run one after another, each with its own warm-up (not measured):
//! 1. `append`: `POST /app/transactions`; cledger answers only once the write is committed
//!    (durable and covered by a durable signature), so the answer is "append → Committed";
//! 2. `read`: `GET /app/transactions/{id}` of entries written in phase 1 (or, with
//!    `--existing`, of random sequence numbers of the ledger);
//! 3. `receipt`: `GET .../receipt`, every `--verify-every`th one verified against the pinned
//!    service certificate (verification is client CPU: ~1.5 ms for a P-384 receipt);
//! 4. `list`: one page (≤ 100 entries) of `GET /app/transactions` over a range;
//! 5. `hooked`: `POST /app/transactions` as in `append`, with one pre-hook (a user-defined
//!    function checking the contents, [`CHECK_FUNCTION`]): the cost a hook adds to a write;
//! 6. `execute`: `POST /app/userDefinedFunctions/{id}:execute` of a trivial function
//!    ([`NOOP_FUNCTION`]), which writes nothing.
//!
//! The last two create their function first (the bench's identity must be an administrator)
//! and need a ledger without user-defined endpoints deployed.

use clap::{Args, ValueEnum};
use ledger_client::nonblocking::Client;
use ledger_client::writer::Writer;
use ledger_client::{Appended, ClientConfig, Error, HttpVersion};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Phase {
    Append,
    Read,
    Receipt,
    List,
    Hooked,
    Execute,
}

/// The pre-hook of the `hooked` phase: ACL's published validation sample, adapted to refuse
/// empty contents (the bench writes letters).
pub const CHECK_FUNCTION: (&str, &str) = (
    "cledger-bench-check",
    "export function main() { if (context.contents.length === 0) { throw new Error('empty'); } }",
);
/// The function of the `execute` phase.
pub const NOOP_FUNCTION: (&str, &str) = (
    "cledger-bench-noop",
    "export function main(a) { return a; }",
);

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Entry size in bytes (the `contents` string).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Measured seconds per phase (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unmeasured seconds at the start of each phase.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Stop the append phase after this many measured writes instead of after --duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Spread writes over this many collections (subledger:0 plus bench-1, bench-2, ...).
    #[arg(long, default_value_t = 1)]
    pub collections: usize,
    /// Phases to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "append,read,receipt,list"
    )]
    pub phases: Vec<Phase>,
    /// Verify one receipt in N in the receipt phase (1 = every receipt).
    #[arg(long, default_value_t = 1)]
    pub verify_every: u64,
    /// Read, receipt and list phases pick random sequence numbers of the whole ledger (entries
    /// of subledger:0, e.g. a ledger filled by `cledger local fill`) instead of this run's writes.
    #[arg(long)]
    pub existing: bool,
    /// Also write the figures as JSON to FILE (`--json` prints them on stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// Async runtime worker threads [default: the number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// HTTP version: h1 (HTTP/1.1, what the Azure SDKs' transports speak) or h2 (HTTP/2,
    /// negotiated in the TLS handshake).
    #[arg(long, value_enum, default_value = "h1")]
    pub protocol: BenchProtocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchProtocol {
    H1,
    H2,
}

impl BenchProtocol {
    fn name(self) -> &'static str {
        match self {
            BenchProtocol::H1 => "h1",
            BenchProtocol::H2 => "h2",
        }
    }
}

/// The figures of one phase.
#[derive(Debug, Default)]
struct PhaseReport {
    ops: u64,
    seconds: f64,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    /// Entries returned (list) or receipts verified (receipt).
    items: u64,
}

impl PhaseReport {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        f64::from(self.latencies_us[rank]) / 1000.0
    }

    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn to_json(&self, phase: Phase) -> Value {
        json!({
            "phase": format!("{phase:?}").to_lowercase(),
            "ops": self.ops,
            "seconds": self.seconds,
            "ops_per_sec": self.rate(),
            "latency_ms": {
                "p50": self.percentile_ms(50.0),
                "p90": self.percentile_ms(90.0),
                "p99": self.percentile_ms(99.0),
                "p99_9": self.percentile_ms(99.9),
                "max": self.percentile_ms(100.0),
            },
            "items": self.items,
            "errors": self.errors,
        })
    }
}

/// One worker's connections: its client for reads and setup and, over HTTP/1.1, a
/// [`Writer`] for its writes (reqwest's per-request work — parsing the URL, the connection
/// pool, handing each request to the connection's own task — cost the generator more CPU per
/// write than TLS and the socket calls; over HTTP/2 writes go through the client).
struct Connections {
    client: Client,
    writer: Option<Writer>,
}

impl Connections {
    fn new(config: &ClientConfig) -> Result<Connections, Error> {
        Ok(Connections {
            client: Client::new(config.clone())?,
            writer: match config.http_version {
                HttpVersion::Http1 => Some(Writer::new(config)?),
                HttpVersion::Negotiated => None,
            },
        })
    }

    /// `POST /app/transactions`, with pre-hooks if `hooks` names any.
    async fn append(
        &self,
        contents: &str,
        collection: Option<&str>,
        hooks: &[&str],
    ) -> Result<Appended, Error> {
        match (&self.writer, hooks) {
            (Some(w), []) => w.post_entry(contents, collection).await,
            (Some(w), _) => w.post_entry_with_hooks(contents, collection, hooks).await,
            (None, []) => self.client.post_entry(contents, collection).await,
            (None, _) => {
                self.client
                    .post_entry_with_hooks(contents, collection, hooks)
                    .await
            }
        }
    }
}

/// A written entry the later phases read back.
#[derive(Clone)]
struct Written {
    txid: String,
    seqno: u64,
    view: u64,
    collection: Option<String>,
}

/// What a phase's operation reports: how many items it handled (entries listed, receipts
/// verified) and, for appends, what it wrote.
struct Done {
    items: u64,
    written: Option<Written>,
}

pub fn run(args: BenchArgs, config: ClientConfig, json_mode: bool) -> Result<(), Error> {
    if args.connections == 0 || args.size == 0 || args.duration <= 0.0 || args.collections == 0 {
        return Err(Error::Config(
            "--connections, --size, --duration and --collections must be positive".into(),
        ));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("async runtime: {e}")))?;
    let config = ClientConfig {
        http_version: match args.protocol {
            BenchProtocol::H1 => HttpVersion::Http1,
            BenchProtocol::H2 => HttpVersion::Negotiated,
        },
        ..config
    };
    let reports = runtime.block_on(run_phases(&args, config))?;
    let figures = json!({
        "protocol": args.protocol.name(),
        "connections": args.connections,
        "size": args.size,
        "collections": args.collections,
        "duration": args.duration,
        "warmup": args.warmup,
        "phases": reports.iter().map(|(p, r)| r.to_json(*p)).collect::<Vec<_>>(),
    });
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{figures:#}\n"))
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    }
    if json_mode {
        println!("{figures}");
    } else {
        print_table(&args, &reports);
    }
    Ok(())
}

async fn run_phases(
    args: &BenchArgs,
    config: ClientConfig,
) -> Result<Vec<(Phase, PhaseReport)>, Error> {
    let workers = (0..args.connections)
        .map(|_| Connections::new(&config).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let collections: Arc<Vec<Option<String>>> = Arc::new(
        (0..args.collections)
            .map(|i| (i > 0).then(|| format!("bench-{i}")))
            .collect(),
    );
    let mut written: Arc<Vec<Written>> = Arc::new(Vec::new());
    if args.existing {
        written = Arc::new(existing_range(&workers[0].client).await?);
    }
    let mut reports = Vec::new();
    for (phase, (id, code)) in [
        (Phase::Hooked, CHECK_FUNCTION),
        (Phase::Execute, NOOP_FUNCTION),
    ] {
        if args.phases.contains(&phase) {
            workers[0].client.put_function(id, code).await?;
        }
    }
    for &phase in &args.phases {
        let size = args.size;
        let pool = written.clone();
        let needs_entries = !matches!(phase, Phase::Append | Phase::Hooked | Phase::Execute);
        if needs_entries && pool.is_empty() {
            return Err(Error::Config(format!(
                "the {phase:?} phase needs entries: run the append phase first or pass --existing"
            )));
        }
        let verify_every = args.verify_every.max(1);
        let existing = args.existing;
        let collections = collections.clone();
        let count = if matches!(phase, Phase::Append | Phase::Hooked) {
            args.count
        } else {
            None
        };
        let (report, new) = run_phase(
            args,
            &workers,
            count,
            move |connections, worker, n, seed| {
                let pool = pool.clone();
                let collections = collections.clone();
                async move {
                    let rng = &mut Rng::from_seed(seed);
                    let pick = |rng: &mut Rng| pick(&pool, existing, rng);
                    match phase {
                        Phase::Append | Phase::Hooked => {
                            let collection =
                                collections[(rng.next() as usize) % collections.len()].clone();
                            let contents = contents(worker, n, size, rng);
                            let hooks: &[&str] = if phase == Phase::Hooked {
                                &[CHECK_FUNCTION.0]
                            } else {
                                &[]
                            };
                            let appended = connections
                                .append(&contents, collection.as_deref(), hooks)
                                .await?;
                            let txid = ledger_core::TxId::parse(&appended.transaction_id)
                                .map_err(|e| Error::Protocol(e.to_string()))?;
                            Ok(Done {
                                items: 1,
                                written: Some(Written {
                                    txid: appended.transaction_id,
                                    seqno: txid.seqno(),
                                    view: txid.view(),
                                    collection,
                                }),
                            })
                        }
                        Phase::Read => {
                            let w = pick(rng);
                            let entry = connections
                                .client
                                .get_entry(&w.txid, w.collection.as_deref())
                                .await?;
                            if entry.transaction_id != w.txid {
                                return Err(Error::Protocol(format!(
                                    "asked for {}, got {}",
                                    w.txid, entry.transaction_id
                                )));
                            }
                            Ok(Done {
                                items: 1,
                                written: None,
                            })
                        }
                        Phase::Receipt => {
                            let w = pick(rng);
                            if n % verify_every == 0 {
                                connections.client.receipt(&w.txid).await?;
                                Ok(Done {
                                    items: 1,
                                    written: None,
                                })
                            } else {
                                let r = connections.client.receipt_unverified(&w.txid).await?;
                                if r.receipt.is_none() {
                                    return Err(Error::Protocol("receipt not ready".into()));
                                }
                                Ok(Done {
                                    items: 0,
                                    written: None,
                                })
                            }
                        }
                        Phase::Execute => {
                            let argument = n.to_string();
                            let answer = connections
                                .client
                                .execute_function(NOOP_FUNCTION.0, &[&argument])
                                .await?;
                            if answer["result"]["returnValue"] != json!(argument) {
                                return Err(Error::Protocol(format!(
                                    "the function answered {answer}, not {argument}"
                                )));
                            }
                            Ok(Done {
                                items: 1,
                                written: None,
                            })
                        }
                        Phase::List => {
                            let w = pick(rng);
                            let to = format!("{}.{}", w.view, w.seqno + 200);
                            let page = connections
                                .client
                                .list_page(w.collection.as_deref(), &w.txid, &to)
                                .await?;
                            Ok(Done {
                                items: page.len() as u64,
                                written: None,
                            })
                        }
                    }
                }
            },
        )
        .await;
        if phase == Phase::Append && !new.is_empty() && !args.existing {
            written = Arc::new(new);
        }
        eprintln!(
            "{:<8} {:>10.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
            format!("{phase:?}").to_lowercase(),
            report.rate(),
            report.percentile_ms(50.0),
            report.percentile_ms(99.0),
            report.errors.values().sum::<u64>()
        );
        reports.push((phase, report));
    }
    Ok(reports)
}

/// Runs `op` on every connection until the phase ends; returns the merged figures and what
/// the operations wrote.
async fn run_phase<F, Fut>(
    args: &BenchArgs,
    workers: &[Arc<Connections>],
    count: Option<u64>,
    op: F,
) -> (PhaseReport, Vec<Written>)
where
    F: Fn(Arc<Connections>, usize, u64, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Done, Error>> + Send,
{
    let start = Instant::now();
    let measured_from = start + Duration::from_secs_f64(args.warmup.max(0.0));
    let end = measured_from + Duration::from_secs_f64(args.duration);
    let measured_ops = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_at_count = count;
    let merged = Arc::new(Mutex::new((PhaseReport::default(), Vec::new())));
    let mut tasks = Vec::new();
    for (worker, connections) in workers.iter().enumerate() {
        let connections = connections.clone();
        let op = op.clone();
        let merged = merged.clone();
        let measured_ops = measured_ops.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(worker as u64);
            let mut local = PhaseReport::default();
            let mut written = Vec::new();
            let mut n = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if let Some(limit) = stop_at_count
                    && measured_ops.load(std::sync::atomic::Ordering::Relaxed) >= limit
                {
                    break;
                }
                let result = op(connections.clone(), worker, n, rng.next()).await;
                n += 1;
                let measured = now >= measured_from;
                match result {
                    Ok(done) => {
                        if let Some(w) = done.written {
                            written.push(w);
                        }
                        if measured {
                            local.ops += 1;
                            local.items += done.items;
                            local
                                .latencies_us
                                .push(now.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            measured_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        let key = match &e {
                            Error::Api { status, code, .. } => format!("{status} {code}"),
                            Error::Transport(_) => "transport".into(),
                            Error::Timeout(_) => "timeout".into(),
                            other => other.to_string(),
                        };
                        *local.errors.entry(key).or_default() += 1;
                        if matches!(e, Error::Transport(_)) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            let mut m = merged.lock().expect("merge lock");
            m.0.ops += local.ops;
            m.0.items += local.items;
            m.0.latencies_us.append(&mut local.latencies_us);
            for (k, v) in local.errors {
                *m.0.errors.entry(k).or_default() += v;
            }
            m.1.append(&mut written);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let measured_end = Instant::now().min(end);
    let (mut report, written) = std::mem::take(&mut *merged.lock().expect("merge lock"));
    report.seconds = measured_end
        .saturating_duration_since(measured_from)
        .as_secs_f64();
    report.latencies_us.sort_unstable();
    (report, written)
}

/// Entries of subledger:0 at random sequence numbers of the whole ledger: `--existing`.
async fn existing_range(client: &Client) -> Result<Vec<Written>, Error> {
    let last = client.current_txid().await?;
    let txid = ledger_core::TxId::parse(&last).map_err(|e| Error::Protocol(e.to_string()))?;
    // One pseudo-entry describing the range; `pick` draws seqnos from it.
    Ok(vec![Written {
        txid: last,
        seqno: txid.seqno(),
        view: txid.view(),
        collection: None,
    }])
}

fn pick(pool: &[Written], existing: bool, rng: &mut Rng) -> Written {
    if existing {
        let top = &pool[0];
        // Seqno 1 is the genesis transaction; entries start at 2.
        let seqno = 2 + rng.next() % top.seqno.saturating_sub(1).max(1);
        Written {
            txid: format!("{}.{}", top.view, seqno),
            seqno,
            view: top.view,
            collection: None,
        }
    } else {
        pool[(rng.next() as usize) % pool.len()].clone()
    }
}

/// `size` printable bytes, unique per (worker, n).
fn contents(worker: usize, n: u64, size: usize, rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut s = format!("bench {worker} {n} ");
    'fill: while s.len() < size {
        // Eight letters from each random number (one draw per letter was 3% of the
        // generator's CPU).
        for byte in rng.next().to_le_bytes() {
            if s.len() == size {
                break 'fill;
            }
            s.push(ALPHABET[usize::from(byte) % ALPHABET.len()] as char);
        }
    }
    s.truncate(size);
    s
}

/// xorshift64*: plenty for picking entries and padding; not for anything secret.
pub struct Rng(u64);

impl Rng {
    fn new(stream: u64) -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64);
        Rng((seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn from_seed(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn print_table(args: &BenchArgs, reports: &[(Phase, PhaseReport)]) {
    println!(
        "cledger bench: {} connections, {}-byte entries, {} collection(s), {} s per phase after {} s warm-up",
        args.connections, args.size, args.collections, args.duration, args.warmup
    );
    println!(
        "{:<8} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "phase", "ops", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
    );
    for (phase, r) in reports {
        println!(
            "{:<8} {:>10} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8}",
            format!("{phase:?}").to_lowercase(),
            r.ops,
            r.rate(),
            r.percentile_ms(50.0),
            r.percentile_ms(90.0),
            r.percentile_ms(99.0),
            r.percentile_ms(99.9),
            r.percentile_ms(100.0),
            r.errors.values().sum::<u64>()
        );
        for (code, count) in &r.errors {
            println!("         error {code}: {count}");
        }
        if *phase == Phase::List {
            println!("         entries listed: {}", r.items);
        }
        if *phase == Phase::Receipt {
            println!("         receipts verified: {}", r.items);
        }
    }
}
