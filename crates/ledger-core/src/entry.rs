//! Transactions as they are stored: the entry model and its deterministic, versioned encoding.
//!
//! A stored entry is what the write-set digest covers, byte for byte (CCF hashes the whole
//! serialised entry, ciphertext included). Its layout (format version 1, all integers
//! little-endian; `docs/FORMAT.md` is the normative description):
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
//! Everything up to and including the `Q` field is the associated data of the private
//! section, so the public part cannot be swapped under a ciphertext. Application entries keep
//! everything the user sent (collection id, tags, contents, claims key) in the private section;
//! governance writes and signatures are public so an auditor without keys can follow them.
//! Keys and nonces come from the caller through [`Sealer`]/[`Opener`]: this crate does no I/O
//! and draws no randomness.

use crate::evidence::LeafInputs;
use crate::hash::{Hash32, sha256};
use crate::txid::TxId;

pub const FORMAT_VERSION: u8 = 1;
/// The collection ACL writes to when the caller names none.
pub const DEFAULT_COLLECTION: &str = "subledger:0";
/// Fixed-size part of an entry before the public section.
pub const HEADER_LEN: usize = 86;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TxKind {
    Application = 1,
    Governance = 2,
    Signature = 3,
}

impl TxKind {
    fn from_byte(b: u8) -> Option<TxKind> {
        match b {
            1 => Some(TxKind::Application),
            2 => Some(TxKind::Governance),
            3 => Some(TxKind::Signature),
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

/// A signature transaction at seqno `s` signs the root of the tree of leaves `0..s`
/// (every transaction before it), as CCF's signature transactions do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRecord {
    pub node_id: Hash32,
    pub root: Hash32,
    /// DER ECDSA signature over `root` used as a prehashed digest.
    pub signature: Vec<u8>,
}

/// What a transaction writes, before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxBody {
    Application(ApplicationEntry),
    Governance(Vec<TableWrite>),
    Signature(SignatureRecord),
}

impl TxBody {
    pub fn kind(&self) -> TxKind {
        match self {
            TxBody::Application(_) => TxKind::Application,
            TxBody::Governance(_) => TxKind::Governance,
            TxBody::Signature(_) => TxKind::Signature,
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
}

/// Serialises a transaction. `sealer` is called once for application entries.
pub fn encode(
    txid: TxId,
    body: &TxBody,
    commit_evidence_digest: &Hash32,
    claims_digest: &Hash32,
    sealer: &mut dyn Sealer,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 256);
    out.push(FORMAT_VERSION);
    out.push(body.kind() as u8);
    out.extend_from_slice(&txid.view().to_le_bytes());
    out.extend_from_slice(&txid.seqno().to_le_bytes());
    out.extend_from_slice(&commit_evidence_digest.0);
    out.extend_from_slice(&claims_digest.0);
    let mut public = Vec::new();
    let mut private = Vec::new();
    match body {
        TxBody::Application(e) => {
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
        }
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
        }
    }
    put_bytes(&mut out, &public);
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

/// Bytes a [`Sealer`] adds to a plaintext: a 12-byte nonce and a 16-byte tag (AES-GCM).
pub const SEAL_OVERHEAD: usize = 12 + 16;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// A parsed stored entry, borrowing the bytes. Parsing needs no keys.
#[derive(Debug, Clone, Copy)]
pub struct EntryView<'a> {
    bytes: &'a [u8],
    pub kind: TxKind,
    pub txid: TxId,
    pub commit_evidence_digest: Hash32,
    pub claims_digest: Hash32,
    public: &'a [u8],
    /// Offset of the sealed private bytes (after the Q field).
    private_start: usize,
}

impl<'a> EntryView<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<EntryView<'a>, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let kind_byte = r.u8()?;
        let kind = TxKind::from_byte(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
        let view = r.u64()?;
        let seqno = r.u64()?;
        let txid = TxId::new(view, seqno).ok_or(DecodeError::InvalidTxId)?;
        let commit_evidence_digest = r.hash()?;
        let claims_digest = r.hash()?;
        let public = r.bytes()?;
        let private = r.bytes()?;
        if r.pos != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - r.pos));
        }
        if kind != TxKind::Application && !private.is_empty() {
            return Err(DecodeError::UnexpectedPrivate(kind_name(kind)));
        }
        // Everything a user writes is private; a public part of an application entry is not
        // something any writer produces, so it is refused rather than carried along unseen.
        if kind == TxKind::Application && !public.is_empty() {
            return Err(DecodeError::Malformed(
                "application entry (public section must be empty)",
            ));
        }
        if kind == TxKind::Application && private.len() < SEAL_OVERHEAD {
            return Err(DecodeError::Malformed(
                "application entry (private section too short)",
            ));
        }
        Ok(EntryView {
            bytes,
            kind,
            txid,
            commit_evidence_digest,
            claims_digest,
            public,
            private_start: bytes.len() - private.len(),
        })
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
        r.finish()?;
        Ok(SignatureRecord {
            node_id,
            root,
            signature,
        })
    }

    /// Decrypts and decodes an application entry.
    pub fn application(&self, opener: &dyn Opener) -> Result<ApplicationEntry, DecodeError> {
        if self.kind != TxKind::Application {
            return Err(DecodeError::Malformed("application entry (wrong kind)"));
        }
        let aad = &self.bytes[..self.private_start];
        let plain = opener
            .open(aad, &self.bytes[self.private_start..])
            .ok_or(DecodeError::Decrypt)?;
        let mut r = Reader {
            bytes: &plain,
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
        })
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
        }
    }
}

fn kind_name(kind: TxKind) -> &'static str {
    match kind {
        TxKind::Application => "application",
        TxKind::Governance => "governance",
        TxKind::Signature => "signature",
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
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
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
        })
    }

    #[test]
    fn round_trips_every_kind() {
        let bodies = [
            app("hello"),
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
            ]),
            TxBody::Signature(SignatureRecord {
                node_id: sha256(b"node"),
                root: sha256(b"root"),
                signature: vec![0x30, 1, 2, 3],
            }),
        ];
        let mut sealer = ToySealer(0x5a);
        for (i, body) in bodies.iter().enumerate() {
            let (ced, cd) = (sha256(b"ce"), sha256(&[i as u8]));
            let bytes = encode(txid(7 + i as u64), body, &ced, &cd, &mut sealer);
            let view = EntryView::parse(&bytes).unwrap();
            assert_eq!(view.kind, body.kind());
            assert_eq!(view.txid, txid(7 + i as u64));
            assert_eq!(view.commit_evidence_digest, ced);
            assert_eq!(view.claims_digest, cd);
            assert_eq!(&view.body(Some(&sealer)).unwrap(), body);
            assert_eq!(view.write_set_digest(), sha256(&bytes));
            // Deterministic: same inputs, same bytes.
            assert_eq!(
                bytes,
                encode(txid(7 + i as u64), body, &ced, &cd, &mut ToySealer(0x5a))
            );
        }
    }

    #[test]
    fn private_section_is_bound_to_the_header() {
        let mut sealer = ToySealer(1);
        let mut bytes = encode(
            txid(5),
            &app("x"),
            &Hash32::ZERO,
            &Hash32::ZERO,
            &mut sealer,
        );
        // Change the seqno in the header: parsing works, decryption must not.
        bytes[10] ^= 1;
        let view = EntryView::parse(&bytes).unwrap();
        assert_eq!(view.application(&sealer), Err(DecodeError::Decrypt));
        assert_eq!(view.body(None), Err(DecodeError::Decrypt));
    }

    #[test]
    fn rejects_malformed_entries() {
        let mut sealer = ToySealer(1);
        let bytes = encode(
            txid(5),
            &app("x"),
            &Hash32::ZERO,
            &Hash32::ZERO,
            &mut sealer,
        );
        for cut in 0..bytes.len() {
            assert!(
                EntryView::parse(&bytes[..cut]).is_err(),
                "accepted a prefix of {cut} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            EntryView::parse(&longer).unwrap_err(),
            DecodeError::TrailingBytes(1)
        );
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            EntryView::parse(&v2).unwrap_err(),
            DecodeError::UnknownVersion(2)
        );
        // An application entry with a public part (P = 1, one byte): refused.
        let mut public = bytes[..HEADER_LEN - 4].to_vec();
        public.extend_from_slice(&1u32.to_le_bytes());
        public.push(0xAB);
        public.extend_from_slice(&bytes[HEADER_LEN..]);
        assert_eq!(
            EntryView::parse(&public).unwrap_err(),
            DecodeError::Malformed("application entry (public section must be empty)")
        );
        let mut k9 = bytes.clone();
        k9[1] = 9;
        assert_eq!(
            EntryView::parse(&k9).unwrap_err(),
            DecodeError::UnknownKind(9)
        );
        let mut zero = bytes;
        zero[10..18].fill(0);
        assert_eq!(
            EntryView::parse(&zero).unwrap_err(),
            DecodeError::InvalidTxId
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(view) = EntryView::parse(&bytes) {
                let _ = view.body(Some(&ToySealer(3)));
            }
        }

        #[test]
        fn application_round_trip(collection in "\\PC{1,20}", contents in "\\PC{0,200}",
                                  tags in proptest::collection::vec("[a-z]{1,8}", 0..4), seqno in 1u64..) {
            let idempotency = (seqno % 2 == 0).then_some(IdempotencyRecord { key_digest: Hash32([seqno as u8; 32]), unix_secs: seqno });
            let body = TxBody::Application(ApplicationEntry { collection_id: collection, contents, tags, claims_key: None, idempotency });
            let mut sealer = ToySealer(0x33);
            let bytes = encode(TxId::new(1, seqno).unwrap(), &body, &Hash32::ZERO, &Hash32::ZERO, &mut sealer);
            let view = EntryView::parse(&bytes).unwrap();
            prop_assert_eq!(view.body(Some(&sealer)).unwrap(), body);
        }
    }
}
