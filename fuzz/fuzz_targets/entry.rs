//! Stored entries (`ledger_core::entry`) decoded from arbitrary bytes, as the store, recovery
//! and the audit read them back from segments.
//!
//! Input: 8 bytes of seqno (little-endian; the store knows it from the frame's position), then
//! the entry bytes. Both formats are exercised: format 1 (stored seqno, checked against the
//! given one) and format 2 (seqno only in the associated data).
//!
//! Properties: parsing (and `peek_view`) never panics; the encoding is canonical, so every
//! entry whose body decodes re-encodes, in its own format, to exactly the input bytes. For
//! application entries the "cipher" is the identity (nonce and tag kept aside), so the private
//! plaintext decoder is fuzzed too and the sealed bytes can be reproduced.
#![no_main]

use ledger_core::entry::{
    self, EntryView, FORMAT_VERSION_1, Opener, SEAL_OVERHEAD, Sealer, TxBody,
};
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

/// Seals by putting back the original nonce and tag. The sealed bytes start where the AAD's
/// entry bytes end: format 2 AAD is `seqno (8 bytes) || entry bytes before the sealed bytes`,
/// format 1 AAD is just the entry bytes before them.
struct Reseal<'a> {
    entry: &'a [u8],
    aad_prefix: usize,
}

impl Sealer for Reseal<'_> {
    fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let start = aad.len() - self.aad_prefix;
        let n = self.entry.len();
        let mut out = self.entry[start..start + 12].to_vec();
        out.extend_from_slice(plaintext);
        out.extend_from_slice(&self.entry[n - 16..]);
        out
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((seqno, data)) = input.split_first_chunk::<8>() else {
        return;
    };
    let seqno = u64::from_le_bytes(*seqno);
    let peeked = entry::peek_view(data);
    let Ok(view) = EntryView::parse(data, seqno) else {
        return;
    };
    assert_eq!(view.as_bytes(), data);
    assert_eq!(view.txid.seqno(), seqno);
    assert_eq!(peeked, Ok(view.txid.view()));
    let _ = view.leaf();
    let _ = view.governance_writes();
    let _ = view.signature();
    let _ = view.body(None);
    let Ok(body) = view.body(Some(&Identity)) else {
        return;
    };
    let v1 = view.format_version() == FORMAT_VERSION_1;
    // Application entries keep everything in the private section: `parse` refuses a public one.
    assert!(
        !v1 || !matches!(body, TxBody::Application(_)) || data[82..86] == [0, 0, 0, 0],
        "an application entry with a public section was accepted"
    );
    let mut reseal = Reseal {
        entry: data,
        aad_prefix: if v1 { 0 } else { 8 },
    };
    let encode = if v1 { entry::encode_v1 } else { entry::encode };
    let encoded = encode(
        view.txid,
        &body,
        &view.commit_evidence_digest,
        &view.claims_digest,
        &mut reseal,
    );
    assert_eq!(
        encoded, data,
        "decoded entry does not re-encode to its bytes: {body:?}"
    );
});
