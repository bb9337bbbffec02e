//! The ledger's latest C2SP checkpoint, as the node's checkpoint publisher (ledger-server's
//! `witness` module) left it, with the cosignatures it collected; and the service key's
//! statement naming the checkpoint key (`ledger_core::witnessed`). Served by
//! `routes::proofs`: `GET /app/checkpoint` and `GET /app/transactions/{id}/checkpoint`.

use ledger_core::hash::Hash32;
use ledger_core::witnessed::CheckpointKey;
use std::sync::RwLock;

/// A published checkpoint: its tree size, its RFC 6962 root, and the signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCheckpoint {
    pub size: u64,
    pub root: Hash32,
    /// The note as served: checkpoint text, the log's signature, witnesses' cosignatures.
    pub note: String,
}

#[derive(Debug)]
pub struct CheckpointBoard {
    key: CheckpointKey,
    latest: RwLock<Option<PublishedCheckpoint>>,
}

impl CheckpointBoard {
    pub fn new(key: CheckpointKey) -> CheckpointBoard {
        CheckpointBoard {
            key,
            latest: RwLock::new(None),
        }
    }

    pub fn key(&self) -> &CheckpointKey {
        &self.key
    }

    /// Replaces the latest checkpoint; an older tree size than the one shown is ignored (a
    /// slow round of the publisher must not take the board back).
    pub fn publish(&self, checkpoint: PublishedCheckpoint) {
        let mut latest = self.latest.write().expect("board lock");
        if latest.as_ref().is_none_or(|l| l.size <= checkpoint.size) {
            *latest = Some(checkpoint);
        }
    }

    pub fn latest(&self) -> Option<PublishedCheckpoint> {
        self.latest.read().expect("board lock").clone()
    }
}
