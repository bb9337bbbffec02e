//! The sequencer: the first stage of the write path. It gives transactions their seqnos,
//! encodes and seals them, computes their leaves, and adds a signature transaction when one is
//! due — or, on a follower, checks and takes the primary's already-encoded transactions
//! unchanged. It touches no file: what it produces is a [`Sequenced`] batch of frames for the
//! log, and its own state (next seqno, Merkle frontier, last signature) moves on only when the
//! writer says that batch is durable ([`Sequencer::advance`]), so a batch that fails to reach
//! the disk leaves no trace here and its seqnos are used again.
//!
//! The sequencer also keeps the data key's use budget (`crypto::Sealing`, FORMAT.md §5.1):
//! when sealing an entry would pass the current key's budget, a rotation transaction that
//! records the next key is sequenced first.

use crate::crypto::{KeyError, KeyRing, Sealing};
use crate::guard::{ForkGuard, SignedPoint};
use crate::index::IndexOp;
use crate::recovery::index_op;
use crate::segment;
use crate::tree::{EntryClass, FrameRecord, TreeWriter};
use crate::writer::{Pending, Submission};
use crate::{AppendError, FollowerRefusal};
use ledger_core::TxId;
use ledger_core::cose::ServiceSigner;
use ledger_core::entry::{self, EntryView, Sealer, SignatureRecord, TableWrite, TxBody};
use ledger_core::hash::Hash32;
use ledger_core::signing::EcSigningKey;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

/// A batch ready for the log: its frames, and what becomes true once they are durable.
pub(crate) struct Sequenced {
    /// The frames of every transaction of the batch, as appended to the log.
    pub frames: Vec<u8>,
    /// Every transaction of the batch and where its encoded bytes are in `frames`.
    pub payloads: Vec<(TxId, Range<usize>)>,
    /// Submitted transactions and their completions (signatures and a follower's
    /// transactions have none).
    pub txs: Vec<Pending>,
    /// Index and governance changes, applied when the transactions are committed.
    pub ops: Vec<(TxId, IndexOp)>,
    /// Signature transactions in the batch (at most one on a primary).
    pub signatures: Vec<(TxId, SignedPoint)>,
    /// The frontier once the batch is in the tree.
    pub tree: TreeWriter,
    /// The sealing state once the batch is durable (with the key versions it recorded).
    keys: Sealing,
    /// The last transaction of the batch (None for an empty batch).
    pub last: Option<TxId>,
}

/// One transaction of a replica's append, at the seqno consensus gave it.
pub enum ReplicaOp {
    /// A primary's encoded transaction, kept byte for byte once checked.
    Encoded(Vec<u8>),
    /// This node's own proposal while it leads: encoded and sealed here.
    Write(PreparedWrite),
    /// Public governance writes encoded here. Encoding them is deterministic (nothing is
    /// sealed or drawn at random), so every replica that encodes the same writes at the same
    /// txid holds the same bytes: consensus's own entries (a new view, a membership change)
    /// become ledger transactions this way on every node.
    Governance(Vec<TableWrite>),
    /// This node's signature over the root of every transaction before it.
    Signature,
    /// A new ledger secret, recorded under the current one (FORMAT.md §5.1).
    Rotation,
}

/// A client's write checked against the store's limits, with its claims digest: what a
/// primary proposes to consensus before it has a seqno ([`crate::Ledger::prepare`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedWrite {
    pub(crate) body: TxBody,
    pub(crate) claims_digest: Hash32,
}

/// Why a replica's append was not taken.
pub(crate) enum ReplicateError {
    /// The transactions do not continue this ledger; nothing was written.
    Refused(FollowerRefusal),
    /// Encoding this node's own proposal failed; nothing was written.
    Failed(String),
    /// Signing would contradict a root this node signed before: the store must stop.
    ForkGuard(String),
}

impl From<FollowerRefusal> for ReplicateError {
    fn from(r: FollowerRefusal) -> Self {
        ReplicateError::Refused(r)
    }
}

/// Why a primary could not sequence a batch.
pub(crate) enum SequenceError {
    /// Signing here would contradict a root this node signed before: the store must stop.
    ForkGuard(String),
}

pub(crate) struct Sequencer {
    view: u64,
    next_seqno: u64,
    /// The newest durable transaction.
    last: Option<TxId>,
    tree: TreeWriter,
    key: EcSigningKey,
    node_id: Hash32,
    /// The service key: COSE root signatures here, and the check of a primary's on a follower.
    service: ServiceSigner,
    /// The CWT issuer of COSE root signatures: the ledger id the genesis recorded, once this
    /// node knows it (a node that joined empty learns it when the genesis is committed).
    issuer: Option<String>,
    /// The newest durable signature transaction (this node's, or a primary's on a follower).
    last_signature: Option<SignedPoint>,
    last_signature_at: Instant,
    sign_every: u64,
    sign_interval: Duration,
    /// The data key that seals now and how much of its budget is used.
    keys: Sealing,
}

impl Sequencer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        last: Option<TxId>,
        tree: TreeWriter,
        key: EcSigningKey,
        node_id: Hash32,
        service: ServiceSigner,
        issuer: Option<String>,
        last_signature: Option<SignedPoint>,
        sign_every: u64,
        sign_interval: Duration,
        keys: Sealing,
    ) -> Sequencer {
        Sequencer {
            view: last.map_or(1, TxId::view),
            next_seqno: last.map_or(1, |t| t.seqno() + 1),
            last,
            tree,
            key,
            node_id,
            service,
            issuer,
            last_signature,
            last_signature_at: Instant::now(),
            sign_every,
            sign_interval,
            keys,
        }
    }

    pub fn knows_issuer(&self) -> bool {
        self.issuer.is_some()
    }

    pub fn set_issuer(&mut self, ledger_id: String) {
        self.issuer = Some(ledger_id);
    }

    pub fn next_seqno(&self) -> u64 {
        self.next_seqno
    }

    /// The txid the next transaction gets.
    pub fn next_txid(&self) -> TxId {
        TxId::new(self.view, self.next_seqno).expect("view and seqno are >= 1")
    }

    /// The newest durable transaction.
    pub fn last(&self) -> Option<TxId> {
        self.last
    }

    pub fn tree(&mut self) -> &mut TreeWriter {
        &mut self.tree
    }

    /// Durable transactions that no durable signature covers yet.
    pub fn unsigned(&self) -> u64 {
        (self.next_seqno - 1).saturating_sub(self.last_signature.map_or(0, |s| s.seqno))
    }

    /// When a signature becomes due by the interval rule.
    pub fn signature_deadline(&self) -> Instant {
        self.last_signature_at + self.sign_interval
    }

    /// Sequences `batch` (a primary's submissions) into frames starting at log offset `base`.
    /// A signature over everything before it is added when one is due: `sign_now` (the queue
    /// is drained), `sign_every` unsigned transactions, or `sign_interval` since the last one.
    /// A submission that cannot be encoded is answered at once and takes no seqno.
    pub fn sequence(
        &self,
        batch: Vec<Submission>,
        base: u64,
        sign_now: bool,
        ring: &KeyRing,
        guard: &ForkGuard,
    ) -> Result<Sequenced, (SequenceError, Vec<Pending>)> {
        let mut out = self.empty_batch(batch.len() + 1);
        let mut seqno = self.next_seqno;
        let mut batch = batch.into_iter();
        // An entry that waits while the rotation sequenced before it takes its seqno.
        let mut held = None;
        while let Some(sub) = held.take().or_else(|| batch.next()) {
            // Key-use budget: a rotation transaction goes first when this entry's seal would
            // pass the current key's budget (FORMAT.md §5.1).
            let sub = match rotation_before(&mut out.keys, seqno, &sub) {
                Ok(None) => sub,
                Ok(Some(rotation)) => {
                    held = Some(sub);
                    rotation
                }
                Err(e) => {
                    (sub.done)(Err(AppendError::Failed(e.to_string())));
                    continue;
                }
            };
            let txid = TxId::new(self.view, seqno).expect("view and seqno are >= 1");
            let Some(bytes) = encode(ring, &out.keys, txid, &sub.body, &sub.claims_digest) else {
                (sub.done)(Err(AppendError::Failed(
                    "the OS random number generator failed".into(),
                )));
                continue;
            };
            // `submit` bounded the request; should the bound ever be short, the frame fails
            // its own submission here rather than being written for the next open to refuse.
            if let Err(e) = crate::limits::check_frame(bytes.len()) {
                (sub.done)(Err(AppendError::Limit(e)));
                continue;
            }
            let class = EntryClass::of(&sub.body);
            out.push_frame(base, txid, &bytes, class);
            out.ops.push((txid, index_op(sub.body)));
            out.txs.push(Pending {
                txid,
                done: Some(sub.done),
                submitted: Some(sub.submitted),
            });
            seqno += 1;
        }
        let unsigned = self.unsigned() + out.txs.len() as u64;
        let due = sign_now
            || unsigned >= self.sign_every
            || self.last_signature_at.elapsed() >= self.sign_interval;
        if unsigned > 0 && due {
            let txid = TxId::new(self.view, seqno).expect("view and seqno are >= 1");
            let record = match self.signature(txid, &out, guard) {
                Ok(record) => record,
                Err(e) => return Err((e, out.txs)),
            };
            let root = record.root;
            let body = TxBody::Signature(record);
            let bytes = encode(ring, &out.keys, txid, &body, &Hash32::ZERO)
                .expect("signatures have no private part");
            out.push_frame(base, txid, &bytes, EntryClass::Signature);
            out.ops.push((txid, IndexOp::Signature));
            out.signatures.push((txid, SignedPoint { seqno, root }));
        }
        Ok(out)
    }

    /// A replica's append: transactions at the seqnos consensus gave them, each the next
    /// seqno and in a view no older than the last. A primary's encoded transaction
    /// ([`ReplicaOp::Encoded`]) must decode (with the ledger secret) and every signature must
    /// sign exactly the root of the transactions before it here; the others are encoded here
    /// ([`ReplicaOp`]). A bad batch is refused whole and nothing of it is kept.
    ///
    /// A rotation among them joins `ring` at once (the entries after it are opened with the
    /// key it records); if the batch is refused, or later fails to reach the disk, the ring is
    /// cut back to the durable end ([`KeyRing::truncate_after`]).
    pub fn replicate(
        &self,
        ops: Vec<(TxId, ReplicaOp)>,
        base: u64,
        ring: &KeyRing,
        guard: &ForkGuard,
    ) -> Result<Sequenced, ReplicateError> {
        let replicated = self.replicate_into(ops, base, ring, guard);
        if replicated.is_err() {
            ring.truncate_after(self.next_seqno - 1);
        }
        replicated
    }

    fn replicate_into(
        &self,
        ops: Vec<(TxId, ReplicaOp)>,
        base: u64,
        ring: &KeyRing,
        guard: &ForkGuard,
    ) -> Result<Sequenced, ReplicateError> {
        let mut out = self.empty_batch(ops.len());
        let mut view = self.view;
        for (expected, (txid, op)) in (self.next_seqno..).zip(ops) {
            if txid.seqno() != expected {
                return Err(FollowerRefusal::OutOfSequence {
                    expected,
                    got: txid,
                }
                .into());
            }
            if txid.view() < view {
                return Err(FollowerRefusal::ViewRegressed { view, got: txid }.into());
            }
            let made = |body: TxBody, claims_digest: Hash32, out: &Sequenced| {
                encode(ring, &out.keys, txid, &body, &claims_digest)
                    .map(|bytes| (bytes, body))
                    .ok_or_else(|| {
                        ReplicateError::Failed("the OS random number generator failed".into())
                    })
            };
            let (bytes, body) = match op {
                ReplicaOp::Encoded(bytes) => {
                    let body = check_encoded(txid, &bytes, ring, &out, &self.service)?;
                    (bytes, body)
                }
                ReplicaOp::Write(write) => made(write.body, write.claims_digest, &out)?,
                ReplicaOp::Governance(writes) => {
                    made(TxBody::Governance(writes), Hash32::ZERO, &out)?
                }
                ReplicaOp::Rotation => {
                    let write = out
                        .keys
                        .rotate(txid.seqno())
                        .map_err(|e| ReplicateError::Failed(e.to_string()))?;
                    made(TxBody::Governance(vec![write]), Hash32::ZERO, &out)?
                }
                ReplicaOp::Signature => {
                    let record = self.signature(txid, &out, guard).map_err(
                        |SequenceError::ForkGuard(reason)| ReplicateError::ForkGuard(reason),
                    )?;
                    made(TxBody::Signature(record), Hash32::ZERO, &out)?
                }
            };
            crate::limits::check_frame(bytes.len())
                .map_err(|e| ReplicateError::Failed(e.to_string()))?;
            if let TxBody::Signature(record) = &body {
                out.signatures.push((
                    txid,
                    SignedPoint {
                        seqno: txid.seqno(),
                        root: record.root,
                    },
                ));
            }
            let class = EntryClass::of(&body);
            out.push_frame(base, txid, &bytes, class);
            out.ops.push((txid, index_op(body)));
            view = txid.view();
        }
        Ok(out)
    }

    /// This node's signature transaction at `seqno`, over the root of everything before it
    /// in `out`'s tree, unless the fork guard says this node signed another root there.
    fn signature(
        &self,
        txid: TxId,
        out: &Sequenced,
        guard: &ForkGuard,
    ) -> Result<SignatureRecord, SequenceError> {
        let seqno = txid.seqno();
        // A signature at seqno s signs the root of leaves 0..s, i.e. everything before it.
        let root = out.tree.root().expect("leaf 0 is always present");
        if let Some(g) = guard.last().filter(|g| g.seqno == seqno && g.root != root) {
            return Err(SequenceError::ForkGuard(format!(
                "refusing to sign seqno {} with root {root}: this node already signed root {} there (fork guard)",
                g.seqno, g.root
            )));
        }
        // A clock before 1970 signs as 0 rather than stopping the ledger: `iat` is
        // informational, the signed txid is what orders signatures.
        let issued_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(SignatureRecord {
            node_id: self.node_id,
            root,
            signature: self.key.sign_root(&root),
            cose_signature: Some(self.service.sign_root(
                &root,
                txid,
                self.issuer.as_deref(),
                issued_at,
            )),
        })
    }

    /// The batch is durable: move on past it. Key versions it recorded join `ring` before
    /// anything sealed under them is published.
    pub fn advance(&mut self, batch: &mut Sequenced, ring: &KeyRing) {
        let Some(last) = batch.last else {
            return;
        };
        batch.keys.publish_to(ring);
        std::mem::swap(&mut self.keys, &mut batch.keys);
        self.view = last.view();
        self.next_seqno = last.seqno() + 1;
        self.last = Some(last);
        std::mem::swap(&mut self.tree, &mut batch.tree);
        if let Some((_, point)) = batch.signatures.last() {
            self.last_signature = Some(*point);
            self.last_signature_at = Instant::now();
        }
    }

    /// A suffix of the log was cut off: go back to `last`, with the tree of the transactions
    /// through it, the newest signature among them and the ring's sealing state.
    pub fn rewind(
        &mut self,
        last: TxId,
        tree: TreeWriter,
        last_signature: Option<SignedPoint>,
        keys: Sealing,
    ) {
        self.view = last.view();
        self.next_seqno = last.seqno() + 1;
        self.last = Some(last);
        self.tree = tree;
        self.last_signature = last_signature;
        self.keys = keys;
    }

    /// A batch of `seals` seqnos was sealed and did not reach the disk: its seqnos will be
    /// sealed again, so what it sealed counts against the key's budget.
    pub fn discard(&mut self, seals: u64) {
        self.keys.discard(seals);
    }

    fn empty_batch(&self, capacity: usize) -> Sequenced {
        Sequenced {
            frames: Vec::new(),
            payloads: Vec::with_capacity(capacity),
            txs: Vec::with_capacity(capacity),
            ops: Vec::with_capacity(capacity),
            signatures: Vec::new(),
            tree: self.tree.clone(),
            keys: self.keys.clone(),
            last: None,
        }
    }
}

impl Sequenced {
    /// Appends `bytes` as the frame of `txid` at log offset `base + frames so far`, and its
    /// leaf to the tree.
    fn push_frame(&mut self, base: u64, txid: TxId, bytes: &[u8], class: EntryClass) {
        let leaf = EntryView::parse(bytes, txid.seqno())
            .expect("encoded or checked by the sequencer")
            .leaf();
        let offset = base + self.frames.len() as u64;
        segment::encode_frame(&mut self.frames, bytes);
        let end = self.frames.len();
        self.payloads.push((txid, end - bytes.len()..end));
        self.tree.push(leaf, FrameRecord::new(offset, class, &leaf));
        self.last = Some(txid);
    }
}

fn encode(
    ring: &KeyRing,
    keys: &Sealing,
    txid: TxId,
    body: &TxBody,
    claims_digest: &Hash32,
) -> Option<Vec<u8>> {
    let evidence = ring.commit_secret().evidence(txid);
    // Only application entries seal (and draw a nonce), so encoding a rotation or a
    // signature cannot fail after the key has moved on.
    let mut sealer = match body {
        TxBody::Application(_) | TxBody::Kv(_) => Some(keys.sealer().ok()?),
        TxBody::Governance(_) | TxBody::Signature(_) => None,
    };
    let sealer: &mut dyn Sealer = match &mut sealer {
        Some(sealer) => sealer,
        None => &mut NothingToSeal,
    };
    Some(entry::encode(
        txid,
        body,
        &evidence.digest(),
        claims_digest,
        sealer,
    ))
}

/// The governance transaction recording a new data key, to be sequenced at `seqno` before
/// `sub`, when `sub` seals and its seal would pass the current key's budget (FORMAT.md §5.1);
/// `keys` then seals from `seqno + 1` with the new key. An error (no new secret could be drawn)
/// means `sub` must not be sealed under the spent key.
fn rotation_before(
    keys: &mut Sealing,
    seqno: u64,
    sub: &Submission,
) -> Result<Option<Submission>, KeyError> {
    if !matches!(sub.body, TxBody::Application(_) | TxBody::Kv(_)) || !keys.rotation_due(seqno) {
        return Ok(None);
    }
    let write = keys.rotate(seqno)?;
    Ok(Some(Submission {
        body: TxBody::Governance(vec![write]),
        claims_digest: Hash32::ZERO,
        // Nobody waits for it: it commits with the entries around it.
        done: Box::new(|_| {}),
        submitted: sub.submitted,
    }))
}

/// Checks a primary's encoded transaction `bytes` for `txid` against this node's state after
/// the transactions of `out` so far, and returns its body.
fn check_encoded(
    txid: TxId,
    bytes: &[u8],
    ring: &KeyRing,
    out: &Sequenced,
    service: &ServiceSigner,
) -> Result<TxBody, FollowerRefusal> {
    let malformed = |reason: String| FollowerRefusal::Malformed { txid, reason };
    if bytes.is_empty() || bytes.len() > segment::MAX_PAYLOAD_LEN as usize {
        return Err(malformed(format!(
            "{} bytes does not fit a frame (1 to {} bytes)",
            bytes.len(),
            segment::MAX_PAYLOAD_LEN
        )));
    }
    let parsed = EntryView::parse(bytes, txid.seqno()).map_err(|e| malformed(e.to_string()))?;
    if parsed.txid != txid {
        return Err(malformed(format!("the entry names txid {}", parsed.txid)));
    }
    let evidence = ring.commit_secret().evidence(txid);
    if evidence.digest() != parsed.commit_evidence_digest {
        return Err(malformed(
            "its commit evidence was not made with this ledger's secret".into(),
        ));
    }
    ring.observe(txid, &parsed)
        .map_err(|e| malformed(e.to_string()))?;
    let body = parsed
        .body(Some(&*ring.opener(txid.seqno())))
        .map_err(|e| malformed(e.to_string()))?;
    if let TxBody::Signature(record) = &body {
        let root = out.tree.root().expect("leaf 0 is always present");
        if record.root != root {
            return Err(FollowerRefusal::RootMismatch { txid });
        }
        // The COSE root signature is what COSE receipts are made of: a follower keeps one
        // only if the service key signed this root as this very transaction.
        if let Some(cose) = &record.cose_signature {
            let bad = |reason: String| FollowerRefusal::BadRootSignature { txid, reason };
            let claims =
                ledger_core::cose::verify_root_signature(cose, &root, &service.public_key())
                    .map_err(|e| bad(e.to_string()))?;
            if claims.txid != txid {
                return Err(bad(format!("it names transaction {}", claims.txid)));
            }
        }
    }
    Ok(body)
}

/// The sealer of a transaction without a private section (governance writes, signatures):
/// `entry::encode` calls a sealer for application entries only.
struct NothingToSeal;

impl Sealer for NothingToSeal {
    fn seal(&mut self, _aad: &[u8], _plaintext: &[u8]) -> Vec<u8> {
        unreachable!("entry::encode seals application entries only")
    }
}
