//! Transaction ids `view.seqno`: the identity of every ledger transaction.
//!
//! The seqno is global and dense (every transaction, including signatures and governance
//! writes, takes the next one); the view is the consensus term the transaction was made in.
//! Seqno 0 is the virtual all-zero leaf of the Merkle tree and never names a transaction, and
//! views start at 1, so both parts are at least 1. The text form is canonical: two decimal
//! numbers without signs, spaces or leading zeros. Commit evidence and receipts embed it, so
//! one transaction must have exactly one spelling.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId {
    // Field order gives the derived ordering: by view, then seqno, as CCF compares ids.
    view: u64,
    seqno: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxIdError {
    #[error("a transaction id is `<view>.<seqno>`, e.g. `2.15`; `{0}` has no `.`")]
    MissingSeparator(String),
    #[error("`{0}` is not a transaction id: view and seqno must be decimal digits only")]
    NotDigits(String),
    #[error("`{0}` is not a transaction id: numbers must not have leading zeros")]
    LeadingZero(String),
    #[error("`{0}` is not a transaction id: a number is larger than 2^64-1")]
    Overflow(String),
    #[error("`{0}` is not a transaction id: view and seqno start at 1")]
    Zero(String),
}

impl TxId {
    /// Returns `None` when either part is 0 (see the module docs).
    pub const fn new(view: u64, seqno: u64) -> Option<TxId> {
        if view == 0 || seqno == 0 {
            None
        } else {
            Some(TxId { view, seqno })
        }
    }

    pub const fn view(self) -> u64 {
        self.view
    }

    pub const fn seqno(self) -> u64 {
        self.seqno
    }

    pub fn parse(text: &str) -> Result<TxId, TxIdError> {
        let (view, seqno) = text
            .split_once('.')
            .ok_or_else(|| TxIdError::MissingSeparator(text.to_owned()))?;
        let view = parse_part(view, text)?;
        let seqno = parse_part(seqno, text)?;
        TxId::new(view, seqno).ok_or_else(|| TxIdError::Zero(text.to_owned()))
    }
}

fn parse_part(part: &str, whole: &str) -> Result<u64, TxIdError> {
    // u64::from_str would accept a leading `+`; check the characters ourselves.
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TxIdError::NotDigits(whole.to_owned()));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(TxIdError::LeadingZero(whole.to_owned()));
    }
    part.parse::<u64>()
        .map_err(|_| TxIdError::Overflow(whole.to_owned()))
}

impl FromStr for TxId {
    type Err = TxIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TxId::parse(s)
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.view, self.seqno)
    }
}

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_canonical_ids() {
        let id = TxId::parse("2.15").unwrap();
        assert_eq!((id.view(), id.seqno()), (2, 15));
        assert_eq!(id.to_string(), "2.15");
        let max = format!("{}.{}", u64::MAX, u64::MAX);
        assert_eq!(TxId::parse(&max).unwrap().to_string(), max);
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            ".",
            "2.",
            ".15",
            "2",
            "2.15.3",
            "+2.15",
            "2.+15",
            "-2.15",
            "2.-15",
            " 2.15",
            "2.15 ",
            "2 .15",
            "2. 15",
            "2,15",
            "0x2.15",
            "2.1e3",
            "٢.١٥",
            "2.15\n",
            "02.15",
            "2.015",
            "0.15",
            "2.0",
            "0.0",
            "18446744073709551616.1",
            "1.18446744073709551616",
        ] {
            assert!(TxId::parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(matches!(TxId::parse("2.-1"), Err(TxIdError::NotDigits(_))));
        assert!(matches!(
            TxId::parse("99999999999999999999.1"),
            Err(TxIdError::Overflow(_))
        ));
        assert!(matches!(
            TxId::parse("21"),
            Err(TxIdError::MissingSeparator(_))
        ));
    }

    #[test]
    fn orders_by_view_then_seqno() {
        let a = TxId::parse("2.18").unwrap();
        let b = TxId::parse("3.18").unwrap();
        let c = TxId::parse("2.19").unwrap();
        assert!(a < c && c < b);
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(view in 1u64.., seqno in 1u64..) {
            let id = TxId::new(view, seqno).unwrap();
            prop_assert_eq!(TxId::parse(&id.to_string()), Ok(id));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = TxId::parse(&s);
        }
    }
}
