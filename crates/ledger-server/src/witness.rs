//! Publishing checkpoints (c2sp.org/tlog-checkpoint) and collecting witnesses' cosignatures
//! (the client side of c2sp.org/tlog-witness).
//!
//! Every `checkpoint_interval_ms` the node that signs (standalone, or a cluster's primary)
//! makes a checkpoint of the newest committed signature transaction: its seqno as the tree
//! size, the root of the RFC 6962 tree over the same leaves as CCF's tree (witnesses check
//! consistency with RFC 6962 hashing; FORMAT.md §4.4 says why there is a second tree), and
//! an extension line `ccf-root <txid> <base64 root>` binding it to that signature. It signs
//! the note with the checkpoint key, an Ed25519 key derived from the service key (so every
//! node derives the same one; `ledger_core::witnessed`), and sends it to each witness with a
//! consistency proof from the size that witness last cosigned. A witness that knows another
//! size answers 409 with it, and the node tries once more from there; one that refuses (a
//! proof that does not verify: this node's history is not the one the witness saw) is
//! logged as an error. The note, with every cosignature collected for its size, is what
//! `GET /app/checkpoint` serves.

use crate::ServeError;
use crate::config::WitnessConfig;
use base64::Engine as _;
use ledger_core::hash::{Hash32, sha256};
use ledger_core::note::{
    Checkpoint, CosignatureVerifier, Ed25519Signer, Note, NoteSignature, NoteVerifier,
};
use ledger_core::signing::EcSigningKey;
use ledger_core::witnessed::{
    CCF_ROOT_EXTENSION, CHECKPOINT_KEY_CONTENT_TYPE, CHECKPOINT_KEY_LABEL, CheckpointKey,
};
use ledger_http::checkpoints::{CheckpointBoard, PublishedCheckpoint};
use ledger_store::Ledger;
use std::sync::Arc;
use std::time::Duration;

/// How long one witness may take to answer.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(10);
/// C2SP tlog-witness: at most 63 consistency proof lines.
const MAX_PROOF_LINES: usize = 63;

/// The checkpoint key and the service key's statement naming it.
pub(crate) fn checkpoint_key(
    service_key_pem: &str,
    origin: &str,
) -> Result<(Ed25519Signer, CheckpointKey), ServeError> {
    let service_key = EcSigningKey::from_pkcs8_pem(service_key_pem)
        .map_err(|e| ServeError::Identity(format!("identity/service_key.pem: {e}")))?;
    let signer = Ed25519Signer::from_seed(origin, &service_key.derive_secret(CHECKPOINT_KEY_LABEL))
        .map_err(|e| ServeError::InvalidSetting(format!("checkpoint_origin {origin:?}: {e}")))?;
    let vkey = signer.verifier().vkey();
    let endorsement = ledger_core::cose::ServiceSigner::new(service_key)
        .endorse(vkey.as_bytes(), CHECKPOINT_KEY_CONTENT_TYPE);
    Ok((
        signer,
        CheckpointKey {
            vkey,
            endorsement: base64::engine::general_purpose::STANDARD.encode(endorsement),
        },
    ))
}

/// The default origin: the ledger id and the service key, so two ledgers never share one.
pub(crate) fn default_origin(ledger_id: &str, service_cert_pem: &str) -> String {
    let key = ledger_core::x509::Cert::from_pem(service_cert_pem)
        .map(|c| sha256(&c.spki_der()).to_hex())
        .unwrap_or_default();
    format!("cledger/{ledger_id}/{}", key.get(..16).unwrap_or("unknown"))
}

struct Witness {
    url: String,
    verifier: CosignatureVerifier,
    /// The size this witness last cosigned for our origin (0: none, or not known yet).
    size: u64,
}

pub(crate) struct Publisher {
    ledger: Arc<Ledger>,
    signer: Ed25519Signer,
    origin: String,
    board: Arc<CheckpointBoard>,
    witnesses: Vec<Witness>,
    http: reqwest::Client,
    /// Whether this node signs (a cluster's backups publish nothing).
    signs: Box<dyn Fn() -> bool + Send + Sync>,
    /// The checkpoint being collected for, and whose cosignatures it has.
    current: Option<Collecting>,
}

struct Collecting {
    size: u64,
    /// The RFC 6962 root at `size`.
    root: Hash32,
    note: Note,
    /// Index into `witnesses` of those that cosigned `note`.
    cosigned: Vec<usize>,
}

impl Publisher {
    pub(crate) fn new(
        ledger: Arc<Ledger>,
        signer: Ed25519Signer,
        origin: String,
        board: Arc<CheckpointBoard>,
        witnesses: &[WitnessConfig],
        signs: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<Publisher, ServeError> {
        let witnesses = witnesses
            .iter()
            .map(|w| {
                Ok(Witness {
                    url: w.url.trim_end_matches('/').to_owned(),
                    verifier: CosignatureVerifier::from_vkey(&w.vkey)
                        .map_err(|e| ServeError::InvalidSetting(e.to_string()))?,
                    size: 0,
                })
            })
            .collect::<Result<_, ServeError>>()?;
        let http = reqwest::Client::builder()
            .timeout(WITNESS_TIMEOUT)
            .build()
            .map_err(|e| ServeError::Internal(format!("the witness client: {e}")))?;
        Ok(Publisher {
            ledger,
            signer,
            origin,
            board,
            witnesses,
            http,
            signs,
            current: None,
        })
    }

    /// Publishes until `stopped` completes.
    pub(crate) async fn run(mut self, interval: Duration, stopped: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = ticks.tick() => {}
            }
            if !(self.signs)() {
                continue;
            }
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "publishing a checkpoint failed");
            }
        }
    }

    /// One round: a new checkpoint if there is a newer signature, then every witness that
    /// has not cosigned it yet.
    async fn round(&mut self) -> Result<(), String> {
        let ledger = self.ledger.clone();
        let newest = tokio::task::spawn_blocking(move || newest_checkpoint_parts(&ledger))
            .await
            .map_err(|e| e.to_string())??;
        let Some((txid, size, ccf_root, root)) = newest else {
            return Ok(());
        };
        if self.current.as_ref().is_none_or(|c| c.size < size) {
            let mut checkpoint =
                Checkpoint::new(&self.origin, size, root).map_err(|e| e.to_string())?;
            checkpoint.extensions.push(format!(
                "{CCF_ROOT_EXTENSION} {txid} {}",
                base64::engine::general_purpose::STANDARD.encode(ccf_root.0)
            ));
            let mut note = Note::new(checkpoint.text()).map_err(|e| e.to_string())?;
            let signature = self.signer.sign(note.text()).map_err(|e| e.to_string())?;
            note.add_signature(signature).map_err(|e| e.to_string())?;
            self.current = Some(Collecting {
                size,
                root,
                note,
                cosigned: Vec::new(),
            });
            self.show();
        }
        for index in 0..self.witnesses.len() {
            let done = self
                .current
                .as_ref()
                .is_some_and(|c| c.cosigned.contains(&index));
            if !done {
                self.submit(index).await;
            }
        }
        Ok(())
    }

    fn show(&self) {
        if let Some(c) = &self.current {
            self.board.publish(PublishedCheckpoint {
                size: c.size,
                root: c.root,
                note: c.note.to_string(),
            });
        }
    }

    /// Sends the current checkpoint to witness `index`; on 409 tries once more from the size
    /// the witness names.
    async fn submit(&mut self, index: usize) {
        for _attempt in 0..2 {
            match self.add_checkpoint(index).await {
                Ok(Added::Cosigned(lines)) => {
                    self.take_cosignatures(index, &lines);
                    return;
                }
                Ok(Added::Conflict(known)) => {
                    let ours = self.current.as_ref().map_or(0, |c| c.size);
                    if known > ours {
                        tracing::error!(
                            witness = %self.witnesses[index].url,
                            witness_size = known,
                            our_size = ours,
                            "a witness has cosigned a larger tree of this log than this node's: \
                             this ledger was rolled back, or shows different histories"
                        );
                        return;
                    }
                    self.witnesses[index].size = known;
                }
                Err(e) => {
                    tracing::error!(witness = %self.witnesses[index].url, error = %e,
                        "a witness refused this ledger's checkpoint");
                    return;
                }
            }
        }
    }

    async fn add_checkpoint(&self, index: usize) -> Result<Added, String> {
        let Some(current) = &self.current else {
            return Err("no checkpoint".into());
        };
        let witness = &self.witnesses[index];
        let old = witness.size.min(current.size);
        let proof = if old == 0 || old == current.size {
            Vec::new()
        } else {
            let ledger = self.ledger.clone();
            let new = current.size;
            tokio::task::spawn_blocking(move || ledger.rfc6962_consistency_proof(old, new))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        if proof.len() > MAX_PROOF_LINES {
            return Err(format!(
                "a proof of {} hashes is longer than the protocol allows",
                proof.len()
            ));
        }
        let mut body = format!("old {old}\n");
        for hash in &proof {
            body.push_str(&base64::engine::general_purpose::STANDARD.encode(hash.0));
            body.push('\n');
        }
        body.push('\n');
        // Only the log's own signature goes to the witness, not other witnesses'.
        let mut note = Note::new(current.note.text()).map_err(|e| e.to_string())?;
        if let Some(own) = current.note.signatures().first() {
            note.add_signature(own.clone()).map_err(|e| e.to_string())?;
        }
        body.push_str(&note.to_string());
        let response = self
            .http
            .post(format!("{}/add-checkpoint", witness.url))
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        match status.as_u16() {
            200 => Ok(Added::Cosigned(text)),
            409 => text
                .trim()
                .parse()
                .map(Added::Conflict)
                .map_err(|_| format!("409 without a size: {}", text.trim())),
            _ => Err(format!("HTTP {status}: {}", text.trim())),
        }
    }

    fn take_cosignatures(&mut self, index: usize, lines: &str) {
        let Some(current) = &mut self.current else {
            return;
        };
        let witness = &mut self.witnesses[index];
        let mut taken = false;
        for (number, line) in lines.lines().enumerate() {
            let Ok(signature) = NoteSignature::parse_line(line, number + 1) else {
                continue;
            };
            let theirs = signature.name == witness.verifier.name()
                && signature.key_id == witness.verifier.key_id()
                && witness
                    .verifier
                    .verify(current.note.text(), &signature.signature);
            if theirs && current.note.add_signature(signature).is_ok() {
                taken = true;
            }
        }
        if !taken {
            tracing::error!(witness = %witness.url, "the witness answered without a valid cosignature");
            return;
        }
        witness.size = current.size;
        current.cosigned.push(index);
        self.show();
    }
}

enum Added {
    /// The cosignature lines of a 200 answer.
    Cosigned(String),
    /// A 409 answer: the size the witness last cosigned.
    Conflict(u64),
}

/// The newest committed signature: its txid, tree size, CCF root and RFC 6962 root.
fn newest_checkpoint_parts(
    ledger: &Ledger,
) -> Result<Option<(ledger_core::TxId, u64, Hash32, Hash32)>, String> {
    let Some(committed) = ledger.committed() else {
        return Ok(None);
    };
    let head = match ledger
        .consistency(committed, Some(committed))
        .map_err(|e| e.to_string())?
    {
        Ok(proof) => proof.to,
        // The commit point is always a signature; anything else waits for the next round.
        Err(_) => return Ok(None),
    };
    let size = head.txid.seqno();
    let root = ledger.rfc6962_root_at(size).map_err(|e| e.to_string())?;
    Ok(Some((head.txid, size, head.root, root)))
}
