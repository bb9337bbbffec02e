//! The store's own limits on what it writes, checked on every write path before anything is
//! queued, hashed or encoded ([`check_body`], called by `Ledger::submit`), and once more on
//! the encoded frame in the writer ([`check_frame`]), so that nothing the store writes is
//! something its own reader refuses (`docs/FORMAT.md` §3.5).
//!
//! Two kinds of limit:
//!
//! * **The format's**: a frame's payload (one entry) is at most
//!   [`entry::MAX_ENTRY_BYTES`] (64 MiB); the scanner treats a larger length field as damage,
//!   so an entry written larger would make the next open stop as if the ledger were corrupt.
//!   Frame offsets are 40 bits in the frame records, which bounds `segment_max_bytes`.
//! * **The index's**: the collection id is repeated in every index row of its entries and
//!   tags, and each tag adds rows; unbounded, one entry of a few megabytes could make the
//!   index write gigabytes (a 32 MiB collection id with a million one-byte tags fits in an
//!   entry). Collection ids, tags and tags per entry are bounded so that the index rows of
//!   one entry stay around a megabyte at most (256 tags × two rows of ~2 KiB). These are limits of what the store *writes*; entries
//!   already in a ledger are read whatever their size.
//!
//! The HTTP layer has tighter limits of its own (ACL's), checked first with friendlier errors;
//! these bound every other caller (`cledger local append`, `cledger local fill`, tools).

use crate::StoreConfig;
use ledger_core::entry::{self, DEFAULT_COLLECTION, KvWrite, TxBody};

/// The largest stored entry, and so the largest frame payload: the format's limit.
pub const MAX_ENTRY_BYTES: u64 = entry::MAX_ENTRY_BYTES;
/// The longest collection id the store writes, in bytes of UTF-8 (ACL's own limit is 256).
pub const MAX_COLLECTION_ID_BYTES: usize = 1024;
/// The longest tag the store writes, in bytes of UTF-8.
pub const MAX_TAG_BYTES: usize = 1024;
/// The most tags one entry may carry.
pub const MAX_TAGS_PER_ENTRY: usize = 256;
/// Frame offsets are stored in 40 bits (`tree/frames.idx`, FORMAT.md §4.2). A segment may grow
/// past `segment_max_bytes` by one batch, so the setting keeps half the range for the batch
/// that crosses it (room for some 8,000 entries of the largest size).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 39;

/// A write the store refuses because it exceeds one of its limits. Nothing was written. Each
/// variant names the limit and carries the size that exceeded it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A key-value write set that the encoding cannot hold: empty (a key-value transaction
    /// writes something), or not strictly ascending by (table, key).
    #[error("the key-value write set is {0}")]
    WriteSet(&'static str),
    /// The transaction, encoded, would be larger than a frame holds.
    #[error(
        "the entry would take {size} bytes stored, {} more than the {limit} bytes a ledger entry may take",
        size - limit
    )]
    EntryTooLarge { size: u64, limit: u64 },
    /// The collection id is longer than [`MAX_COLLECTION_ID_BYTES`].
    #[error(
        "the collection id is {len} bytes long, {} more than the limit of {limit} bytes",
        len - limit
    )]
    CollectionIdTooLong { len: usize, limit: usize },
    /// Tag number `index` (from 0) is longer than [`MAX_TAG_BYTES`].
    #[error(
        "tag {index} is {len} bytes long, {} more than the limit of {limit} bytes",
        len - limit
    )]
    TagTooLong {
        index: usize,
        len: usize,
        limit: usize,
    },
    /// More tags than [`MAX_TAGS_PER_ENTRY`].
    #[error(
        "the entry has {count} tags, {} more than the limit of {limit} tags per entry",
        count - limit
    )]
    TooManyTags { count: usize, limit: usize },
    /// An encoded frame payload beyond the format's limit reached the writer (the request
    /// check should have refused it first); refused there instead of being written.
    #[error(
        "the encoded entry is {size} bytes, {} more than the {limit} bytes a segment frame holds",
        size - limit
    )]
    FrameTooLarge { size: u64, limit: u64 },
}

/// Checks a transaction a client submitted against the store's limits. Cheap: only field
/// lengths are read. `has_claims` says whether it will carry a claims digest.
pub(crate) fn check_body(body: &TxBody, has_claims: bool) -> Result<(), LimitError> {
    let writes = match body {
        TxBody::Application(e) => Some(&e.kv_writes),
        TxBody::Kv(writes) if writes.is_empty() => return Err(LimitError::WriteSet("empty")),
        TxBody::Kv(writes) => Some(writes),
        _ => None,
    };
    if writes.is_some_and(|w| !KvWrite::is_canonical(w)) {
        return Err(LimitError::WriteSet("not in ascending (table, key) order"));
    }
    if let TxBody::Application(e) = body {
        if e.collection_id != DEFAULT_COLLECTION && e.collection_id.len() > MAX_COLLECTION_ID_BYTES
        {
            return Err(LimitError::CollectionIdTooLong {
                len: e.collection_id.len(),
                limit: MAX_COLLECTION_ID_BYTES,
            });
        }
        if e.tags.len() > MAX_TAGS_PER_ENTRY {
            return Err(LimitError::TooManyTags {
                count: e.tags.len(),
                limit: MAX_TAGS_PER_ENTRY,
            });
        }
        if let Some((index, tag)) = e
            .tags
            .iter()
            .enumerate()
            .find(|(_, t)| t.len() > MAX_TAG_BYTES)
        {
            return Err(LimitError::TagTooLong {
                index,
                len: tag.len(),
                limit: MAX_TAG_BYTES,
            });
        }
    }
    // At the largest view, so that a request accepted now fits whatever view sequences it.
    let size = entry::max_encoded_len(body, has_claims);
    if size > MAX_ENTRY_BYTES {
        return Err(LimitError::EntryTooLarge {
            size,
            limit: MAX_ENTRY_BYTES,
        });
    }
    Ok(())
}

/// Checks an encoded entry's length against what a frame holds.
pub(crate) fn check_frame(payload_len: usize) -> Result<(), LimitError> {
    let size = u64::try_from(payload_len).unwrap_or(u64::MAX);
    if size > MAX_ENTRY_BYTES {
        return Err(LimitError::FrameTooLarge {
            size,
            limit: MAX_ENTRY_BYTES,
        });
    }
    Ok(())
}

/// The settings whose values the format bounds.
pub(crate) fn check_config(config: &StoreConfig) -> Result<(), crate::StoreError> {
    if config.segment_max_bytes > MAX_SEGMENT_BYTES {
        return Err(crate::StoreError::SegmentTooLarge {
            configured: config.segment_max_bytes,
            limit: MAX_SEGMENT_BYTES,
        });
    }
    Ok(())
}
