//! Stored entries (`ledger_core::entry`) decoded from arbitrary bytes, as the store, recovery
//! and the audit read them back from segments.
//!
//! Properties: parsing and body decoding never panic; the encoding is canonical, so every
//! entry whose body decodes re-encodes to exactly the input bytes. For application entries the
//! "cipher" is the identity (nonce and tag kept aside), so the private plaintext decoder is
//! fuzzed too and the sealed bytes can be reproduced.
#![no_main]

use ledger_core::entry::{self, EntryView, Opener, SEAL_OVERHEAD, Sealer, TxBody};
use libfuzzer_sys::fuzz_target;

/// Opens `nonce(12) || plaintext || tag(16)` by dropping nonce and tag.
struct Identity;

impl Opener for Identity {
    fn open(&self, _aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        Some(sealed[12..sealed.len() - 16].to_vec())
    }
}

/// Seals by putting back the original nonce and tag.
struct Reseal<'a> {
    sealed: &'a [u8],
}

impl Sealer for Reseal<'_> {
    fn seal(&mut self, _aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let n = self.sealed.len();
        let mut out = self.sealed[..12].to_vec();
        out.extend_from_slice(plaintext);
        out.extend_from_slice(&self.sealed[n - 16..]);
        out
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(view) = EntryView::parse(data) else {
        return;
    };
    assert_eq!(view.as_bytes(), data);
    let _ = view.leaf();
    let _ = view.governance_writes();
    let _ = view.signature();
    let _ = view.body(None);
    let Ok(body) = view.body(Some(&Identity)) else {
        return;
    };
    // Application entries keep everything in the private section: `parse` refuses a public one.
    assert!(
        !matches!(body, TxBody::Application(_)) || data[82..86] == [0, 0, 0, 0],
        "an application entry with a public section was accepted"
    );
    let private_len = match &body {
        TxBody::Application(_) => {
            let p = u32::from_le_bytes(data[82..86].try_into().unwrap()) as usize;
            u32::from_le_bytes(data[86 + p..90 + p].try_into().unwrap()) as usize
        }
        _ => 0,
    };
    let mut reseal = Reseal {
        sealed: &data[data.len() - private_len..],
    };
    let encoded = entry::encode(
        view.txid,
        &body,
        &view.commit_evidence_digest,
        &view.claims_digest,
        &mut reseal,
    );
    assert_eq!(encoded, data, "decoded entry does not re-encode to its bytes: {body:?}");
});
