//! Helpers shared by the integration tests of `ledger-store`: creating and reopening ledgers in
//! temporary directories, writing recognisable entries, checking them and their receipts,
//! walking the frames of the segment files, copying data directories, and a small seeded PRNG.

#![allow(dead_code)]

pub mod mount;

use ledger_core::TxId;
use ledger_core::entry::{ApplicationEntry, EntryView, TxKind};
use ledger_core::hash::sha256;
use ledger_core::receipt::{VerifiedReceipt, verify_receipt};
use ledger_core::signing::EcSigningKey;
use ledger_identity::Curve;
use ledger_identity::files::NodeFiles;
use ledger_store::segment;
use ledger_store::{
    AppendError, Genesis, Ledger, NodeIdentity, RecoveryReport, StoreConfig, StoreError,
    WriteRequest,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Segments small enough that a few hundred entries span several files.
pub const SMALL_SEGMENT: u64 = 8 << 10;

/// The default configuration with a given segment size.
pub fn config_with_segments(segment_max_bytes: u64) -> StoreConfig {
    StoreConfig {
        segment_max_bytes,
        ..StoreConfig::default()
    }
}

pub fn node_identity(files: &NodeFiles) -> NodeIdentity {
    NodeIdentity {
        signing_key: EcSigningKey::from_pkcs8_pem(&files.node_key_pem).expect("node key parses"),
        cert_pem: files.node_cert_pem.clone(),
        service_key: EcSigningKey::from_pkcs8_pem(&files.service_key_pem)
            .expect("service key parses"),
    }
}

/// Generates a node identity (P-384) into `dir` and creates a new ledger there.
pub fn create_ledger(dir: &Path, config: StoreConfig) -> (Ledger, NodeFiles) {
    let files = NodeFiles::create(dir, Curve::P384, &[]).expect("identity files are created");
    let genesis = Genesis {
        ledger_id: "integration-test".into(),
        service_cert_pem: files.service_cert_pem.clone(),
        writes: vec![],
    };
    let ledger =
        Ledger::create(dir, config, node_identity(&files), genesis).expect("ledger is created");
    (ledger, files)
}

/// The identity files of a data directory made by [`create_ledger`].
pub fn identity(dir: &Path) -> NodeFiles {
    NodeFiles::load(dir).expect("identity files load")
}

/// Opens the ledger of `dir` with the identity stored in `dir`.
pub fn reopen(dir: &Path, config: StoreConfig) -> Result<(Ledger, RecoveryReport), StoreError> {
    Ledger::open(dir, config, node_identity(&identity(dir)))
}

/// Opens the ledger of `dir`, which must succeed.
pub fn reopen_ok(dir: &Path, config: StoreConfig) -> (Ledger, RecoveryReport) {
    reopen(dir, config).unwrap_or_else(|e| panic!("reopening {} failed: {e}", dir.display()))
}

/// The `i`-th entry of a series named `label`: collections, tags, claims and content lengths
/// vary with `i`, and the contents name the series and the number.
pub fn numbered_entry(label: &str, i: u64) -> ApplicationEntry {
    let collection = ["subledger:0", "alpha", "beta"][(i % 3) as usize];
    let tags = match i % 5 {
        0 => vec!["five".to_owned()],
        1 => vec!["odd".to_owned(), "five-plus-one".to_owned()],
        _ => vec![],
    };
    let contents = format!("{label} #{i} {}", "x".repeat((i * 37 % 160) as usize));
    let claims_key = (i % 4 == 3).then(|| sha256(contents.as_bytes()).0);
    ApplicationEntry {
        collection_id: collection.into(),
        contents,
        tags,
        claims_key,
        idempotency: None,
        kv_writes: Vec::new(),
    }
}

/// Submits all `entries` at once (so the writer groups them) and waits for every one to be
/// committed. Retries `Busy` submissions. Returns each entry with its txid, in input order.
pub fn append_all(
    ledger: &Ledger,
    entries: Vec<ApplicationEntry>,
) -> Vec<(TxId, ApplicationEntry)> {
    let (done_tx, done_rx) = mpsc::channel();
    for (i, entry) in entries.iter().enumerate() {
        loop {
            let done_tx = done_tx.clone();
            let done = Box::new(move |result| {
                let _ = done_tx.send((i, result));
            });
            match ledger.submit(WriteRequest::Entry(entry.clone()), done) {
                Ok(()) => break,
                Err(AppendError::Busy) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("submitting entry {i} failed: {e}"),
            }
        }
    }
    drop(done_tx);
    let mut txids = vec![None; entries.len()];
    for (i, result) in done_rx.iter() {
        txids[i] = Some(result.unwrap_or_else(|e| panic!("entry {i} was not committed: {e}")));
    }
    txids
        .into_iter()
        .map(|t| t.expect("every entry completed"))
        .zip(entries)
        .collect()
}

/// Appends `n` entries of series `label` in one group.
pub fn append_numbered(ledger: &Ledger, label: &str, n: u64) -> Vec<(TxId, ApplicationEntry)> {
    append_all(ledger, (0..n).map(|i| numbered_entry(label, i)).collect())
}

/// Appends entries one by one, each waiting for its commit (one signature each).
pub fn append_each(ledger: &Ledger, label: &str, n: u64) -> Vec<(TxId, ApplicationEntry)> {
    (0..n)
        .map(|i| {
            let entry = numbered_entry(label, i);
            let txid = ledger
                .append(WriteRequest::Entry(entry.clone()))
                .expect("append commits");
            (txid, entry)
        })
        .collect()
}

/// Every written entry reads back exactly as written.
pub fn assert_entries_intact(ledger: &Ledger, written: &[(TxId, ApplicationEntry)]) {
    for (txid, entry) in written {
        let record = ledger
            .entry(*txid)
            .unwrap_or_else(|e| panic!("reading {txid} failed: {e}"))
            .unwrap_or_else(|| panic!("{txid} is missing"));
        assert_eq!(record.txid, *txid);
        assert_eq!(&record.entry, entry, "{txid} reads back different contents");
    }
}

/// Fetches the receipt of `txid` and verifies it, with its application claims, against the
/// service certificate. Returns what the verifier established (its txid is checked here).
pub fn verify_receipt_of(ledger: &Ledger, txid: TxId, service_cert_pem: &str) -> VerifiedReceipt {
    let bundle = ledger
        .receipt(txid)
        .unwrap_or_else(|e| panic!("receipt of {txid} failed: {e}"))
        .unwrap_or_else(|| panic!("{txid} has no receipt"));
    assert_eq!(bundle.txid, txid);
    let verified = verify_receipt(
        &bundle.receipt,
        service_cert_pem,
        bundle.application_claims.as_deref(),
    )
    .unwrap_or_else(|e| panic!("receipt of {txid} does not verify: {e}"));
    assert_eq!(
        verified.txid, txid,
        "the receipt's commit evidence names another transaction"
    );
    verified
}

/// Serialised receipt of `txid` (what a client would be handed).
pub fn receipt_json(ledger: &Ledger, txid: TxId) -> String {
    let bundle = ledger.receipt(txid).expect("receipt").expect("committed");
    serde_json::to_string(&bundle.receipt).expect("receipts serialise")
}

/// Recursively copies a directory tree.
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("creating {}: {e}", dst.display()));
    for item in fs::read_dir(src).unwrap_or_else(|e| panic!("listing {}: {e}", src.display())) {
        let item = item.expect("directory entry");
        let target = dst.join(item.file_name());
        if item.file_type().expect("file type").is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            fs::copy(item.path(), &target)
                .unwrap_or_else(|e| panic!("copying {}: {e}", item.path().display()));
        }
    }
}

/// Creates a ledger at `primary_dir` with `history` entries, closes it and copies it to
/// `copy`: a primary and a follower (or replica) that holds its history, with the same keys.
/// Returns the primary's identity files.
pub fn ledger_and_copy(primary_dir: &Path, copy: &Path, history: u64) -> NodeFiles {
    let (primary, files) = create_ledger(primary_dir, StoreConfig::default());
    append_each(&primary, "history", history);
    primary.close();
    drop(primary);
    copy_dir(primary_dir, copy);
    files
}

/// Replaces `dst` with a copy of `src`.
pub fn replace_dir(src: &Path, dst: &Path) {
    if dst.exists() {
        fs::remove_dir_all(dst).expect("removing the directory to replace");
    }
    copy_dir(src, dst);
}

pub fn ledger_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("ledger")
}

/// Segment files of a data directory, ascending.
pub fn segment_paths(data_dir: &Path) -> Vec<PathBuf> {
    segment::list_segments(&ledger_dir(data_dir))
        .expect("segments list")
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// One frame of a segment file.
#[derive(Debug, Clone)]
pub struct FrameInfo {
    pub path: PathBuf,
    pub segment_first: u64,
    /// Offset of the frame header in its file.
    pub offset: u64,
    /// Offset just past the payload.
    pub end: u64,
    pub txid: TxId,
    pub kind: TxKind,
    pub header_len: u64,
}

impl FrameInfo {
    pub fn payload_offset(&self) -> u64 {
        self.offset + self.header_len
    }

    /// The frame's payload (its entry), read from its segment.
    pub fn payload(&self) -> Vec<u8> {
        fs::read(&self.path).expect("segment reads")
            [self.payload_offset() as usize..self.end as usize]
            .to_vec()
    }
}

/// Every frame of an undamaged ledger, in order.
pub fn ledger_frames(data_dir: &Path) -> Vec<FrameInfo> {
    let mut frames = Vec::new();
    let mut prev = None;
    for (first, path) in segment::list_segments(&ledger_dir(data_dir)).expect("segments list") {
        let bytes = fs::read(&path).expect("segment reads");
        let scan = segment::scan_segment(&bytes, prev);
        assert_eq!(scan.damage, None, "{} is damaged", path.display());
        for frame in scan.frames {
            let payload = &bytes[frame.payload_offset() as usize..frame.end() as usize];
            let kind = EntryView::parse(payload, frame.txid.seqno())
                .expect("stored entries parse")
                .kind;
            frames.push(FrameInfo {
                path: path.clone(),
                segment_first: first,
                offset: frame.offset,
                end: frame.end(),
                txid: frame.txid,
                kind,
                header_len: u64::from(frame.header_len),
            });
            prev = Some(frame.txid);
        }
    }
    frames
}

/// Txids of the signature transactions of a ledger.
pub fn signature_txids(data_dir: &Path) -> Vec<TxId> {
    ledger_frames(data_dir)
        .into_iter()
        .filter(|f| f.kind == TxKind::Signature)
        .map(|f| f.txid)
        .collect()
}

/// The seed for a test's PRNG: `CLEDGER_TEST_SEED` if set, else `default` (pass `None` for a
/// time-based seed). Printed so that a failing run can be repeated.
pub fn test_seed(default: Option<u64>) -> u64 {
    let seed = match std::env::var("CLEDGER_TEST_SEED") {
        Ok(text) => text.parse().expect("CLEDGER_TEST_SEED is a u64"),
        Err(_) => default.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
        }),
    };
    println!("PRNG seed {seed} (set CLEDGER_TEST_SEED={seed} to repeat)");
    seed
}

/// xorshift64*: small, deterministic, good enough to pick positions and delays.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Zero is a fixed point of xorshift; mix the seed so every seed works.
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo < hi);
        lo + self.next_u64() % (hi - lo)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64) as usize]
    }
}

/// Every committed transaction of `primary` after `after`, as (txid, stored bytes): what a
/// primary replicates. All transactions of a standalone ledger are in view 1.
pub fn transactions_after(primary: &Ledger, after: u64) -> Vec<(TxId, Vec<u8>)> {
    let end = primary.committed().expect("primary committed").seqno();
    (after + 1..=end)
        .map(|s| {
            let txid = TxId::new(1, s).expect("seqno >= 1");
            let bytes = primary
                .transaction_bytes(txid)
                .expect("readable")
                .expect("committed on the primary");
            (txid, bytes)
        })
        .collect()
}
