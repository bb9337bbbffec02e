//! Transactions as they are stored: the entry model and its deterministic, versioned encoding.
//!
//! A stored entry is what the write-set digest covers, byte for byte (CCF hashes the whole
//! serialised entry, ciphertext included). Two formats exist; [`encode`] writes format 2,
//! [`EntryView::parse`] reads both (`docs/FORMAT.md` is the normative description).
//!
//! Format 1 (ledgers written before format 2; all integers little-endian):
//!
//! ```text
//! 0   u8        format version (1)
//! 1   u8        kind: 1 application entry, 2 governance write, 3 signature
//! 2   u64       view
//! 10  u64       seqno
//! 18  [32]      SHA256(commit evidence)
//! 50  [32]      claims digest (zeros when none)
//! 82  u32       P, length of the public section
//! 86  [P]       public section (kind-specific, plaintext)
//! ..  u32       Q, length of the private section
//! ..  [Q]       private section: sealed (AES-256-GCM nonce || ciphertext || tag), or empty
//! ```
//!
//! Everything up to and including the `Q` field is the associated data of a format-1 private
//! section, so the public part cannot be swapped under a ciphertext.
//!
//! Format 2 (compact; `varint` is unsigned LEB128 of a u64, at most 10 bytes, canonical):
//!
//! ```text
//! 0   u8        format version (2)
//! 1   u8        kind: 1 application entry, 2 governance write, 3 signature
//! 2   varint    view (>= 1)
//! ..  u8        flags: bit 0 = a claims digest follows; all other bits must be 0
//! ..  [32]      SHA256(commit evidence)
//! ..  [32]      claims digest, only when flag bit 0 is set (then never all zeros)
//! ..  varint    P, length of the public section
//! ..  [P]       public section (kind-specific, plaintext, encoded as in format 1)
//! ..  [rest]    private section: all remaining bytes, empty or sealed (nonce || ct || tag)
//! ```
//!
//! A format-2 entry does not store its seqno: the store knows it from where the entry sits and
//! passes it to [`EntryView::parse`]. The associated data of a format-2 private section is the
//! seqno (u64 little-endian) followed by every entry byte before the sealed bytes, so the
//! ciphertext stays bound to its seqno and to the public part.
//!
//! Application entries keep everything the user sent (collection id, tags, contents, claims
//! key) in the private section; governance writes and signatures are public so an auditor
//! without keys can follow them. The private plaintext of an application entry is, in format 1:
//!
//! ```text
//! u32-bytes collection id, u32 tag count, u32-bytes per tag, u32-bytes contents,
//! u8 0 | u8 1 [32] claims key, then optionally u8 1 [32] key digest u64 unix secs (idempotency)
//! ```
//!
//! and in format 2:
//!
//! ```text
//! u8            flags: bit 0 = collection is DEFAULT_COLLECTION and no collection field follows
//!                      bit 1 = claims key present, bit 2 = idempotency record present;
//!                      all other bits must be 0
//! varint-bytes  collection id (only when bit 0 is clear; then never DEFAULT_COLLECTION)
//! varint        tag count, then each tag as varint-bytes (varint length || UTF-8)
//! varint-bytes  contents (UTF-8)
//! [32]          claims key (bit 1)
//! [32] u64      idempotency key digest and unix secs, little-endian (bit 2)
//! ```
//!
//! Both encodings are canonical: the decoder refuses anything the encoder would not write.
//! Keys and nonces come from the caller through [`Sealer`]/[`Opener`]: this crate does no I/O
//! and draws no randomness.

use crate::evidence::LeafInputs;
use crate::hash::{Hash32, sha256};
use crate::txid::TxId;

/// The format [`encode`] writes.
pub const FORMAT_VERSION: u8 = 2;
/// The original format, still read; [`encode_v1`] writes it.
pub const FORMAT_VERSION_1: u8 = 1;
/// The collection ACL writes to when the caller names none.
pub const DEFAULT_COLLECTION: &str = "subledger:0";
/// Fixed-size part of a format-1 entry before the public section.
pub const HEADER_LEN: usize = 86;

/// Format-2 entry flag: a claims digest follows the commit evidence digest.
const ENTRY_HAS_CLAIMS_DIGEST: u8 = 1;
/// Format-2 application plaintext flag: the collection is [`DEFAULT_COLLECTION`].
const APP_DEFAULT_COLLECTION: u8 = 1;
/// Format-2 application plaintext flag: a claims key is present.
const APP_CLAIMS_KEY: u8 = 2;
/// Format-2 application plaintext flag: an idempotency record is present.
const APP_IDEMPOTENCY: u8 = 4;
/// Format-2 application plaintext flag: key-value writes of the transaction's hooks follow.
const APP_KV_WRITES: u8 = 8;
/// Internal tables written by governance transactions. Public, so audits can follow them.
pub mod tables {
    /// Key `identity`: the service certificate (PEM) the ledger was created with.
    pub const SERVICE: &str = "public:cledger.service";
    /// Key: node id (hex); value: the node certificate (PEM) whose key signs roots.
    pub const NODES: &str = "public:cledger.nodes";
    /// Key: user id; value: JSON describing the user's roles.
    pub const USERS: &str = "public:cledger.users";
    /// Key: role name; value: JSON list of allowed actions.
    pub const ROLES: &str = "public:cledger.roles";
    /// Key: setting name; value: JSON.
    pub const CONFIG: &str = "public:cledger.config";
    /// Key: user-defined function id; value: its JavaScript source (UTF-8).
    pub const FUNCTIONS: &str = "public:cledger.functions";
    /// Key `bundle`: the deployed user-defined endpoints (JSON, ACL's bundle shape); key
    /// `runtime_options`: the JavaScript runtime options (JSON, CCF's names).
    pub const PROGRAMS: &str = "public:cledger.programs";
    /// Key: data key version (decimal, from 1); value: the new ledger secret, sealed under the
    /// previous version's key. Written by the store's writer only, never by clients.
    pub const LEDGER_SECRETS: &str = "public:cledger.ledger_secrets";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TxKind {
    Application = 1,
    Governance = 2,
    Signature = 3,
    /// Writes of a user-defined function or endpoint to application tables, without a ledger
    /// entry (format 2 only).
    Kv = 4,
}

impl TxKind {
    fn from_byte(b: u8) -> Option<TxKind> {
        match b {
            1 => Some(TxKind::Application),
            2 => Some(TxKind::Governance),
            3 => Some(TxKind::Signature),
            4 => Some(TxKind::Kv),
            _ => None,
        }
    }
}

/// A user's ledger entry, in plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationEntry {
    pub collection_id: String,
    pub contents: String,
    pub tags: Vec<String>,
    /// Secret key of the `LedgerEntryV1` application claim, when the entry was written with claims.
    pub claims_key: Option<[u8; 32]>,
    /// The idempotency key the write was made with, if any.
    pub idempotency: Option<IdempotencyRecord>,
    /// What the write's hooks (user-defined functions run before and after it) wrote to
    /// application tables, in the same transaction; sorted by (table, key), each key once.
    pub kv_writes: Vec<KvWrite>,
}

/// How an idempotent write is recognised when it is retried: a digest of the caller and the
/// key it sent (never the raw key), and when the write was made, for the retention window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key_digest: Hash32,
    /// Seconds since the Unix epoch.
    pub unix_secs: u64,
}

/// One write to an internal table; `value: None` removes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableWrite {
    pub table: String,
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// One write to an application key-value table (CCF's `ccf.kv[table]`), made by JavaScript.
/// Keys and values are bytes, as in CCF; `value: None` removes the key. A list of them is a
/// write set: [`KvWrite::is_canonical`] holds for every list that is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    pub table: String,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl KvWrite {
    /// Whether `writes` is in the one order the encoding allows: strictly ascending by
    /// (table, key) bytes, so each key appears once and equal write sets encode equally.
    pub fn is_canonical(writes: &[KvWrite]) -> bool {
        writes.windows(2).all(|w| {
            (w[0].table.as_bytes(), w[0].key.as_slice())
                < (w[1].table.as_bytes(), w[1].key.as_slice())
        })
    }
}

/// A signature transaction at seqno `s` signs the root of the tree of leaves `0..s`
/// (every transaction before it), as CCF's signature transactions do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRecord {
    pub node_id: Hash32,
    pub root: Hash32,
    /// DER ECDSA signature over `root` used as a prehashed digest.
    pub signature: Vec<u8>,
    /// The service key's COSE root signature over `root` ([`crate::cose`]), from which COSE
    /// receipts are made. Absent only in signatures written before cledger signed with COSE.
    pub cose_signature: Option<Vec<u8>>,
}

/// What a transaction writes, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxBody {
    Application(ApplicationEntry),
    Governance(Vec<TableWrite>),
    Signature(SignatureRecord),
    /// Application-table writes without a ledger entry; never empty, canonical order.
    Kv(Vec<KvWrite>),
}

impl TxBody {
    pub fn kind(&self) -> TxKind {
        match self {
            TxBody::Application(_) => TxKind::Application,
            TxBody::Governance(_) => TxKind::Governance,
            TxBody::Signature(_) => TxKind::Signature,
            TxBody::Kv(_) => TxKind::Kv,
        }
    }
}

/// Encrypts a private section: given the associated data and plaintext, returns the sealed bytes.
pub trait Sealer {
    fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Vec<u8>;
}

/// Decrypts a private section sealed by the matching [`Sealer`].
pub trait Opener {
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("entry is truncated: needs {needed} bytes at offset {offset}, has {len}")]
    Truncated {
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("unknown entry format version {0}")]
    UnknownVersion(u8),
    #[error("unknown transaction kind {0}")]
    UnknownKind(u8),
    #[error("entry has {0} bytes after its private section")]
    TrailingBytes(usize),
    #[error("invalid transaction id in entry (view and seqno must be >= 1)")]
    InvalidTxId,
    #[error("text field is not UTF-8")]
    NotUtf8,
    #[error("{0} entries carry no private section, but this one has one")]
    UnexpectedPrivate(&'static str),
    #[error("the private section could not be decrypted (wrong ledger secret or altered entry)")]
    Decrypt,
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("entry says seqno {stored}, but it is stored at seqno {expected}")]
    SeqnoMismatch { stored: u64, expected: u64 },
}

/// Serialises a transaction in format 2 ([`FORMAT_VERSION`]), the format every new entry is
/// written in. The seqno is not stored, only bound into the associated data of the private
/// section. `sealer` is called once for application entries.
pub fn encode(
    txid: TxId,
    body: &TxBody,
    commit_evidence_digest: &Hash32,
    claims_digest: &Hash32,
    sealer: &mut dyn Sealer,
) -> Vec<u8> {
    let has_claims = *claims_digest != Hash32::ZERO;
    let public = public_section(body);
    let mut out = Vec::with_capacity(2 + 10 + 1 + 64 + 10 + public.len() + 256);
    out.push(FORMAT_VERSION);
    out.push(body.kind() as u8);
    put_varint(&mut out, txid.view());
    out.push(if has_claims {
        ENTRY_HAS_CLAIMS_DIGEST
    } else {
        0
    });
    out.extend_from_slice(&commit_evidence_digest.0);
    if has_claims {
        out.extend_from_slice(&claims_digest.0);
    }
    put_varint(&mut out, public.len() as u64);
    out.extend_from_slice(&public);
    let plaintext = match body {
        TxBody::Application(e) => Some(application_plaintext_v2(e)),
        TxBody::Kv(writes) => Some(kv_writes_plaintext(writes)),
        TxBody::Governance(_) | TxBody::Signature(_) => None,
    };
    if let Some(plaintext) = plaintext {
        let aad = aad_v2(txid.seqno(), &out);
        let sealed = sealer.seal(&aad, &plaintext);
        assert_eq!(
            sealed.len(),
            plaintext.len() + SEAL_OVERHEAD,
            "a Sealer must add exactly SEAL_OVERHEAD bytes"
        );
        out.extend_from_slice(&sealed);
    }
    out
}

/// Serialises a transaction in format 1 ([`FORMAT_VERSION_1`]), byte for byte as ledgers
/// written before format 2 hold it. Kept for tests and fixtures of older ledgers; new entries
/// are written with [`encode`]. `sealer` is called once for application entries.
pub fn encode_v1(
    txid: TxId,
    body: &TxBody,
    commit_evidence_digest: &Hash32,
    claims_digest: &Hash32,
    sealer: &mut dyn Sealer,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 256);
    out.push(FORMAT_VERSION_1);
    out.push(body.kind() as u8);
    out.extend_from_slice(&txid.view().to_le_bytes());
    out.extend_from_slice(&txid.seqno().to_le_bytes());
    out.extend_from_slice(&commit_evidence_digest.0);
    out.extend_from_slice(&claims_digest.0);
    put_bytes(&mut out, &public_section(body));
    let private = match body {
        TxBody::Application(e) => {
            assert!(
                e.kv_writes.is_empty(),
                "format 1 cannot hold key-value writes"
            );
            application_plaintext_v1(e)
        }
        TxBody::Kv(_) => panic!("format 1 has no key-value transactions"),
        _ => Vec::new(),
    };
    if private.is_empty() {
        put_u32(&mut out, 0);
    } else {
        // The AAD is everything before the sealed bytes, including their length field.
        let sealed_len = private.len() + SEAL_OVERHEAD;
        put_u32(&mut out, sealed_len as u32);
        let sealed = sealer.seal(&out, &private);
        assert_eq!(
            sealed.len(),
            sealed_len,
            "a Sealer must add exactly SEAL_OVERHEAD bytes"
        );
        out.extend_from_slice(&sealed);
    }
    out
}

/// The view of a stored entry of either format, reading only its first bytes (format 1: bytes
/// 2..10; format 2: the varint at byte 2). Checks the version, kind and view as
/// [`EntryView::parse`] does, nothing after the view.
pub fn peek_view(bytes: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u8()?;
    if version != FORMAT_VERSION_1 && version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let kind_byte = r.u8()?;
    TxKind::from_byte(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    let view = if version == FORMAT_VERSION_1 {
        r.u64()?
    } else {
        r.varint()?
    };
    if view == 0 {
        return Err(DecodeError::InvalidTxId);
    }
    Ok(view)
}

/// Bytes a [`Sealer`] adds to a plaintext: a 12-byte nonce and a 16-byte tag (AES-GCM).
pub const SEAL_OVERHEAD: usize = 12 + 16;

/// The largest stored entry, in bytes, of either format: the most a segment frame's payload
/// holds (`docs/FORMAT.md` §2.2), and what the store's scanner refuses beyond. Writers must not
/// encode more; every `u32` length field of the public section (§3.2, §3.3) is bounded by it.
pub const MAX_ENTRY_BYTES: u64 = 64 << 20;

/// The length of a varint at its largest (a `u64` in LEB128 takes at most ten bytes).
pub const MAX_VARINT_LEN: u64 = 10;

/// The exact length of [`encode`]`(txid, body, _, claims_digest, _)` for a transaction of `view`,
/// where `has_claims_digest` is `claims_digest != Hash32::ZERO`. Computed from the lengths of the
/// body's fields, without encoding or sealing anything, in `u64` so that no size overflows.
pub fn encoded_len(body: &TxBody, view: u64, has_claims_digest: bool) -> u64 {
    let public = public_section_len(body);
    let header = 2 + varint_len(view) + 1 + 32 + if has_claims_digest { 32 } else { 0 };
    let private = match body {
        TxBody::Application(e) => SEAL_OVERHEAD as u64 + application_plaintext_v2_len(e),
        TxBody::Kv(writes) => SEAL_OVERHEAD as u64 + kv_writes_len(writes),
        TxBody::Governance(_) | TxBody::Signature(_) => 0,
    };
    header
        .saturating_add(varint_len(public))
        .saturating_add(public)
        .saturating_add(private)
}

/// The longest [`encode`] can make `body` at any view: [`encoded_len`] with a ten-byte view
/// varint. A request within a limit by this measure stays within it whatever view it is
/// sequenced in.
pub fn max_encoded_len(body: &TxBody, has_claims_digest: bool) -> u64 {
    encoded_len(body, u64::MAX, has_claims_digest)
}

/// The number of bytes [`put_varint`] writes for `v`.
fn varint_len(v: u64) -> u64 {
    (u64::from(64 - v.leading_zeros()).max(1)).div_ceil(7)
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn varint_bytes_len(n: usize) -> u64 {
    let n = len64(n);
    varint_len(n).saturating_add(n)
}

/// The length of [`public_section`]`(body)`.
fn public_section_len(body: &TxBody) -> u64 {
    let lp = |n: usize| 4u64.saturating_add(len64(n));
    match body {
        TxBody::Application(_) | TxBody::Kv(_) => 0,
        TxBody::Governance(writes) => writes.iter().fold(4u64, |total, w| {
            total
                .saturating_add(lp(w.table.len()))
                .saturating_add(lp(w.key.len()))
                .saturating_add(1)
                .saturating_add(w.value.as_ref().map_or(0, |v| lp(v.len())))
        }),
        TxBody::Signature(sig) => 64u64
            .saturating_add(lp(sig.signature.len()))
            .saturating_add(sig.cose_signature.as_ref().map_or(0, |c| lp(c.len()))),
    }
}

/// The length of [`application_plaintext_v2`]`(e)`.
fn application_plaintext_v2_len(e: &ApplicationEntry) -> u64 {
    let collection = if e.collection_id == DEFAULT_COLLECTION {
        0
    } else {
        varint_bytes_len(e.collection_id.len())
    };
    let tags = e
        .tags
        .iter()
        .fold(varint_len(len64(e.tags.len())), |total, t| {
            total.saturating_add(varint_bytes_len(t.len()))
        });
    1u64.saturating_add(collection)
        .saturating_add(tags)
        .saturating_add(varint_bytes_len(e.contents.len()))
        .saturating_add(if e.claims_key.is_some() { 32 } else { 0 })
        .saturating_add(if e.idempotency.is_some() { 32 + 8 } else { 0 })
        .saturating_add(if e.kv_writes.is_empty() {
            0
        } else {
            kv_writes_len(&e.kv_writes)
        })
}

/// The length of [`kv_writes_plaintext`]`(writes)`.
fn kv_writes_len(writes: &[KvWrite]) -> u64 {
    writes
        .iter()
        .fold(varint_len(len64(writes.len())), |total, w| {
            total
                .saturating_add(varint_bytes_len(w.table.len()))
                .saturating_add(varint_bytes_len(w.key.len()))
                .saturating_add(1)
                .saturating_add(w.value.as_ref().map_or(0, |v| varint_bytes_len(v.len())))
        })
}

/// A write set: varint count, then per write varint-bytes table, varint-bytes key, and
/// `u8 0` (removed) or `u8 1` varint-bytes value.
fn kv_writes_plaintext(writes: &[KvWrite]) -> Vec<u8> {
    debug_assert!(
        KvWrite::is_canonical(writes),
        "write sets are encoded sorted"
    );
    let mut out = Vec::new();
    put_kv_writes(&mut out, writes);
    out
}

fn put_kv_writes(out: &mut Vec<u8>, writes: &[KvWrite]) {
    put_varint(out, writes.len() as u64);
    for w in writes {
        put_varint_bytes(out, w.table.as_bytes());
        put_varint_bytes(out, &w.key);
        match &w.value {
            Some(v) => {
                out.push(1);
                put_varint_bytes(out, v);
            }
            None => out.push(0),
        }
    }
}

/// The kind-specific public section, the same in both formats (empty for application entries).
fn public_section(body: &TxBody) -> Vec<u8> {
    let mut public = Vec::new();
    match body {
        TxBody::Application(_) | TxBody::Kv(_) => {}
        TxBody::Governance(writes) => {
            put_u32(&mut public, writes.len() as u32);
            for w in writes {
                put_bytes(&mut public, w.table.as_bytes());
                put_bytes(&mut public, w.key.as_bytes());
                match &w.value {
                    Some(v) => {
                        public.push(1);
                        put_bytes(&mut public, v);
                    }
                    None => public.push(0),
                }
            }
        }
        TxBody::Signature(sig) => {
            public.extend_from_slice(&sig.node_id.0);
            public.extend_from_slice(&sig.root.0);
            put_bytes(&mut public, &sig.signature);
            // Optional trailing field: signatures without it encode exactly as before.
            if let Some(cose) = &sig.cose_signature {
                put_bytes(&mut public, cose);
            }
        }
    }
    public
}

fn application_plaintext_v1(e: &ApplicationEntry) -> Vec<u8> {
    let mut private = Vec::new();
    put_bytes(&mut private, e.collection_id.as_bytes());
    put_u32(&mut private, e.tags.len() as u32);
    for tag in &e.tags {
        put_bytes(&mut private, tag.as_bytes());
    }
    put_bytes(&mut private, e.contents.as_bytes());
    match &e.claims_key {
        Some(key) => {
            private.push(1);
            private.extend_from_slice(key);
        }
        None => private.push(0),
    }
    // Optional trailing field: entries without a key encode exactly as before.
    if let Some(record) = &e.idempotency {
        private.push(1);
        private.extend_from_slice(&record.key_digest.0);
        private.extend_from_slice(&record.unix_secs.to_le_bytes());
    }
    private
}

fn application_plaintext_v2(e: &ApplicationEntry) -> Vec<u8> {
    let default_collection = e.collection_id == DEFAULT_COLLECTION;
    let mut flags = 0;
    if default_collection {
        flags |= APP_DEFAULT_COLLECTION;
    }
    if e.claims_key.is_some() {
        flags |= APP_CLAIMS_KEY;
    }
    if e.idempotency.is_some() {
        flags |= APP_IDEMPOTENCY;
    }
    if !e.kv_writes.is_empty() {
        flags |= APP_KV_WRITES;
    }
    let mut private = Vec::with_capacity(e.contents.len() + 16);
    private.push(flags);
    if !default_collection {
        put_varint_bytes(&mut private, e.collection_id.as_bytes());
    }
    put_varint(&mut private, e.tags.len() as u64);
    for tag in &e.tags {
        put_varint_bytes(&mut private, tag.as_bytes());
    }
    put_varint_bytes(&mut private, e.contents.as_bytes());
    if let Some(key) = &e.claims_key {
        private.extend_from_slice(key);
    }
    if let Some(record) = &e.idempotency {
        private.extend_from_slice(&record.key_digest.0);
        private.extend_from_slice(&record.unix_secs.to_le_bytes());
    }
    if !e.kv_writes.is_empty() {
        debug_assert!(
            KvWrite::is_canonical(&e.kv_writes),
            "write sets are encoded sorted"
        );
        put_kv_writes(&mut private, &e.kv_writes);
    }
    private
}

/// Associated data of a format-2 private section: the seqno, then the entry bytes before it.
fn aad_v2(seqno: u64, before_sealed: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(8 + before_sealed.len());
    aad.extend_from_slice(&seqno.to_le_bytes());
    aad.extend_from_slice(before_sealed);
    aad
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// Unsigned LEB128: 7 bits per byte, least significant first, high bit set on all but the last.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A parsed stored entry, borrowing the bytes. Parsing needs no keys.
#[derive(Debug, Clone, Copy)]
pub struct EntryView<'a> {
    bytes: &'a [u8],
    version: u8,
    pub kind: TxKind,
    pub txid: TxId,
    pub commit_evidence_digest: Hash32,
    /// [`Hash32::ZERO`] when the transaction has no claims.
    pub claims_digest: Hash32,
    public: &'a [u8],
    /// Offset of the sealed private bytes (format 1: after the Q field).
    private_start: usize,
}

impl<'a> EntryView<'a> {
    /// Parses an entry of either format stored at `seqno`. A format-2 entry takes its seqno
    /// from the caller; a format-1 entry stores one, which must equal `seqno`
    /// ([`DecodeError::SeqnoMismatch`] otherwise).
    pub fn parse(bytes: &'a [u8], seqno: u64) -> Result<EntryView<'a>, DecodeError> {
        match bytes.first() {
            Some(&FORMAT_VERSION_1) => Self::parse_v1(bytes, seqno),
            Some(&FORMAT_VERSION) => Self::parse_v2(bytes, seqno),
            Some(&version) => Err(DecodeError::UnknownVersion(version)),
            None => Err(DecodeError::Truncated {
                offset: 0,
                needed: 1,
                len: 0,
            }),
        }
    }

    fn parse_v1(bytes: &'a [u8], expected_seqno: u64) -> Result<EntryView<'a>, DecodeError> {
        let mut r = Reader { bytes, pos: 1 };
        let kind = r.kind()?;
        if kind == TxKind::Kv {
            return Err(DecodeError::UnknownKind(TxKind::Kv as u8));
        }
        let view = r.u64()?;
        let seqno = r.u64()?;
        let txid = TxId::new(view, seqno).ok_or(DecodeError::InvalidTxId)?;
        if seqno != expected_seqno {
            return Err(DecodeError::SeqnoMismatch {
                stored: seqno,
                expected: expected_seqno,
            });
        }
        let commit_evidence_digest = r.hash()?;
        let claims_digest = r.hash()?;
        let public = r.bytes()?;
        let private = r.bytes()?;
        if r.pos != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - r.pos));
        }
        check_sections(kind, public, private.len())?;
        Ok(EntryView {
            bytes,
            version: FORMAT_VERSION_1,
            kind,
            txid,
            commit_evidence_digest,
            claims_digest,
            public,
            private_start: bytes.len() - private.len(),
        })
    }

    fn parse_v2(bytes: &'a [u8], seqno: u64) -> Result<EntryView<'a>, DecodeError> {
        let mut r = Reader { bytes, pos: 1 };
        let kind = r.kind()?;
        let view = r.varint()?;
        let txid = TxId::new(view, seqno).ok_or(DecodeError::InvalidTxId)?;
        let flags = r.u8()?;
        if flags & !ENTRY_HAS_CLAIMS_DIGEST != 0 {
            return Err(DecodeError::Malformed("entry flags (reserved bits set)"));
        }
        let commit_evidence_digest = r.hash()?;
        let claims_digest = if flags & ENTRY_HAS_CLAIMS_DIGEST != 0 {
            let digest = r.hash()?;
            // No claims is written as a clear flag, so a present digest is never all zeros.
            if digest == Hash32::ZERO {
                return Err(DecodeError::Malformed(
                    "claims digest (present but all zeros)",
                ));
            }
            digest
        } else {
            Hash32::ZERO
        };
        let public = r.varint_bytes()?;
        // The private section is the rest of the entry.
        check_sections(kind, public, bytes.len() - r.pos)?;
        Ok(EntryView {
            bytes,
            version: FORMAT_VERSION,
            kind,
            txid,
            commit_evidence_digest,
            claims_digest,
            public,
            private_start: r.pos,
        })
    }

    /// The format the entry is stored in: [`FORMAT_VERSION_1`] or [`FORMAT_VERSION`].
    pub fn format_version(&self) -> u8 {
        self.version
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// SHA-256 over the whole stored entry, ciphertext included.
    pub fn write_set_digest(&self) -> Hash32 {
        sha256(self.bytes)
    }

    pub fn leaf_inputs(&self) -> LeafInputs {
        LeafInputs {
            write_set_digest: self.write_set_digest(),
            commit_evidence_digest: self.commit_evidence_digest,
            claims_digest: self.claims_digest,
        }
    }

    /// The Merkle leaf of this transaction.
    pub fn leaf(&self) -> Hash32 {
        self.leaf_inputs().leaf()
    }

    /// Governance writes; `Malformed` for other kinds.
    pub fn governance_writes(&self) -> Result<Vec<TableWrite>, DecodeError> {
        if self.kind != TxKind::Governance {
            return Err(DecodeError::Malformed("governance write (wrong kind)"));
        }
        let mut r = Reader {
            bytes: self.public,
            pos: 0,
        };
        let count = r.u32()? as usize;
        let mut writes = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let table = r.string()?;
            let key = r.string()?;
            let value = match r.u8()? {
                0 => None,
                1 => Some(r.bytes()?.to_vec()),
                _ => return Err(DecodeError::Malformed("governance write operation")),
            };
            writes.push(TableWrite { table, key, value });
        }
        r.finish()?;
        Ok(writes)
    }

    /// The signature record; `Malformed` for other kinds.
    pub fn signature(&self) -> Result<SignatureRecord, DecodeError> {
        if self.kind != TxKind::Signature {
            return Err(DecodeError::Malformed("signature (wrong kind)"));
        }
        let mut r = Reader {
            bytes: self.public,
            pos: 0,
        };
        let node_id = r.hash()?;
        let root = r.hash()?;
        let signature = r.bytes()?.to_vec();
        let cose_signature = if r.pos < r.bytes.len() {
            Some(r.bytes()?.to_vec())
        } else {
            None
        };
        r.finish()?;
        Ok(SignatureRecord {
            node_id,
            root,
            signature,
            cose_signature,
        })
    }

    /// Decrypts and decodes an application entry.
    pub fn application(&self, opener: &dyn Opener) -> Result<ApplicationEntry, DecodeError> {
        if self.kind != TxKind::Application {
            return Err(DecodeError::Malformed("application entry (wrong kind)"));
        }
        let plain = self.open_private(opener)?;
        if self.version == FORMAT_VERSION_1 {
            decode_application_v1(&plain)
        } else {
            decode_application_v2(&plain)
        }
    }

    /// Decrypts and decodes the write set of a key-value transaction.
    pub fn kv_writes(&self, opener: &dyn Opener) -> Result<Vec<KvWrite>, DecodeError> {
        if self.kind != TxKind::Kv {
            return Err(DecodeError::Malformed("key-value transaction (wrong kind)"));
        }
        let plain = self.open_private(opener)?;
        let mut r = Reader {
            bytes: &plain,
            pos: 0,
        };
        let writes = decode_kv_writes(&mut r)?;
        r.finish()?;
        Ok(writes)
    }

    fn open_private(&self, opener: &dyn Opener) -> Result<Vec<u8>, DecodeError> {
        let before = &self.bytes[..self.private_start];
        let sealed = &self.bytes[self.private_start..];
        let plain = if self.version == FORMAT_VERSION_1 {
            opener.open(before, sealed)
        } else {
            opener.open(&aad_v2(self.txid.seqno(), before), sealed)
        };
        plain.ok_or(DecodeError::Decrypt)
    }

    /// Decodes the body. Application entries need an opener; pass `None` to get `Decrypt`.
    pub fn body(&self, opener: Option<&dyn Opener>) -> Result<TxBody, DecodeError> {
        match self.kind {
            TxKind::Application => match opener {
                Some(o) => self.application(o).map(TxBody::Application),
                None => Err(DecodeError::Decrypt),
            },
            TxKind::Governance => self.governance_writes().map(TxBody::Governance),
            TxKind::Signature => self.signature().map(TxBody::Signature),
            TxKind::Kv => match opener {
                Some(o) => self.kv_writes(o).map(TxBody::Kv),
                None => Err(DecodeError::Decrypt),
            },
        }
    }
}

/// The section rules shared by both formats: governance writes and signatures have no private
/// section; application entries have a sealed private section and nothing public.
fn check_sections(kind: TxKind, public: &[u8], private_len: usize) -> Result<(), DecodeError> {
    let sealed = matches!(kind, TxKind::Application | TxKind::Kv);
    if !sealed && private_len != 0 {
        return Err(DecodeError::UnexpectedPrivate(kind_name(kind)));
    }
    // Everything a user writes is private; a public part of an application entry is not
    // something any writer produces, so it is refused rather than carried along unseen.
    if sealed && !public.is_empty() {
        return Err(DecodeError::Malformed(match kind {
            TxKind::Kv => "key-value transaction (public section must be empty)",
            _ => "application entry (public section must be empty)",
        }));
    }
    if sealed && private_len < SEAL_OVERHEAD {
        return Err(DecodeError::Malformed(match kind {
            TxKind::Kv => "key-value transaction (private section too short)",
            _ => "application entry (private section too short)",
        }));
    }
    Ok(())
}

/// A write set (see [`kv_writes_plaintext`]): at least one write, strictly ascending by
/// (table, key), each operation byte 0 or 1.
fn decode_kv_writes(r: &mut Reader<'_>) -> Result<Vec<KvWrite>, DecodeError> {
    let count = r.varint()?;
    if count == 0 {
        return Err(DecodeError::Malformed("write set (empty)"));
    }
    // Every write takes at least three bytes, so the count is bounded by the input.
    let mut writes: Vec<KvWrite> = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let table = r.varint_string()?;
        let key = r.varint_bytes()?.to_vec();
        let value = match r.u8()? {
            0 => None,
            1 => Some(r.varint_bytes()?.to_vec()),
            _ => return Err(DecodeError::Malformed("write set operation")),
        };
        if let Some(last) = writes.last()
            && (last.table.as_bytes(), last.key.as_slice()) >= (table.as_bytes(), key.as_slice())
        {
            return Err(DecodeError::Malformed(
                "write set (not in ascending key order)",
            ));
        }
        writes.push(KvWrite { table, key, value });
    }
    Ok(writes)
}

fn decode_application_v1(plain: &[u8]) -> Result<ApplicationEntry, DecodeError> {
    let mut r = Reader {
        bytes: plain,
        pos: 0,
    };
    let collection_id = r.string()?;
    let tag_count = r.u32()? as usize;
    let mut tags = Vec::with_capacity(tag_count.min(1024));
    for _ in 0..tag_count {
        tags.push(r.string()?);
    }
    let contents = r.string()?;
    let claims_key = match r.u8()? {
        0 => None,
        1 => Some(r.hash()?.0),
        _ => return Err(DecodeError::Malformed("claims flag")),
    };
    let idempotency = if r.pos == r.bytes.len() {
        None
    } else {
        match r.u8()? {
            1 => Some(IdempotencyRecord {
                key_digest: r.hash()?,
                unix_secs: r.u64()?,
            }),
            _ => return Err(DecodeError::Malformed("idempotency flag")),
        }
    };
    r.finish()?;
    Ok(ApplicationEntry {
        collection_id,
        contents,
        tags,
        claims_key,
        idempotency,
        kv_writes: Vec::new(),
    })
}

fn decode_application_v2(plain: &[u8]) -> Result<ApplicationEntry, DecodeError> {
    let mut r = Reader {
        bytes: plain,
        pos: 0,
    };
    let flags = r.u8()?;
    if flags & !(APP_DEFAULT_COLLECTION | APP_CLAIMS_KEY | APP_IDEMPOTENCY | APP_KV_WRITES) != 0 {
        return Err(DecodeError::Malformed(
            "application entry flags (reserved bits set)",
        ));
    }
    let collection_id = if flags & APP_DEFAULT_COLLECTION != 0 {
        DEFAULT_COLLECTION.to_owned()
    } else {
        let id = r.varint_string()?;
        // The default collection is written as a flag; spelling it out is not canonical.
        if id == DEFAULT_COLLECTION {
            return Err(DecodeError::Malformed(
                "collection id (the default collection is written as a flag)",
            ));
        }
        id
    };
    let tag_count = r.varint()?;
    // Every tag takes at least one byte, so the count is bounded by the input.
    let mut tags = Vec::with_capacity(tag_count.min(1024) as usize);
    for _ in 0..tag_count {
        tags.push(r.varint_string()?);
    }
    let contents = r.varint_string()?;
    let claims_key = if flags & APP_CLAIMS_KEY != 0 {
        Some(r.hash()?.0)
    } else {
        None
    };
    let idempotency = if flags & APP_IDEMPOTENCY != 0 {
        Some(IdempotencyRecord {
            key_digest: r.hash()?,
            unix_secs: r.u64()?,
        })
    } else {
        None
    };
    let kv_writes = if flags & APP_KV_WRITES != 0 {
        decode_kv_writes(&mut r)?
    } else {
        Vec::new()
    };
    r.finish()?;
    Ok(ApplicationEntry {
        collection_id,
        contents,
        tags,
        claims_key,
        idempotency,
        kv_writes,
    })
}

fn kind_name(kind: TxKind) -> &'static str {
    match kind {
        TxKind::Application => "application",
        TxKind::Governance => "governance",
        TxKind::Signature => "signature",
        TxKind::Kv => "key-value",
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(DecodeError::Truncated {
                offset: self.pos,
                needed: n,
                len: self.bytes.len(),
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn hash(&mut self) -> Result<Hash32, DecodeError> {
        Ok(Hash32(self.take(32)?.try_into().expect("32 bytes")))
    }
    fn kind(&mut self) -> Result<TxKind, DecodeError> {
        let b = self.u8()?;
        TxKind::from_byte(b).ok_or(DecodeError::UnknownKind(b))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::NotUtf8)
    }
    /// A canonical unsigned LEB128 u64: at most 10 bytes, no overflow, no redundant trailing
    /// zero group (so every value has exactly one encoding).
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            // The tenth byte carries bit 63 only, and must end the varint.
            if i == 9 && b > 1 {
                return Err(DecodeError::Malformed("varint"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(DecodeError::Malformed("varint"));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed("varint"))
    }
    fn varint_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        // A length beyond usize cannot fit in the input either.
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated {
            offset: self.pos,
            needed: usize::MAX,
            len: self.bytes.len(),
        })?;
        self.take(n)
    }
    fn varint_string(&mut self) -> Result<String, DecodeError> {
        let b = self.varint_bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::NotUtf8)
    }
    fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A toy sealer for tests: XOR with a key byte, 12-byte "nonce" and a 16-byte "tag" that
    /// is a hash of the AAD and ciphertext, so tampering with either is detected like AEAD.
    struct ToySealer(u8);

    impl ToySealer {
        fn tag(aad: &[u8], ct: &[u8]) -> [u8; 16] {
            let h = crate::hash::sha256_concat(&[aad, ct]);
            h.0[..16].try_into().unwrap()
        }
    }
    impl Sealer for ToySealer {
        fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
            let mut out = vec![self.0; 12];
            let ct: Vec<u8> = plaintext.iter().map(|b| b ^ self.0).collect();
            out.extend_from_slice(&ct);
            out.extend_from_slice(&Self::tag(aad, &ct));
            out
        }
    }
    impl Opener for ToySealer {
        fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
            let ct = sealed.get(12..sealed.len().checked_sub(16)?)?;
            (Self::tag(aad, ct) == sealed[sealed.len() - 16..])
                .then(|| ct.iter().map(|b| b ^ self.0).collect())
        }
    }

    fn txid(s: u64) -> TxId {
        TxId::new(2, s).unwrap()
    }

    fn app(contents: &str) -> TxBody {
        TxBody::Application(ApplicationEntry {
            collection_id: "my collection ü".into(),
            contents: contents.into(),
            tags: vec!["a".into(), "b".into()],
            claims_key: Some([9u8; 32]),
            idempotency: Some(IdempotencyRecord {
                key_digest: Hash32([4u8; 32]),
                unix_secs: 1_790_000_000,
            }),
            kv_writes: Vec::new(),
        })
    }

    fn plain_app(collection: &str, contents: &str) -> TxBody {
        TxBody::Application(ApplicationEntry {
            collection_id: collection.into(),
            contents: contents.into(),
            tags: Vec::new(),
            claims_key: None,
            idempotency: None,
            kv_writes: Vec::new(),
        })
    }

    fn governance() -> TxBody {
        TxBody::Governance(vec![
            TableWrite {
                table: tables::USERS.into(),
                key: "AB:CD".into(),
                value: Some(b"{}".to_vec()),
            },
            TableWrite {
                table: tables::USERS.into(),
                key: "EF".into(),
                value: None,
            },
        ])
    }

    fn signature() -> TxBody {
        TxBody::Signature(SignatureRecord {
            node_id: sha256(b"node"),
            root: sha256(b"root"),
            signature: vec![0x30, 1, 2, 3],
            cose_signature: Some(vec![0xd2, 0x84]),
        })
    }

    fn varint(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    fn read_varint(bytes: &[u8]) -> Result<u64, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let v = r.varint()?;
        r.finish()?;
        Ok(v)
    }

    /// A format-2 application entry (view 2, no claims digest) sealing an arbitrary plaintext.
    fn app_v2_with_plaintext(seqno: u64, plaintext: &[u8]) -> Vec<u8> {
        let mut bytes = vec![FORMAT_VERSION, TxKind::Application as u8, 2, 0];
        bytes.extend_from_slice(&sha256(b"ce").0);
        bytes.push(0); // P = 0
        let sealed = ToySealer(7).seal(&aad_v2(seqno, &bytes), plaintext);
        bytes.extend_from_slice(&sealed);
        bytes
    }

    fn decode_v2_plaintext(plaintext: &[u8]) -> Result<ApplicationEntry, DecodeError> {
        let bytes = app_v2_with_plaintext(3, plaintext);
        EntryView::parse(&bytes, 3)?.application(&ToySealer(7))
    }

    #[test]
    fn encoded_len_of_a_small_entry_and_of_huge_fields() {
        let body = plain_app(DEFAULT_COLLECTION, "abc");
        // 2 + 1 (view 1) + 1 + 32 of header, P = 0, 28 of seal, then the plaintext: flags,
        // tag count, contents length and 3 bytes of contents.
        assert_eq!(
            encoded_len(&body, 1, false),
            2 + 1 + 1 + 32 + 1 + 28 + 1 + 1 + 1 + 3
        );
        assert_eq!(
            encoded_len(&body, 1, true),
            encoded_len(&body, 1, false) + 32
        );
        assert_eq!(
            max_encoded_len(&body, false),
            encoded_len(&body, 1, false) + 9
        );
        // Sizes beyond what a test can allocate (a 5 GiB field, a usize::MAX one) are counted
        // without overflow: the limits check rejects them instead of panicking.
        assert_eq!(varint_bytes_len(5 << 30), 5 + (5 << 30));
        assert_eq!(varint_bytes_len(usize::MAX), u64::MAX);
    }

    #[test]
    fn varints_are_canonical_leb128() {
        for (v, len) in [
            (0u64, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (255, 2),
            (16_383, 2),
            (16_384, 3),
            (u32::MAX as u64, 5),
            (1 << 63, 10),
            (u64::MAX, 10),
        ] {
            let bytes = varint(v);
            assert_eq!(bytes.len(), len, "{v}");
            assert_eq!(read_varint(&bytes), Ok(v));
        }
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(
            varint(u64::MAX),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        let bad = DecodeError::Malformed("varint");
        // Overlong: a trailing zero group.
        assert_eq!(read_varint(&[0x80, 0x00]), Err(bad.clone()));
        assert_eq!(read_varint(&[0x81, 0x80, 0x00]), Err(bad.clone()));
        let mut max_overlong = vec![0x80; 9];
        max_overlong.push(0x00);
        assert_eq!(read_varint(&max_overlong), Err(bad.clone()));
        // Overflow: more than 64 bits, or an eleventh byte.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(read_varint(&over), Err(bad.clone()));
        let mut eleven = vec![0xff; 10];
        eleven.push(0x01);
        assert_eq!(read_varint(&eleven), Err(bad));
        // Truncated: continuation bit on the last byte.
        assert!(matches!(
            read_varint(&[0x80]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            read_varint(&[]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn round_trips_every_kind_v2() {
        let large = "x€".repeat(50_000);
        let bodies = [
            plain_app(DEFAULT_COLLECTION, "hello"),
            plain_app("other", "hello"),
            plain_app("", "collection id may be empty"),
            plain_app(DEFAULT_COLLECTION, ""),
            plain_app(DEFAULT_COLLECTION, &large),
            TxBody::Application(ApplicationEntry {
                collection_id: DEFAULT_COLLECTION.into(),
                contents: "tags only".into(),
                tags: vec!["t".into(), "".into(), "ü".repeat(100)],
                claims_key: None,
                idempotency: None,
                kv_writes: Vec::new(),
            }),
            TxBody::Application(ApplicationEntry {
                collection_id: DEFAULT_COLLECTION.into(),
                contents: "claims only".into(),
                tags: Vec::new(),
                claims_key: Some([1u8; 32]),
                idempotency: None,
                kv_writes: Vec::new(),
            }),
            TxBody::Application(ApplicationEntry {
                collection_id: "subledger:1".into(),
                contents: "idempotent".into(),
                tags: Vec::new(),
                claims_key: None,
                idempotency: Some(IdempotencyRecord {
                    key_digest: Hash32([8u8; 32]),
                    unix_secs: u64::MAX,
                }),
                kv_writes: Vec::new(),
            }),
            app("everything"),
            app(""),
            governance(),
            TxBody::Governance(Vec::new()),
            signature(),
        ];
        let mut sealer = ToySealer(0x5a);
        for (i, body) in bodies.iter().enumerate() {
            for (view, cd) in [
                (1, Hash32::ZERO),
                (2, sha256(&[i as u8])),
                (u64::MAX, sha256(b"claims")),
            ] {
                let seqno = 7 + i as u64;
                let id = TxId::new(view, seqno).unwrap();
                let ced = sha256(b"ce");
                let bytes = encode(id, body, &ced, &cd, &mut sealer);
                assert_eq!(bytes[0], FORMAT_VERSION);
                let view_ = EntryView::parse(&bytes, seqno).unwrap();
                assert_eq!(view_.format_version(), FORMAT_VERSION);
                assert_eq!(view_.kind, body.kind());
                assert_eq!(view_.txid, id);
                assert_eq!(view_.commit_evidence_digest, ced);
                assert_eq!(view_.claims_digest, cd);
                assert_eq!(view_.as_bytes(), &bytes[..]);
                assert_eq!(&view_.body(Some(&sealer)).unwrap(), body);
                assert_eq!(view_.write_set_digest(), sha256(&bytes));
                assert_eq!(
                    view_.leaf_inputs(),
                    LeafInputs {
                        write_set_digest: sha256(&bytes),
                        commit_evidence_digest: ced,
                        claims_digest: cd,
                    }
                );
                assert_eq!(view_.leaf(), view_.leaf_inputs().leaf());
                assert_eq!(peek_view(&bytes), Ok(view));
                // Deterministic: same inputs, same bytes.
                assert_eq!(bytes, encode(id, body, &ced, &cd, &mut ToySealer(0x5a)));
                // Smaller than format 1, always.
                let v1 = encode_v1(id, body, &ced, &cd, &mut ToySealer(0x5a));
                assert!(bytes.len() < v1.len(), "{body:?}");
            }
        }
    }

    #[test]
    fn round_trips_every_kind_v1() {
        let bodies = [app("hello"), governance(), signature()];
        let mut sealer = ToySealer(0x5a);
        for (i, body) in bodies.iter().enumerate() {
            let (ced, cd) = (sha256(b"ce"), sha256(&[i as u8]));
            let seqno = 7 + i as u64;
            let bytes = encode_v1(txid(seqno), body, &ced, &cd, &mut sealer);
            let view = EntryView::parse(&bytes, seqno).unwrap();
            assert_eq!(view.format_version(), FORMAT_VERSION_1);
            assert_eq!(view.kind, body.kind());
            assert_eq!(view.txid, txid(seqno));
            assert_eq!(view.commit_evidence_digest, ced);
            assert_eq!(view.claims_digest, cd);
            assert_eq!(&view.body(Some(&sealer)).unwrap(), body);
            assert_eq!(view.write_set_digest(), sha256(&bytes));
            assert_eq!(peek_view(&bytes), Ok(2));
            // Deterministic: same inputs, same bytes.
            assert_eq!(
                bytes,
                encode_v1(txid(seqno), body, &ced, &cd, &mut ToySealer(0x5a))
            );
        }
    }

    #[test]
    fn v1_layout_is_unchanged() {
        // A fixed format-1 application entry, pinned by its digest so old ledgers keep verifying.
        let bytes = encode_v1(
            txid(5),
            &plain_app(DEFAULT_COLLECTION, "x"),
            &Hash32::ZERO,
            &Hash32::ZERO,
            &mut ToySealer(1),
        );
        let mut expected = vec![1, 1];
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&5u64.to_le_bytes());
        expected.extend_from_slice(&[0; 64]);
        expected.extend_from_slice(&0u32.to_le_bytes());
        let mut plain = Vec::new();
        put_bytes(&mut plain, DEFAULT_COLLECTION.as_bytes());
        put_u32(&mut plain, 0);
        put_bytes(&mut plain, b"x");
        plain.push(0);
        put_u32(&mut expected, (plain.len() + SEAL_OVERHEAD) as u32);
        let sealed = ToySealer(1).seal(&expected, &plain);
        expected.extend_from_slice(&sealed);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn v1_seqno_must_match_the_position() {
        let bytes = encode_v1(
            txid(5),
            &governance(),
            &Hash32::ZERO,
            &Hash32::ZERO,
            &mut ToySealer(1),
        );
        assert!(EntryView::parse(&bytes, 5).is_ok());
        let err = EntryView::parse(&bytes, 6).unwrap_err();
        assert_eq!(
            err,
            DecodeError::SeqnoMismatch {
                stored: 5,
                expected: 6
            }
        );
        assert_eq!(
            err.to_string(),
            "entry says seqno 5, but it is stored at seqno 6"
        );
    }

    #[test]
    fn v2_size_of_a_small_application_entry() {
        let body = plain_app(DEFAULT_COLLECTION, &"c".repeat(256));
        let bytes = encode(
            txid(4711),
            &body,
            &sha256(b"ce"),
            &Hash32::ZERO,
            &mut ToySealer(1),
        );
        // version, kind, view, flags, commit evidence digest, P = 0, then the sealed plaintext:
        // flags, tag count, contents length (2 bytes for 256), contents.
        let expected = 1 + 1 + 1 + 1 + 32 + 1 + SEAL_OVERHEAD + (1 + 1 + 2) + 256;
        assert_eq!(expected, 325);
        assert_eq!(bytes.len(), 325);
        let v1 = encode_v1(
            txid(4711),
            &body,
            &sha256(b"ce"),
            &Hash32::ZERO,
            &mut ToySealer(1),
        );
        assert_eq!(v1.len(), 398);
    }

    #[test]
    fn v2_private_section_is_bound_to_seqno_and_header() {
        let mut sealer = ToySealer(1);
        let bytes = encode(
            txid(5),
            &app("x"),
            &Hash32::ZERO,
            &sha256(b"claims"),
            &mut sealer,
        );
        let view = EntryView::parse(&bytes, 5).unwrap();
        assert!(view.application(&sealer).is_ok());
        // The same bytes stored at another seqno parse, but do not decrypt.
        let moved = EntryView::parse(&bytes, 6).unwrap();
        assert_eq!(moved.txid, txid(6));
        assert_eq!(moved.application(&sealer), Err(DecodeError::Decrypt));
        assert_eq!(moved.body(None), Err(DecodeError::Decrypt));
        // Any header byte changed: parsing works, decryption must not.
        for i in [2, 5, 40, 67] {
            let mut changed = bytes.clone();
            changed[i] ^= 1;
            let view = EntryView::parse(&changed, 5).unwrap();
            assert_eq!(view.application(&sealer), Err(DecodeError::Decrypt), "{i}");
        }
    }

    #[test]
    fn v1_private_section_is_bound_to_the_header() {
        let mut sealer = ToySealer(1);
        let mut bytes = encode_v1(
            txid(5),
            &app("x"),
            &Hash32::ZERO,
            &Hash32::ZERO,
            &mut sealer,
        );
        // Change the seqno in the header: parsing (at that seqno) works, decryption must not.
        bytes[10] ^= 1;
        let view = EntryView::parse(&bytes, 4).unwrap();
        assert_eq!(view.application(&sealer), Err(DecodeError::Decrypt));
        assert_eq!(view.body(None), Err(DecodeError::Decrypt));
    }

    #[test]
    fn v1_rejects_malformed_entries() {
        let mut sealer = ToySealer(1);
        let bytes = encode_v1(
            txid(5),
            &app("x"),
            &Hash32::ZERO,
            &Hash32::ZERO,
            &mut sealer,
        );
        for cut in 0..bytes.len() {
            assert!(
                EntryView::parse(&bytes[..cut], 5).is_err(),
                "accepted a prefix of {cut} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            EntryView::parse(&longer, 5).unwrap_err(),
            DecodeError::TrailingBytes(1)
        );
        let mut v3 = bytes.clone();
        v3[0] = 3;
        assert_eq!(
            EntryView::parse(&v3, 5).unwrap_err(),
            DecodeError::UnknownVersion(3)
        );
        assert_eq!(peek_view(&v3), Err(DecodeError::UnknownVersion(3)));
        // An application entry with a public part (P = 1, one byte): refused.
        let mut public = bytes[..HEADER_LEN - 4].to_vec();
        public.extend_from_slice(&1u32.to_le_bytes());
        public.push(0xAB);
        public.extend_from_slice(&bytes[HEADER_LEN..]);
        assert_eq!(
            EntryView::parse(&public, 5).unwrap_err(),
            DecodeError::Malformed("application entry (public section must be empty)")
        );
        let mut k9 = bytes.clone();
        k9[1] = 9;
        assert_eq!(
            EntryView::parse(&k9, 5).unwrap_err(),
            DecodeError::UnknownKind(9)
        );
        assert_eq!(peek_view(&k9), Err(DecodeError::UnknownKind(9)));
        let mut zero = bytes.clone();
        zero[10..18].fill(0);
        assert_eq!(
            EntryView::parse(&zero, 5).unwrap_err(),
            DecodeError::InvalidTxId
        );
        let mut view0 = bytes;
        view0[2..10].fill(0);
        assert_eq!(
            EntryView::parse(&view0, 5).unwrap_err(),
            DecodeError::InvalidTxId
        );
        assert_eq!(peek_view(&view0), Err(DecodeError::InvalidTxId));
    }

    #[test]
    fn v2_rejects_malformed_entries() {
        let mut sealer = ToySealer(1);
        let ced = sha256(b"ce");
        for body in [app("x"), governance(), signature()] {
            let bytes = encode(txid(5), &body, &ced, &sha256(b"cd"), &mut sealer);
            // Every proper prefix fails to parse or, cut in the sealed bytes, to decrypt.
            for cut in 0..bytes.len() {
                assert!(
                    EntryView::parse(&bytes[..cut], 5)
                        .and_then(|v| v.body(Some(&sealer)))
                        .is_err(),
                    "accepted a prefix of {cut} bytes of {body:?}"
                );
            }
            // A byte appended: a sealed section that no longer opens, or a private section
            // where none belongs.
            let mut longer = bytes.clone();
            longer.push(0);
            let err = EntryView::parse(&longer, 5).and_then(|v| v.body(Some(&sealer)));
            match body.kind() {
                TxKind::Application => assert_eq!(err, Err(DecodeError::Decrypt)),
                kind => assert_eq!(err, Err(DecodeError::UnexpectedPrivate(kind_name(kind)))),
            }
            // Seqno 0 is no transaction.
            assert_eq!(
                EntryView::parse(&bytes, 0).unwrap_err(),
                DecodeError::InvalidTxId
            );
        }

        let bytes = encode(txid(5), &governance(), &ced, &Hash32::ZERO, &mut sealer);
        assert_eq!(&bytes[..4], &[2, 2, 2, 0]);
        let parse = |b: &[u8]| EntryView::parse(b, 5).map(|v| v.body(None));
        // View 0.
        let mut view0 = bytes.clone();
        view0[2] = 0;
        assert_eq!(parse(&view0).unwrap_err(), DecodeError::InvalidTxId);
        assert_eq!(peek_view(&view0), Err(DecodeError::InvalidTxId));
        // View 2 written overlong (0x82 0x00), and overflowing.
        let mut overlong = bytes.clone();
        overlong.splice(2..3, [0x82, 0x00]);
        assert_eq!(
            parse(&overlong).unwrap_err(),
            DecodeError::Malformed("varint")
        );
        assert_eq!(peek_view(&overlong), Err(DecodeError::Malformed("varint")));
        let mut overflow = bytes.clone();
        overflow.splice(
            2..3,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        );
        assert_eq!(
            parse(&overflow).unwrap_err(),
            DecodeError::Malformed("varint")
        );
        assert_eq!(peek_view(&overflow), Err(DecodeError::Malformed("varint")));
        // P written overlong.
        let p_at = 4 + 32;
        let p = bytes[p_at];
        assert!(p < 0x80);
        let mut overlong_p = bytes.clone();
        overlong_p.splice(p_at..p_at + 1, [p | 0x80, 0x00]);
        assert_eq!(
            parse(&overlong_p).unwrap_err(),
            DecodeError::Malformed("varint")
        );
        // Reserved entry flag bits.
        for bit in 1..8 {
            let mut flagged = bytes.clone();
            flagged[3] |= 1 << bit;
            assert_eq!(
                parse(&flagged).unwrap_err(),
                DecodeError::Malformed("entry flags (reserved bits set)")
            );
        }
        // A claims digest flagged present but all zeros: "no claims" has one spelling.
        let mut zero_claims = bytes[..p_at].to_vec();
        zero_claims[3] = ENTRY_HAS_CLAIMS_DIGEST;
        zero_claims.extend_from_slice(&[0; 32]);
        zero_claims.extend_from_slice(&bytes[p_at..]);
        assert_eq!(
            parse(&zero_claims).unwrap_err(),
            DecodeError::Malformed("claims digest (present but all zeros)")
        );
        zero_claims[p_at + 31] = 1;
        assert_eq!(
            EntryView::parse(&zero_claims, 5).unwrap().claims_digest,
            Hash32::from_slice(&zero_claims[p_at..p_at + 32]).unwrap()
        );
        // Unknown kind and version.
        let mut k9 = bytes.clone();
        k9[1] = 9;
        assert_eq!(parse(&k9).unwrap_err(), DecodeError::UnknownKind(9));
        let mut v0 = bytes.clone();
        v0[0] = 0;
        assert_eq!(parse(&v0).unwrap_err(), DecodeError::UnknownVersion(0));
        // A governance public section with a byte after its last write.
        let mut trailing = bytes[..p_at].to_vec();
        trailing.push(p + 1);
        trailing.extend_from_slice(&bytes[p_at + 1..]);
        trailing.push(0);
        assert_eq!(
            parse(&trailing).unwrap(),
            Err(DecodeError::TrailingBytes(1))
        );

        // Application entries: a public section, or a private one too short to be sealed.
        let app_bytes = encode(txid(5), &app("x"), &ced, &Hash32::ZERO, &mut sealer);
        let mut public = app_bytes[..p_at].to_vec();
        public.extend_from_slice(&[1, 0xAB]);
        public.extend_from_slice(&app_bytes[p_at + 1..]);
        assert_eq!(
            parse(&public).unwrap_err(),
            DecodeError::Malformed("application entry (public section must be empty)")
        );
        assert_eq!(
            parse(&app_bytes[..p_at + 1 + SEAL_OVERHEAD - 1]).unwrap_err(),
            DecodeError::Malformed("application entry (private section too short)")
        );
    }

    #[test]
    fn v2_application_plaintext_is_canonical() {
        // Sanity: the helper builds what `encode` builds.
        let ok = [1u8, 0, 1, b'x'];
        assert_eq!(
            decode_v2_plaintext(&ok).unwrap(),
            ApplicationEntry {
                collection_id: DEFAULT_COLLECTION.into(),
                contents: "x".into(),
                tags: Vec::new(),
                claims_key: None,
                idempotency: None,
                kv_writes: Vec::new(),
            }
        );
        assert_eq!(
            app_v2_with_plaintext(3, &ok),
            encode(
                TxId::new(2, 3).unwrap(),
                &plain_app(DEFAULT_COLLECTION, "x"),
                &sha256(b"ce"),
                &Hash32::ZERO,
                &mut ToySealer(7)
            )
        );
        // Reserved flag bits (bit 3 says a write set follows: here, a missing one).
        let mut hooks = ok;
        hooks[0] |= APP_KV_WRITES;
        assert!(matches!(
            decode_v2_plaintext(&hooks).unwrap_err(),
            DecodeError::Truncated { .. }
        ));
        for bit in 4..8 {
            let mut flagged = ok;
            flagged[0] |= 1 << bit;
            assert_eq!(
                decode_v2_plaintext(&flagged).unwrap_err(),
                DecodeError::Malformed("application entry flags (reserved bits set)")
            );
        }
        // The default collection spelled out instead of flagged.
        let mut explicit = vec![0u8];
        put_varint_bytes(&mut explicit, DEFAULT_COLLECTION.as_bytes());
        explicit.extend_from_slice(&[0, 1, b'x']);
        assert_eq!(
            decode_v2_plaintext(&explicit).unwrap_err(),
            DecodeError::Malformed("collection id (the default collection is written as a flag)")
        );
        // Bytes after the last field, with and without optional fields.
        assert_eq!(
            decode_v2_plaintext(&[1, 0, 1, b'x', 0]).unwrap_err(),
            DecodeError::TrailingBytes(1)
        );
        let mut with_key = vec![1 | APP_CLAIMS_KEY, 0, 1, b'x'];
        with_key.extend_from_slice(&[5; 32]);
        assert_eq!(
            decode_v2_plaintext(&with_key).unwrap().claims_key,
            Some([5; 32])
        );
        with_key.push(9);
        assert_eq!(
            decode_v2_plaintext(&with_key).unwrap_err(),
            DecodeError::TrailingBytes(1)
        );
        // Flagged fields missing.
        assert!(matches!(
            decode_v2_plaintext(&[1 | APP_IDEMPOTENCY, 0, 1, b'x']),
            Err(DecodeError::Truncated { .. })
        ));
        // Overlong varints inside the plaintext: tag count, contents length.
        assert_eq!(
            decode_v2_plaintext(&[1, 0x80, 0x00, 1, b'x']).unwrap_err(),
            DecodeError::Malformed("varint")
        );
        assert_eq!(
            decode_v2_plaintext(&[1, 0, 0x81, 0x00, b'x']).unwrap_err(),
            DecodeError::Malformed("varint")
        );
        // A tag count far beyond the input, and text that is not UTF-8.
        assert!(matches!(
            decode_v2_plaintext(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0]),
            Err(DecodeError::Truncated { .. })
        ));
        assert_eq!(
            decode_v2_plaintext(&[1, 0, 1, 0xff]).unwrap_err(),
            DecodeError::NotUtf8
        );
        assert!(matches!(
            decode_v2_plaintext(&[]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn peek_view_reads_only_the_first_bytes() {
        let v2 = encode(
            TxId::new(300, 9).unwrap(),
            &signature(),
            &Hash32::ZERO,
            &Hash32::ZERO,
            &mut ToySealer(1),
        );
        assert_eq!(peek_view(&v2), Ok(300));
        assert_eq!(peek_view(&v2[..4]), Ok(300));
        let v1 = encode_v1(
            TxId::new(300, 9).unwrap(),
            &signature(),
            &Hash32::ZERO,
            &Hash32::ZERO,
            &mut ToySealer(1),
        );
        assert_eq!(peek_view(&v1), Ok(300));
        assert_eq!(peek_view(&v1[..10]), Ok(300));
        for cut in 0..10 {
            assert!(
                matches!(peek_view(&v1[..cut]), Err(DecodeError::Truncated { .. })),
                "{cut}"
            );
        }
        for cut in 0..4 {
            assert!(
                matches!(peek_view(&v2[..cut]), Err(DecodeError::Truncated { .. })),
                "{cut}"
            );
        }
    }

    fn arb_hash() -> impl Strategy<Value = Hash32> {
        prop_oneof![Just(Hash32::ZERO), any::<[u8; 32]>().prop_map(Hash32)]
    }

    /// A write set in canonical order (a map's order), 1 to 5 writes.
    fn arb_kv_writes() -> impl Strategy<Value = Vec<KvWrite>> {
        proptest::collection::btree_map(
            (
                prop_oneof![Just("public:t".to_owned()), "\\PC{0,10}"],
                proptest::collection::vec(any::<u8>(), 0..12),
            ),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            1..5,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|((table, key), value)| KvWrite { table, key, value })
                .collect()
        })
    }

    /// Everything format 2 holds: format-1 bodies, hooks' writes, key-value transactions.
    fn arb_body() -> impl Strategy<Value = TxBody> {
        let with_hooks = (arb_body_v1(), arb_kv_writes()).prop_map(|(body, writes)| match body {
            TxBody::Application(mut e) => {
                e.kv_writes = writes;
                TxBody::Application(e)
            }
            other => other,
        });
        prop_oneof![
            arb_body_v1(),
            with_hooks,
            arb_kv_writes().prop_map(TxBody::Kv)
        ]
    }

    fn arb_body_v1() -> impl Strategy<Value = TxBody> {
        let application = (
            prop_oneof![Just(DEFAULT_COLLECTION.to_owned()), "\\PC{0,20}"],
            "\\PC{0,200}",
            proptest::collection::vec("\\PC{0,8}", 0..4),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of((any::<[u8; 32]>(), any::<u64>())),
        )
            .prop_map(|(collection_id, contents, tags, claims_key, idem)| {
                TxBody::Application(ApplicationEntry {
                    collection_id,
                    contents,
                    tags,
                    claims_key,
                    idempotency: idem.map(|(d, unix_secs)| IdempotencyRecord {
                        key_digest: Hash32(d),
                        unix_secs,
                    }),
                    kv_writes: Vec::new(),
                })
            });
        let governance = proptest::collection::vec(
            (
                "\\PC{0,12}",
                "\\PC{0,12}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            )
                .prop_map(|(table, key, value)| TableWrite { table, key, value }),
            0..4,
        )
        .prop_map(TxBody::Governance);
        let signature = (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 0..80),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..400)),
        )
            .prop_map(|(n, r, signature, cose_signature)| {
                TxBody::Signature(SignatureRecord {
                    node_id: Hash32(n),
                    root: Hash32(r),
                    signature,
                    cose_signature,
                })
            });
        prop_oneof![application, governance, signature]
    }

    /// An entry of `kind` at `seqno` whose sealed section holds `plaintext` as given (the
    /// encoder writes only canonical write sets, so refusals are tested with hand-made ones).
    fn sealed_entry(kind: TxKind, seqno: u64, plaintext: &[u8]) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION, kind as u8];
        put_varint(&mut out, 1);
        out.push(0);
        out.extend_from_slice(&[7u8; 32]);
        put_varint(&mut out, 0);
        let sealed = ToySealer(5).seal(&aad_v2(seqno, &out), plaintext);
        out.extend_from_slice(&sealed);
        out
    }

    fn write(table: &str, key: &[u8], value: Option<&[u8]>) -> KvWrite {
        KvWrite {
            table: table.into(),
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn key_value_transactions_round_trip_and_only_canonical_write_sets_decode() {
        let writes = vec![
            write("private:b", b"k", Some(b"v")),
            write("public:a", b"", None),
            write("public:a", b"\x00", Some(b"")),
        ];
        assert!(KvWrite::is_canonical(&writes));
        let bytes = sealed_entry(TxKind::Kv, 9, &kv_writes_plaintext(&writes));
        let view = EntryView::parse(&bytes, 9).unwrap();
        assert_eq!(view.kv_writes(&ToySealer(5)).unwrap(), writes);
        // The same as `encode` writes.
        let body = TxBody::Kv(writes.clone());
        let encoded = encode(
            TxId::new(1, 9).unwrap(),
            &body,
            &Hash32([7u8; 32]),
            &Hash32::ZERO,
            &mut ToySealer(5),
        );
        assert_eq!(encoded, bytes);

        let refused = |writes: &[KvWrite]| {
            let mut plain = Vec::new();
            put_kv_writes(&mut plain, writes);
            let bytes = sealed_entry(TxKind::Kv, 9, &plain);
            EntryView::parse(&bytes, 9)
                .unwrap()
                .kv_writes(&ToySealer(5))
        };
        let mut reversed = writes.clone();
        reversed.reverse();
        assert!(!KvWrite::is_canonical(&reversed));
        assert_eq!(
            refused(&reversed),
            Err(DecodeError::Malformed(
                "write set (not in ascending key order)"
            ))
        );
        let twice = [writes[0].clone(), writes[0].clone()];
        assert!(!KvWrite::is_canonical(&twice));
        assert_eq!(
            refused(&twice),
            Err(DecodeError::Malformed(
                "write set (not in ascending key order)"
            ))
        );
        assert_eq!(
            refused(&[]),
            Err(DecodeError::Malformed("write set (empty)"))
        );
        // An unknown operation byte.
        let mut plain = Vec::new();
        put_kv_writes(&mut plain, &writes[..1]);
        let op_at = plain.len() - 3;
        assert_eq!(plain[op_at], 1);
        plain[op_at] = 2;
        let bytes = sealed_entry(TxKind::Kv, 9, &plain);
        assert_eq!(
            EntryView::parse(&bytes, 9)
                .unwrap()
                .kv_writes(&ToySealer(5)),
            Err(DecodeError::Malformed("write set operation"))
        );
        // A key-value transaction has nothing public and a sealed section.
        let mut public = vec![FORMAT_VERSION, TxKind::Kv as u8, 1, 0];
        public.extend_from_slice(&[7u8; 32]);
        public.extend_from_slice(&[1, 0xaa]);
        assert!(EntryView::parse(&public, 9).is_err());
        let mut bare = vec![FORMAT_VERSION, TxKind::Kv as u8, 1, 0];
        bare.extend_from_slice(&[7u8; 32]);
        bare.push(0);
        assert!(EntryView::parse(&bare, 9).is_err());
    }

    #[test]
    fn format_1_has_no_key_value_transactions() {
        let mut bytes = encode_v1(
            TxId::new(1, 3).unwrap(),
            &TxBody::Governance(Vec::new()),
            &Hash32::ZERO,
            &Hash32::ZERO,
            &mut ToySealer(1),
        );
        bytes[1] = TxKind::Kv as u8;
        assert_eq!(
            EntryView::parse(&bytes, 3).unwrap_err(),
            DecodeError::UnknownKind(4)
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(version in 0u8..4, seqno in prop_oneof![Just(5u64), any::<u64>()],
                              rest in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut bytes = vec![version];
            bytes.extend_from_slice(&rest);
            let _ = peek_view(&bytes);
            if let Ok(view) = EntryView::parse(&bytes, seqno) {
                prop_assert_eq!(view.as_bytes(), &bytes[..]);
                let _ = view.leaf();
                let _ = view.body(Some(&ToySealer(3)));
                prop_assert_eq!(peek_view(&bytes), Ok(view.txid.view()));
            }
        }

        #[test]
        fn parse_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                                 seqno in any::<u64>()) {
            let _ = peek_view(&bytes);
            if let Ok(view) = EntryView::parse(&bytes, seqno) {
                let _ = view.body(Some(&ToySealer(3)));
            }
        }

        #[test]
        fn body_round_trips_v2(body in arb_body(), view in 1u64.., seqno in 1u64..,
                               ced in arb_hash(), cd in arb_hash()) {
            let id = TxId::new(view, seqno).unwrap();
            let bytes = encode(id, &body, &ced, &cd, &mut ToySealer(0x33));
            let parsed = EntryView::parse(&bytes, seqno).unwrap();
            prop_assert_eq!(parsed.format_version(), FORMAT_VERSION);
            prop_assert_eq!(parsed.txid, id);
            prop_assert_eq!(parsed.commit_evidence_digest, ced);
            prop_assert_eq!(parsed.claims_digest, cd);
            prop_assert_eq!(peek_view(&bytes), Ok(view));
            prop_assert_eq!(parsed.body(Some(&ToySealer(0x33))).unwrap(), body.clone());
            // Seqno-bound: elsewhere in the ledger a sealed section does not open.
            if matches!(body.kind(), TxKind::Application | TxKind::Kv) {
                let elsewhere = EntryView::parse(&bytes, seqno.wrapping_add(1).max(1)).unwrap();
                prop_assert_eq!(elsewhere.body(Some(&ToySealer(0x33))), Err(DecodeError::Decrypt));
            }
        }

        #[test]
        fn body_round_trips_v1(body in arb_body_v1(), view in 1u64.., seqno in 1u64..,
                               ced in arb_hash(), cd in arb_hash()) {
            let id = TxId::new(view, seqno).unwrap();
            let bytes = encode_v1(id, &body, &ced, &cd, &mut ToySealer(0x33));
            let parsed = EntryView::parse(&bytes, seqno).unwrap();
            prop_assert_eq!(parsed.format_version(), FORMAT_VERSION_1);
            prop_assert_eq!(parsed.txid, id);
            prop_assert_eq!(parsed.claims_digest, cd);
            prop_assert_eq!(peek_view(&bytes), Ok(view));
            prop_assert_eq!(parsed.body(Some(&ToySealer(0x33))).unwrap(), body);
        }

        #[test]
        fn varints_round_trip(v in any::<u64>()) {
            prop_assert_eq!(read_varint(&varint(v)), Ok(v));
            prop_assert_eq!(varint_len(v), varint(v).len() as u64);
        }

        #[test]
        fn encoded_len_is_exact(body in arb_body(), view in prop_oneof![1u64..300, 1u64..],
                                seqno in 1u64.., cd in arb_hash()) {
            let id = TxId::new(view, seqno).unwrap();
            let bytes = encode(id, &body, &sha256(b"ce"), &cd, &mut ToySealer(1));
            let has_claims = cd != Hash32::ZERO;
            prop_assert_eq!(encoded_len(&body, view, has_claims), bytes.len() as u64);
            // The view-independent bound is never below what any view produces.
            prop_assert!(max_encoded_len(&body, has_claims) >= bytes.len() as u64);
            prop_assert_eq!(
                max_encoded_len(&body, has_claims),
                bytes.len() as u64 + MAX_VARINT_LEN - varint(view).len() as u64
            );
        }
    }
}
