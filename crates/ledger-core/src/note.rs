//! C2SP signed notes, checkpoints and witness cosignatures: the text the ledger publishes for
//! transparency-log witnesses, and what it gets back from them.
//!
//! - [`Note`]: a signed note (c2sp.org/signed-note): UTF-8 text with no control characters but
//!   newline, ending in a newline, then a blank line, then signature lines
//!   `— <key name> base64(key ID || signature)`. Signatures of keys a verifier does not know
//!   are kept (and written back out) but never trusted.
//! - [`Ed25519Signer`] / [`Ed25519Verifier`]: signature type `0x01`, the log's own signature
//!   on its checkpoints; keys are written as vkeys `<name>+<hex key ID>+<base64(type || key)>`.
//! - [`Checkpoint`]: the note text of c2sp.org/tlog-checkpoint (origin, decimal tree size,
//!   base64 RFC 6962 root, optional extension lines).
//! - [`Cosigner`] / [`CosignatureVerifier`]: `cosignature/v1` (c2sp.org/tlog-cosignature),
//!   type `0x04`: an Ed25519 signature over `cosignature/v1\ntime <t>\n` followed by the whole
//!   checkpoint text, extension lines included, carried as `key ID || u64 BE t || signature`.
//!
//! Keys come from 32-byte seeds the caller supplies: this crate has no randomness.

use crate::hash::{Hash32, sha256_concat};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use std::fmt;

/// What begins every signature line: an em dash (U+2014) and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Signature type of Ed25519 note signatures (c2sp.org/signed-note).
pub const TYPE_ED25519: u8 = 0x01;
/// Signature type of timestamped Ed25519 witness cosignatures (c2sp.org/tlog-cosignature).
pub const TYPE_COSIGNATURE_V1: u8 = 0x04;
/// The most signature lines a note may carry. The spec asks verifiers to accept at least 16
/// and to bound them; Go's `sumdb/note` allows 100, and so do we.
pub const MAX_SIGNATURES: usize = 100;
/// The most consistency proof lines, and so hashes, a witness request may carry (tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

const ED25519_SIGNATURE_LEN: usize = 64;
const COSIGNATURE_LEN: usize = 8 + ED25519_SIGNATURE_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("a note must be UTF-8")]
    NotUtf8,
    #[error("a note may hold no control character but newline; found U+{code:04X} at byte {at}")]
    ControlCharacter { code: u32, at: usize },
    #[error("note text must be non-empty and end with a newline")]
    TextNotTerminated,
    #[error("a signed note needs a blank line and at least one signature line after its text")]
    NoSignatures,
    #[error("a note may carry at most {max} signatures; this one has {count}")]
    TooManySignatures { count: usize, max: usize },
    #[error("signature line {line} is malformed: {reason}")]
    MalformedSignatureLine { line: usize, reason: &'static str },
    #[error("key name {0:?} is not allowed: it must be non-empty, without spaces or '+'")]
    BadKeyName(String),
    #[error("verifier key is malformed: {0}")]
    BadVerifierKey(&'static str),
    #[error("verifier key names key ID {stated:08x}, but its name and key give {computed:08x}")]
    KeyIdMismatch { stated: u32, computed: u32 },
    #[error("verifier key has signature type {found:#04x}; {expected:#04x} was expected")]
    WrongKeyType { expected: u8, found: u8 },
    #[error("the signature of {name} (key ID {key_id:08x}) does not verify")]
    BadSignature { name: String, key_id: u32 },
    #[error("no signature of a trusted key is on the note")]
    NoTrustedSignature,
    #[error("checkpoint is malformed: {0}")]
    BadCheckpoint(&'static str),
    #[error("cosignature timestamp {0} is above 2^63 - 1")]
    TimestampTooLarge(u64),
}

/// The ID of a key: the first four bytes, big-endian, of
/// `SHA-256(name || 0x0A || signature type || public key)`.
pub fn key_id(name: &str, signature_type: u8, public_key: &[u8]) -> u32 {
    let digest = sha256_concat(&[name.as_bytes(), b"\n", &[signature_type], public_key]);
    u32::from_be_bytes([digest.0[0], digest.0[1], digest.0[2], digest.0[3]])
}

/// Key names are non-empty and hold no Unicode space and no `+` (which separates the parts of
/// a vkey). Control characters are refused too: no note may contain them.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(NoteError::BadKeyName(name.to_owned()));
    }
    Ok(())
}

/// One signature line, decoded: the key's name and ID and the signature bytes after the ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// Parses `— <name> <base64>` (without the newline).
    pub fn parse_line(line: &str, number: usize) -> Result<NoteSignature, NoteError> {
        let bad = |reason| NoteError::MalformedSignatureLine {
            line: number,
            reason,
        };
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(bad("it does not start with an em dash and a space"))?;
        let (name, encoded) = rest
            .split_once(' ')
            .ok_or(bad("no space between key name and signature"))?;
        check_key_name(name).map_err(|_| bad("the key name is empty or holds a space or '+'"))?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| bad("the signature is not standard, padded base64"))?;
        if bytes.len() < 5 {
            return Err(bad("the signature is shorter than a key ID and one byte"));
        }
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            signature: bytes[4..].to_vec(),
        })
    }

    /// The line, newline included.
    pub fn line(&self) -> String {
        let mut bytes = self.key_id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(bytes))
    }
}

/// Checks the character rules every note (and note text) obeys.
fn check_characters(text: &str) -> Result<(), NoteError> {
    match text
        .char_indices()
        .find(|(_, c)| (*c as u32) < 0x20 && *c != '\n')
    {
        Some((at, c)) => Err(NoteError::ControlCharacter { code: c as u32, at }),
        None => Ok(()),
    }
}

/// Checks that `text` can be the text of a note: valid characters, non-empty, ending in a
/// newline.
pub fn check_text(text: &str) -> Result<(), NoteError> {
    check_characters(text)?;
    if !text.ends_with('\n') {
        return Err(NoteError::TextNotTerminated);
    }
    Ok(())
}

/// Something that can check note signatures of one key.
pub trait NoteVerifier {
    fn name(&self) -> &str;
    fn key_id(&self) -> u32;
    /// Whether `signature` (the bytes after the key ID) is this key's over `text`.
    fn verify(&self, text: &str, signature: &[u8]) -> bool;
}

/// A signed note: text and signature lines, in the order they were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// An unsigned note over `text`.
    pub fn new(text: impl Into<String>) -> Result<Note, NoteError> {
        let text = text.into();
        check_text(&text)?;
        Ok(Note {
            text,
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note: the text is everything up to the last blank line (its final
    /// newline included), signature lines follow it. Nothing is verified here.
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        let whole = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        check_characters(whole)?;
        if !whole.ends_with('\n') {
            return Err(NoteError::TextNotTerminated);
        }
        let split = whole.rfind("\n\n").ok_or(NoteError::NoSignatures)?;
        let (text, block) = (&whole[..split + 1], &whole[split + 2..]);
        if block.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let lines: Vec<&str> = block[..block.len() - 1].split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count: lines.len(),
                max: MAX_SIGNATURES,
            });
        }
        let text_lines = text.matches('\n').count();
        let signatures = lines
            .iter()
            .enumerate()
            .map(|(i, line)| NoteSignature::parse_line(line, text_lines + 2 + i))
            .collect::<Result<_, _>>()?;
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line (an identical line already there is not repeated).
    pub fn add_signature(&mut self, signature: NoteSignature) -> Result<(), NoteError> {
        if self.signatures.contains(&signature) {
            return Ok(());
        }
        if self.signatures.len() == MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count: MAX_SIGNATURES + 1,
                max: MAX_SIGNATURES,
            });
        }
        self.signatures.push(signature);
        Ok(())
    }

    /// Checks the note against the keys the caller trusts, as the spec has verifiers do:
    /// signatures of other keys (another name or another key ID) are ignored; one of a known
    /// key that does not verify rejects the whole note; at least one must verify. Returns the
    /// signatures that verified, in note order.
    pub fn verify(
        &self,
        verifiers: &[&dyn NoteVerifier],
    ) -> Result<Vec<&NoteSignature>, NoteError> {
        let mut verified = Vec::new();
        for signature in &self.signatures {
            let Some(verifier) = verifiers
                .iter()
                .find(|v| v.name() == signature.name && v.key_id() == signature.key_id)
            else {
                continue;
            };
            if !verifier.verify(&self.text, &signature.signature) {
                return Err(NoteError::BadSignature {
                    name: signature.name.clone(),
                    key_id: signature.key_id,
                });
            }
            verified.push(signature);
        }
        if verified.is_empty() {
            return Err(NoteError::NoTrustedSignature);
        }
        Ok(verified)
    }
}

impl fmt::Display for Note {
    /// The note as sent: text, blank line, signature lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for signature in &self.signatures {
            f.write_str(&signature.line())?;
        }
        Ok(())
    }
}

/// A parsed vkey `<name>+<hex key ID>+<base64(type || public key)>`.
struct VerifierKey {
    name: String,
    key_id: u32,
    signature_type: u8,
    public_key: Vec<u8>,
}

impl VerifierKey {
    fn parse(vkey: &str) -> Result<VerifierKey, NoteError> {
        // The name holds no '+', but the base64 may: split twice from the left.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadVerifierKey(
                "it needs three parts joined by '+'",
            ));
        };
        check_key_name(name)?;
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoteError::BadVerifierKey(
                "its key ID is not 8 hexadecimal digits",
            ));
        }
        let key_id = u32::from_str_radix(id, 16)
            .map_err(|_| NoteError::BadVerifierKey("its key ID is not hexadecimal"))?;
        let bytes = BASE64
            .decode(key)
            .map_err(|_| NoteError::BadVerifierKey("its key is not standard, padded base64"))?;
        let (&signature_type, public_key) = bytes
            .split_first()
            .ok_or(NoteError::BadVerifierKey("its key is empty"))?;
        let computed = self::key_id(name, signature_type, public_key);
        if computed != key_id {
            return Err(NoteError::KeyIdMismatch {
                stated: key_id,
                computed,
            });
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            key_id,
            signature_type,
            public_key: public_key.to_vec(),
        })
    }

    /// The Ed25519 key of a vkey of `expected` type.
    fn ed25519(self, expected: u8) -> Result<(String, u32, VerifyingKey), NoteError> {
        if self.signature_type != expected {
            return Err(NoteError::WrongKeyType {
                expected,
                found: self.signature_type,
            });
        }
        let bytes: [u8; 32] = self
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| NoteError::BadVerifierKey("an Ed25519 public key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| NoteError::BadVerifierKey("not an Ed25519 public key"))?;
        Ok((self.name, self.key_id, key))
    }
}

fn vkey_string(name: &str, key_id: u32, signature_type: u8, public_key: &[u8]) -> String {
    let mut bytes = vec![signature_type];
    bytes.extend_from_slice(public_key);
    format!("{name}+{key_id:08x}+{}", BASE64.encode(bytes))
}

/// The log's note signer (Ed25519, type `0x01`), from a 32-byte seed.
pub struct Ed25519Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl Ed25519Signer {
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Ed25519Signer, NoteError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Ed25519Signer {
            name: name.to_owned(),
            key_id: key_id(name, TYPE_ED25519, key.verifying_key().as_bytes()),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature line of `text` (which must be a valid note text).
    pub fn sign(&self, text: &str) -> Result<NoteSignature, NoteError> {
        check_text(text)?;
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        })
    }

    pub fn verifier(&self) -> Ed25519Verifier {
        Ed25519Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }
}

impl fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519Signer({})", self.verifier().vkey())
    }
}

/// Checks Ed25519 note signatures (type `0x01`) of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ed25519Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Ed25519Verifier {
    /// From a vkey of type `0x01`; its key ID must be the one its name and key give.
    pub fn from_vkey(vkey: &str) -> Result<Ed25519Verifier, NoteError> {
        let (name, key_id, key) = VerifierKey::parse(vkey)?.ed25519(TYPE_ED25519)?;
        Ok(Ed25519Verifier { name, key_id, key })
    }

    pub fn vkey(&self) -> String {
        vkey_string(&self.name, self.key_id, TYPE_ED25519, self.key.as_bytes())
    }
}

impl NoteVerifier for Ed25519Verifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &str, signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; ED25519_SIGNATURE_LEN]>::try_from(signature) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        self.key.verify_strict(text.as_bytes(), &signature).is_ok()
    }
}

/// The text of a checkpoint (c2sp.org/tlog-checkpoint): which log, how many leaves, the RFC
/// 6962 root of those leaves, and any extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash32,
    /// Opaque, non-empty lines after the root (the spec does not recommend them).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn new(origin: &str, size: u64, root: Hash32) -> Result<Checkpoint, NoteError> {
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        };
        checkpoint.check()?;
        Ok(checkpoint)
    }

    fn check(&self) -> Result<(), NoteError> {
        if self.origin.is_empty() {
            return Err(NoteError::BadCheckpoint("the origin line is empty"));
        }
        for line in std::iter::once(&self.origin).chain(&self.extensions) {
            if line.contains('\n') {
                return Err(NoteError::BadCheckpoint("a line holds a newline"));
            }
            check_characters(line)?;
        }
        if self.extensions.iter().any(String::is_empty) {
            return Err(NoteError::BadCheckpoint("an extension line is empty"));
        }
        Ok(())
    }

    /// The note text: origin, size, root and extension lines, each ending in a newline.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root.0)
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint's note text (signatures already split off: [`Note::text`]).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        check_text(text)?;
        let mut lines = text[..text.len() - 1].split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(NoteError::BadCheckpoint("it has fewer than three lines"));
        };
        let size = parse_decimal(size).ok_or(NoteError::BadCheckpoint(
            "the size is not a decimal u64 without leading zeros",
        ))?;
        let root = BASE64
            .decode(root)
            .ok()
            .and_then(|bytes| Hash32::from_slice(&bytes))
            .ok_or(NoteError::BadCheckpoint(
                "the root is not the base64 of 32 bytes",
            ))?;
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: lines.map(str::to_owned).collect(),
        };
        checkpoint.check()?;
        Ok(checkpoint)
    }
}

/// ASCII decimal with no leading zeros (but `0` itself), as sizes and timestamps are written.
pub fn parse_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

/// The message a `cosignature/v1` signs: two header lines, then the whole checkpoint text
/// (extension lines included).
pub fn cosignature_message(timestamp: u64, checkpoint_text: &str) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}")
}

/// A witness's cosigner (timestamped Ed25519, type `0x04`), from a 32-byte seed.
pub struct Cosigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl Cosigner {
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Cosigner, NoteError> {
        check_key_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Cosigner {
            name: name.to_owned(),
            key_id: key_id(name, TYPE_COSIGNATURE_V1, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// The cosignature of a checkpoint's text at `timestamp` (POSIX seconds).
    pub fn cosign(
        &self,
        checkpoint_text: &str,
        timestamp: u64,
    ) -> Result<NoteSignature, NoteError> {
        check_text(checkpoint_text)?;
        if timestamp > i64::MAX as u64 {
            return Err(NoteError::TimestampTooLarge(timestamp));
        }
        let message = cosignature_message(timestamp, checkpoint_text);
        let mut signature = timestamp.to_be_bytes().to_vec();
        signature.extend_from_slice(&self.key.sign(message.as_bytes()).to_bytes());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature,
        })
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }
}

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cosigner({})", self.verifier().vkey())
    }
}

/// Checks a witness's `cosignature/v1` signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// From a vkey of type `0x04`.
    pub fn from_vkey(vkey: &str) -> Result<CosignatureVerifier, NoteError> {
        let (name, key_id, key) = VerifierKey::parse(vkey)?.ed25519(TYPE_COSIGNATURE_V1)?;
        Ok(CosignatureVerifier { name, key_id, key })
    }

    pub fn vkey(&self) -> String {
        vkey_string(
            &self.name,
            self.key_id,
            TYPE_COSIGNATURE_V1,
            self.key.as_bytes(),
        )
    }

    /// The timestamp a cosignature carries (not checked against anything).
    pub fn timestamp(signature: &NoteSignature) -> Option<u64> {
        if signature.signature.len() != COSIGNATURE_LEN {
            return None;
        }
        let bytes: [u8; 8] = signature.signature[..8].try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    }
}

impl NoteVerifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &str, signature: &[u8]) -> bool {
        if signature.len() != COSIGNATURE_LEN {
            return false;
        }
        let (time, sig) = signature.split_at(8);
        let timestamp = u64::from_be_bytes(time.try_into().expect("8 bytes"));
        if timestamp > i64::MAX as u64 {
            return false;
        }
        let Ok(sig) = <[u8; ED25519_SIGNATURE_LEN]>::try_from(sig) else {
            return false;
        };
        let message = cosignature_message(timestamp, text);
        self.key
            .verify_strict(
                message.as_bytes(),
                &ed25519_dalek::Signature::from_bytes(&sig),
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // c2sp.org/signed-note, "Verifier keys", example (also in the published vectors of other
    // implementations): a vkey and a note it signed.
    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    // golang.org/x/mod/sumdb/note's documented example: its signer key
    // `PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz`
    // is 0x01 || the seed below; Ed25519 is deterministic, so we must sign byte for byte alike.
    const GO_SEED_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_SIGNATURE_LINE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_seed() -> [u8; 32] {
        let bytes = BASE64.decode(GO_SEED_B64).unwrap();
        assert_eq!(bytes[0], TYPE_ED25519);
        bytes[1..].try_into().unwrap()
    }

    #[test]
    fn the_spec_example_parses_and_verifies() {
        let verifier = Ed25519Verifier::from_vkey(SPEC_VKEY).unwrap();
        assert_eq!(verifier.vkey(), SPEC_VKEY);
        assert_eq!(verifier.key_id(), 0x530d_903a);
        let note = Note::parse(SPEC_NOTE.as_bytes()).unwrap();
        assert_eq!(note.text(), "This is an example message.\n");
        assert_eq!(note.to_string(), SPEC_NOTE);
        let verified = note.verify(&[&verifier]).unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(verified[0].name, "example.com/foo");

        let mut tampered = SPEC_NOTE.replace("example message", "example massage");
        assert_eq!(
            Note::parse(tampered.as_bytes())
                .unwrap()
                .verify(&[&verifier]),
            Err(NoteError::BadSignature {
                name: "example.com/foo".into(),
                key_id: 0x530d_903a
            })
        );
        tampered = SPEC_VKEY.replace("530d903a", "530d903b");
        assert!(matches!(
            Ed25519Verifier::from_vkey(&tampered),
            Err(NoteError::KeyIdMismatch {
                stated: 0x530d_903b,
                computed: 0x530d_903a
            })
        ));
    }

    #[test]
    fn signing_reproduces_go_sumdb_note_byte_for_byte() {
        let signer = Ed25519Signer::from_seed("PeterNeumann", &go_seed()).unwrap();
        assert_eq!(signer.key_id(), 0xc74f_20a3);
        assert_eq!(signer.verifier().vkey(), GO_VKEY);
        let mut note = Note::new(GO_TEXT).unwrap();
        note.add_signature(signer.sign(GO_TEXT).unwrap()).unwrap();
        assert_eq!(note.to_string(), format!("{GO_TEXT}\n{GO_SIGNATURE_LINE}"));
        let verifier = Ed25519Verifier::from_vkey(GO_VKEY).unwrap();
        assert!(note.verify(&[&verifier]).is_ok());
    }

    #[test]
    fn unknown_signatures_are_kept_and_ignored() {
        let signer = Ed25519Signer::from_seed("PeterNeumann", &go_seed()).unwrap();
        let spec = Note::parse(SPEC_NOTE.as_bytes()).unwrap();
        let mut note = Note::new(GO_TEXT).unwrap();
        // A signature of another key (the spec's), then ours.
        note.add_signature(spec.signatures()[0].clone()).unwrap();
        note.add_signature(signer.sign(GO_TEXT).unwrap()).unwrap();
        let text = note.to_string();
        let parsed = Note::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.signatures().len(), 2);
        assert_eq!(parsed.to_string(), text);
        let verified = parsed.verify(&[&signer.verifier()]).unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(verified[0].name, "PeterNeumann");
        // Only unknown keys: rejected.
        let spec_verifier = Ed25519Verifier::from_vkey(SPEC_VKEY).unwrap();
        let only_unknown = Note::parse(SPEC_NOTE.as_bytes()).unwrap();
        assert_eq!(
            only_unknown.verify(&[&signer.verifier()]),
            Err(NoteError::NoTrustedSignature)
        );
        // Same name, other key ID: not ours, ignored (not a failure).
        let other = Ed25519Signer::from_seed("example.com/foo", &[7; 32]).unwrap();
        assert_eq!(
            only_unknown.verify(&[&other.verifier()]),
            Err(NoteError::NoTrustedSignature)
        );
        assert!(
            only_unknown
                .verify(&[&other.verifier(), &spec_verifier])
                .is_ok()
        );
    }

    #[test]
    fn malformed_notes_are_refused() {
        let cases: &[(&[u8], NoteError)] = &[
            (b"\xff\n\n", NoteError::NotUtf8),
            (
                "a\tb\n\n\u{2014} k AAAAAAA=\n".as_bytes(),
                NoteError::ControlCharacter { code: 9, at: 1 },
            ),
            (
                "text\n\n\u{2014} k AAAAAAA=".as_bytes(),
                NoteError::TextNotTerminated,
            ),
            (b"text\n", NoteError::NoSignatures),
            (b"text\n\n", NoteError::NoSignatures),
        ];
        for (bytes, error) in cases {
            assert_eq!(Note::parse(bytes).as_ref(), Err(error), "{bytes:?}");
        }
        for line in [
            "- k AAAAAAA=",
            "\u{2014} kAAAAAAA=",
            "\u{2014}  AAAAAAA=",
            "\u{2014} k+1 AAAAAAA=",
            "\u{2014} k AAAA",
            "\u{2014} k AAAAAAA",
            "\u{2014} k not*base64",
            "\u{2014} k AAAAAAA= trailing",
        ] {
            let note = format!("text\n\n{line}\n");
            assert!(
                matches!(
                    Note::parse(note.as_bytes()),
                    Err(NoteError::MalformedSignatureLine { line: 3, .. })
                ),
                "{line}"
            );
        }
        let many = format!(
            "t\n\n{}",
            "\u{2014} k AAAAAAA=\n".repeat(MAX_SIGNATURES + 1)
        );
        assert!(matches!(
            Note::parse(many.as_bytes()),
            Err(NoteError::TooManySignatures { .. })
        ));
        // The text may hold blank lines: the last one separates the signatures.
        let note = Note::parse("a\n\nb\n\n\u{2014} k AAAAAAA=\n".as_bytes()).unwrap();
        assert_eq!(note.text(), "a\n\nb\n");
        assert_eq!(Note::new("no newline"), Err(NoteError::TextNotTerminated));
        assert_eq!(Note::new(""), Err(NoteError::TextNotTerminated));
        for name in ["", "a b", "a+b", "a\u{2003}b", "a\nb"] {
            assert!(
                Ed25519Signer::from_seed(name, &[1; 32]).is_err(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn vkeys_are_checked() {
        for bad in [
            "example.com/foo",
            "example.com/foo+530d903a",
            "example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
            "example.com/foo+530d903a+not base64",
            "example.com/foo+530d903a+",
            "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        ] {
            assert!(Ed25519Verifier::from_vkey(bad).is_err(), "{bad}");
        }
        // A cosignature vkey is not a note vkey, and the other way round.
        let cosigner = Cosigner::from_seed("witness.example/w1", &[3; 32]).unwrap();
        let vkey = cosigner.verifier().vkey();
        assert!(matches!(
            Ed25519Verifier::from_vkey(&vkey),
            Err(NoteError::WrongKeyType {
                expected: TYPE_ED25519,
                found: TYPE_COSIGNATURE_V1
            })
        ));
        assert!(CosignatureVerifier::from_vkey(SPEC_VKEY).is_err());
        assert_eq!(
            CosignatureVerifier::from_vkey(&vkey).unwrap(),
            cosigner.verifier()
        );
        // The key ID covers the type: the same key has different IDs as signer and cosigner.
        let signer = Ed25519Signer::from_seed("witness.example/w1", &[3; 32]).unwrap();
        assert_ne!(signer.key_id(), cosigner.verifier().key_id());
    }

    // c2sp.org/tlog-checkpoint's example checkpoint text.
    const SPEC_CHECKPOINT: &str =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    #[test]
    fn checkpoints_round_trip_and_refuse_malformed_text() {
        let checkpoint = Checkpoint::parse(SPEC_CHECKPOINT).unwrap();
        assert_eq!(checkpoint.origin, "example.com/behind-the-sofa");
        assert_eq!(checkpoint.size, 20_852_163);
        assert!(checkpoint.extensions.is_empty());
        assert_eq!(checkpoint.text(), SPEC_CHECKPOINT);
        let with_ext = format!("{SPEC_CHECKPOINT}ext one\nx\n");
        let parsed = Checkpoint::parse(&with_ext).unwrap();
        assert_eq!(parsed.extensions, ["ext one", "x"]);
        assert_eq!(parsed.text(), with_ext);

        for bad in [
            "",
            "origin\n5\n",
            "\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n05\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n+5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n18446744073709551616\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2=\n",
            "o\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",
            "o\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
            "o\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("00"), None);
        assert!(Checkpoint::new("", 1, Hash32::ZERO).is_err());
        assert!(Checkpoint::new("a\nb", 1, Hash32::ZERO).is_err());
    }

    #[test]
    fn cosignatures_sign_the_spec_message_and_cover_extension_lines() {
        let cosigner = Cosigner::from_seed("witness.example.com/w1", &[9; 32]).unwrap();
        let verifier = cosigner.verifier();
        let timestamp = 1_679_315_147;
        // The message of the spec's example, byte for byte.
        assert_eq!(
            cosignature_message(timestamp, SPEC_CHECKPOINT),
            "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
        let signature = cosigner.cosign(SPEC_CHECKPOINT, timestamp).unwrap();
        assert_eq!(signature.signature.len(), 72);
        assert_eq!(CosignatureVerifier::timestamp(&signature), Some(timestamp));
        // It is an Ed25519 signature of exactly that message under the cosigner's key.
        let plain = Ed25519Verifier {
            name: verifier.name.clone(),
            key_id: verifier.key_id,
            key: verifier.key,
        };
        assert!(plain.verify(
            &cosignature_message(timestamp, SPEC_CHECKPOINT),
            &signature.signature[8..]
        ));

        let mut note = Note::new(SPEC_CHECKPOINT).unwrap();
        note.add_signature(signature.clone()).unwrap();
        let note = Note::parse(note.to_string().as_bytes()).unwrap();
        assert!(note.verify(&[&verifier]).is_ok());
        // Another time in the line: refused.
        let mut moved = signature.clone();
        moved.signature[7] ^= 1;
        assert!(!verifier.verify(SPEC_CHECKPOINT, &moved.signature));
        // Extension lines are covered.
        let with_ext = format!("{SPEC_CHECKPOINT}extension\n");
        let on_ext = cosigner.cosign(&with_ext, timestamp).unwrap();
        assert!(verifier.verify(&with_ext, &on_ext.signature));
        assert!(!verifier.verify(SPEC_CHECKPOINT, &on_ext.signature));
        assert!(!verifier.verify(&format!("{SPEC_CHECKPOINT}extensiom\n"), &on_ext.signature));
        assert_eq!(
            cosigner.cosign(SPEC_CHECKPOINT, 1 << 63),
            Err(NoteError::TimestampTooLarge(1 << 63))
        );
        assert!(!verifier.verify(SPEC_CHECKPOINT, &signature.signature[..71]));
    }

    /// transparency-dev/formats `note/note_cosigv1_test.go` (`TestCoSigV1Timestamp`): a
    /// cosignature line's base64 whose timestamp is 1727964367; and a type-0x01 signature,
    /// which is too short to be a cosignature.
    #[test]
    fn cosignature_timestamps_of_the_go_vectors() {
        let line = "\u{2014} w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==";
        let signature = NoteSignature::parse_line(line, 1).unwrap();
        assert_eq!(signature.key_id, 0x6468_46b9);
        assert_eq!(
            CosignatureVerifier::timestamp(&signature),
            Some(1_727_964_367)
        );
        let line = "\u{2014} w eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY=";
        let signature = NoteSignature::parse_line(line, 1).unwrap();
        assert_eq!(CosignatureVerifier::timestamp(&signature), None);
        // The note form of the cosigner key in the same file: type 0x04, its ID checks out.
        let vkey = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";
        assert_eq!(CosignatureVerifier::from_vkey(vkey).unwrap().vkey(), vkey);
    }
}
