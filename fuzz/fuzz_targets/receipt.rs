//! Receipts parsed from arbitrary text (`/receipt` responses and bare receipts, camelCase or
//! snake_case) and verified against the fixed service certificates of the SDK vectors.
//!
//! Properties: parsing and verification never panic, and whatever verifies against a service
//! certificate proves exactly what that certificate's genuine vector proves (same transaction,
//! leaf and signed root, same node certificate): a mutation may change spelling (whitespace,
//! key case, hex case, PEM layout) but never what is proven.
#![no_main]

use ledger_core::receipt::{Receipt, ReceiptResponse, VerifiedReceipt, verify_receipt};
use ledger_core::x509::Cert;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

macro_rules! vector {
    ($name:literal) => {
        include_str!(concat!("../../crates/ledger-core/tests/vectors/", $name))
    };
}

struct Known {
    service_pem: &'static str,
    verified: VerifiedReceipt,
    node_cert_der: Vec<u8>,
}

fn known(receipt_json: &str, service_pem: &'static str) -> Known {
    let receipt = Receipt::from_json(receipt_json).expect("vector parses");
    let verified = verify_receipt(&receipt, service_pem, None).expect("vector verifies");
    Known {
        service_pem,
        verified,
        node_cert_der: Cert::from_pem(&receipt.cert).unwrap().der().to_vec(),
    }
}

static KNOWN: LazyLock<Vec<Known>> = LazyLock::new(|| {
    let response3: serde_json::Value =
        serde_json::from_str(vector!("sdk-receipt-3-response.json")).unwrap();
    vec![
        known(
            &response3["receipt"].to_string(),
            vector!("sdk-service-cert-3.pem"),
        ),
        known(
            vector!("sdk-receipt-1-snake-case.json"),
            vector!("sdk-service-cert-1.pem"),
        ),
        known(vector!("sdk-receipt-2.json"), vector!("sdk-service-cert-2.pem")),
    ]
});

fn check(receipt: &Receipt, claims: Option<&[ledger_core::claims::ApplicationClaim]>) {
    let _ = serde_json::to_string(receipt).unwrap();
    for known in KNOWN.iter() {
        if let Ok(verified) = verify_receipt(receipt, known.service_pem, claims) {
            assert_eq!(verified, known.verified, "a different receipt verified");
            let der = Cert::from_pem(&receipt.cert).unwrap().der().to_vec();
            assert_eq!(der, known.node_cert_der, "a different node certificate verified");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    LazyLock::force(&KNOWN);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(response) = serde_json::from_str::<ReceiptResponse>(text) {
        let _ = serde_json::to_string(&response).unwrap();
        if let Some(receipt) = &response.receipt {
            check(receipt, response.application_claims.as_deref());
            check(receipt, None);
        }
    }
    if let Ok(receipt) = Receipt::from_json(text) {
        check(&receipt, None);
    }
});
