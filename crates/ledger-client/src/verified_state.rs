//! The client's fork guard ("verified state", as immudb calls it): the last signed state of
//! the ledger this client verified, and the check that every later state it is shown is a
//! consistent extension of it.
//!
//! A ledger that was restored from an old backup and extended differently, or that shows
//! different histories to different clients, must sign a different root at a tree size some
//! client already verified, or refuse to prove consistency from it: either way a client that
//! kept its state notices. What this cannot catch is a ledger that shows one client a private
//! history from the start; comparing states between clients (witnesses) does.

use crate::{Client, Error, Result};
use ledger_core::consistency::{self, ConsistencyError, ConsistencyResponse, VerifiedState};
use reqwest::Method;
use std::path::Path;

/// What a check of the ledger's growth found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// No state was kept: the newest signed state, verified with the service key, is trusted
    /// from now on.
    First(VerifiedState),
    /// The ledger has not signed a newer state.
    Unchanged(VerifiedState),
    /// The newer state `to` consistently extends the kept state `from`.
    Extended {
        from: VerifiedState,
        to: VerifiedState,
    },
}

impl Growth {
    /// The state to keep from now on.
    pub fn state(&self) -> VerifiedState {
        match *self {
            Growth::First(s) | Growth::Unchanged(s) | Growth::Extended { to: s, .. } => s,
        }
    }
}

impl Client {
    /// `GET /app/transactions/consistency?from=&to=`, unverified.
    pub fn consistency(&self, from: &str, to: Option<&str>) -> Result<ConsistencyResponse> {
        let url = self.url(
            "/app/transactions/consistency",
            self.version(),
            &[("from", Some(from)), ("to", to)],
        );
        let body = self.call(Method::GET, &url, None)?.1;
        serde_json::from_value(body).map_err(|e| Error::Protocol(format!("consistency: {e}")))
    }

    /// The proof of `txid` in the ledger's latest checkpoint (`GET
    /// /app/transactions/{txid}/checkpoint`), waiting until a checkpoint covers the entry
    /// and carries a cosignature by each witness of `witness_vkeys`. `None` if the ledger
    /// publishes no checkpoints. Verified against the pinned service certificate.
    pub fn checkpoint_evidence(
        &self,
        txid: &str,
        leaf: ledger_core::Hash32,
        witness_vkeys: &[String],
    ) -> Result<Option<ledger_core::witnessed::CheckpointEvidence>> {
        use ledger_core::witnessed::{self, WitnessError};
        let seqno = ledger_core::TxId::parse(txid)
            .map_err(|e| Error::Config(format!("{txid}: {e}")))?
            .seqno();
        let url = self.url(
            &format!("/app/transactions/{}/checkpoint", crate::enc(txid)),
            self.version(),
            &[],
        );
        let start = std::time::Instant::now();
        loop {
            let waiting = match self.call(Method::GET, &url, None) {
                Ok((_, body)) => {
                    let evidence: witnessed::CheckpointEvidence = serde_json::from_value(body)
                        .map_err(|e| Error::Protocol(format!("checkpoint evidence: {e}")))?;
                    match witnessed::verify(
                        &evidence,
                        leaf,
                        seqno,
                        &self.service_key()?,
                        witness_vkeys,
                    ) {
                        Ok(_) => return Ok(Some(evidence)),
                        Err(WitnessError::NotCosigned(name)) => {
                            format!("a cosignature by witness {name}")
                        }
                        Err(e) => return Err(Error::Protocol(e.to_string())),
                    }
                }
                Err(Error::Api {
                    status: 404,
                    message,
                    ..
                }) if message.contains("publishes no checkpoints") => {
                    return Ok(None);
                }
                Err(Error::Api {
                    status: 404,
                    message,
                    ..
                }) => message,
                Err(e) => return Err(e),
            };
            if start.elapsed() > crate::WAIT_LIMIT {
                return Err(Error::Timeout(format!(
                    "no checkpoint proving {txid} in time: still waiting for {waiting}"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// The consistency proof between two signature transactions, verified with the pinned
    /// service certificate: both signed states and the proof.
    pub fn verified_consistency(
        &self,
        from: &str,
        to: &str,
    ) -> Result<(VerifiedState, VerifiedState)> {
        let answer = self.consistency(from, Some(to))?;
        Ok(consistency::verify(&answer, &self.service_key()?)?)
    }

    /// The newest committed signed state, verified with the pinned service certificate.
    pub fn newest_signed_state(&self) -> Result<VerifiedState> {
        // Every answer names the committed transaction, which is the newest signature.
        let url = self.url("/app/collections", self.version(), &[]);
        let (headers, _) = self.call(Method::GET, &url, None)?;
        let committed = headers
            .get("x-ms-ccf-transaction-id")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Protocol("no x-ms-ccf-transaction-id header".into()))?
            .to_owned();
        let answer = self.consistency(&committed, Some(&committed))?;
        Ok(consistency::verify(&answer, &self.service_key()?)?.1)
    }

    /// Verifies that the ledger's newest signed state extends `known` (the state kept from an
    /// earlier check), or, with no state kept, verifies and returns the newest one.
    pub fn check_growth(&self, known: Option<&VerifiedState>) -> Result<Growth> {
        let Some(known) = known else {
            return Ok(Growth::First(self.newest_signed_state()?));
        };
        let from = known.transaction_id.to_string();
        let answer = match self.consistency(&from, None) {
            Ok(answer) => answer,
            // The ledger has not reached the kept state: it went back.
            Err(Error::Api { status: 404, .. }) => {
                let newest = self.newest_signed_state()?;
                return Err(ConsistencyError::Rollback {
                    known: known.transaction_id,
                    known_size: known.tree_size,
                    served: newest.transaction_id,
                    served_size: newest.tree_size,
                }
                .into());
            }
            // Another transaction (another view) or no signature at the kept seqno: the
            // history there is not the one verified.
            Err(Error::Api { status: 400, .. }) => {
                return Err(Error::Fork(format!(
                    "the ledger no longer has the signature transaction {from} verified earlier \
                     (tree size {}, root {}): its history at that point is not the one you \
                     verified",
                    known.tree_size, known.root
                )));
            }
            Err(e) => return Err(e),
        };
        let to = consistency::check_extension(known, &answer, &self.service_key()?)?;
        Ok(if to == *known {
            Growth::Unchanged(to)
        } else {
            Growth::Extended { from: *known, to }
        })
    }

    fn service_key(&self) -> Result<ledger_core::signing::EcPublicKey> {
        crate::service_public_key(&self.config.service_cert_pem)
    }
}

/// Reads a kept state; `None` if the file does not exist.
pub fn load_state(path: &Path) -> Result<Option<VerifiedState>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Io(format!("{}: not a verified state: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io(format!("{}: {e}", path.display()))),
    }
}

/// Keeps `state` in `path`, replacing the file whole (a crash leaves the old state or the new
/// one, never a mix).
pub fn save_state(path: &Path, state: &VerifiedState) -> Result<()> {
    let io = |e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(state).map_err(|e| Error::Io(e.to_string()))?;
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text + "\n").map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}
