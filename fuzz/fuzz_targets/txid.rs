//! Transaction ids (`view.seqno`) and commit evidence (`ce:view.seqno:hex`) parsed from
//! arbitrary text, as they arrive in URLs, query strings and receipts.
//!
//! Properties: parsing never panics; an accepted id has view and seqno >= 1 and its Display
//! form is exactly the input (one spelling per transaction); accepted commit evidence names
//! the same transaction as the id inside it.
#![no_main]

use ledger_core::TxId;
use ledger_core::evidence::CommitEvidence;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match TxId::parse(&text) {
        Ok(id) => {
            assert!(id.view() >= 1 && id.seqno() >= 1, "{id:?} from {text:?}");
            assert_eq!(id.to_string(), text, "not canonical");
            assert_eq!(text.parse::<TxId>(), Ok(id));
            assert_eq!(TxId::new(id.view(), id.seqno()), Some(id));
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
        }
    }

    let evidence_text = format!("ce:{text}");
    for candidate in [text.as_ref(), evidence_text.as_str()] {
        if let Ok(ce) = CommitEvidence::parse(candidate) {
            assert_eq!(ce.as_str(), candidate);
            let txid = ce.txid();
            let id_part = &candidate[3..candidate.len() - 65];
            assert_eq!(txid.to_string(), id_part);
        }
    }
});
