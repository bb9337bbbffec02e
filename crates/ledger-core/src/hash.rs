//! SHA-256 digests: the one hash of the ledger (CCF uses plain SHA-256 everywhere, with no
//! domain-separation prefixes), and their lowercase-hex text form used on the wire.

use sha2::{Digest as _, Sha256};
use std::fmt;

/// A 32-byte SHA-256 digest. Displayed and serialized as 64 lowercase hex characters, which is
/// what receipts carry and what the Python SDK compares claims digests against.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// All zeros: leaf 0 of every ledger tree, and the claims digest of a transaction without claims.
    pub const ZERO: Hash32 = Hash32([0u8; 32]);

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 hex characters (either case).
    pub fn from_hex(text: &str) -> Result<Self, HexError> {
        if text.len() != 64 {
            return Err(HexError::Length(text.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|_| HexError::NotHex)?;
        Ok(Hash32(out))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Hash32)
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", self.to_hex())
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("expected 64 hex characters, got {0}")]
    Length(usize),
    #[error("not a hex string")]
    NotHex,
}

/// SHA-256 of one byte string.
pub fn sha256(data: &[u8]) -> Hash32 {
    Hash32(Sha256::digest(data).into())
}

/// SHA-256 of several byte strings concatenated, without building the concatenation.
pub fn sha256_concat(parts: &[&[u8]]) -> Hash32 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    Hash32(h.finalize().into())
}

/// An interior Merkle node: `SHA256(left || right)`, unprefixed, as CCF's history tree computes it.
pub fn hash_children(left: &Hash32, right: &Hash32) -> Hash32 {
    sha256_concat(&[&left.0, &right.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_strictness() {
        let h = sha256(b"abc");
        assert_eq!(
            h.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Hash32::from_hex(&h.to_hex()).unwrap(), h);
        assert_eq!(Hash32::from_hex(&h.to_hex().to_uppercase()).unwrap(), h);
        assert_eq!(Hash32::from_hex("ab"), Err(HexError::Length(2)));
        assert_eq!(Hash32::from_hex(&"zz".repeat(32)), Err(HexError::NotHex));
    }

    #[test]
    fn concat_equals_hash_of_concatenation() {
        assert_eq!(sha256_concat(&[b"ab", b"c"]), sha256(b"abc"));
        let (a, b) = (sha256(b"a"), sha256(b"b"));
        let mut joined = a.0.to_vec();
        joined.extend_from_slice(&b.0);
        assert_eq!(hash_children(&a, &b), sha256(&joined));
    }
}
