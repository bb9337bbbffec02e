//! The pure core of cledger. It owns the ledger's data model and every byte-exact rule that
//! must match CCF and Azure confidential ledger: transaction ids, entry encoding and write-set
//! digests, commit evidence, claims digests, the Merkle history tree (and its RFC 6962 twin),
//! receipts and root signatures, and the C2SP signed notes, checkpoints and cosignatures
//! witnesses exchange. It does no I/O and has no notion of time (callers pass keys, seeds,
//! nonces and timestamps in), so everything here is testable in isolation and deterministic —
//! except ECDSA signatures, whose nonces AWS-LC draws itself (`signing`): their bytes differ
//! from one signing to the next, and only their validity is tested.

pub mod claims;
pub mod consistency;
pub mod cose;
pub mod entry;
pub mod evidence;
pub mod hash;
pub mod merkle;
pub mod note;
pub mod receipt;
pub mod signing;
pub mod txid;
pub mod witnessed;
pub mod x509;

pub use hash::Hash32;
pub use txid::TxId;
