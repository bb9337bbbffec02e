//! Encryption at rest: the ledger secret, the key-encryption key (KEK) that wraps it, and the
//! AES-256-GCM sealer for private entry sections.
//!
//! The ledger secret never touches disk in the clear: `keys/ledger_secret` holds it sealed
//! under the KEK. The KEK comes from a file or an environment variable chosen by the operator;
//! the embedded default is a KEK generated into `keys/kek` (mode 0600) beside the data, which
//! protects against leaked segment files but not against a leaked data directory. Operators
//! who need the latter keep the KEK elsewhere (`docs/FORMAT.md`, "Keys").
//!
//! Nonces are random (96 bits from the OS) rather than derived from the txid: after a crash the
//! unacknowledged tail is truncated and its seqnos are reused for different contents, and a
//! derived nonce would then repeat under the same key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ledger_core::entry::{Opener, SEAL_OVERHEAD, Sealer};
use ledger_core::evidence::CommitSecret;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const NONCE_LEN: usize = 12;
const WRAPPED_MAGIC: &[u8; 8] = b"CLEDGKEY";
/// Associated data binding a wrapped ledger secret to its purpose.
const WRAP_AAD: &[u8] = b"cledger/v1/ledger-secret";

/// Where the key-encryption key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KekSource {
    /// `keys/kek` inside the data directory, generated on first use (the embedded default).
    DataDir,
    /// A file holding 64 hex characters (surrounding whitespace ignored).
    File(PathBuf),
    /// An environment variable holding 64 hex characters.
    Env(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key-encryption key file {path}: {source}")]
    KekIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {0} is not set")]
    KekEnvMissing(String),
    #[error("the key-encryption key from {0} is not 64 hex characters")]
    KekMalformed(String),
    #[error("ledger secret file {path}: {source}")]
    SecretIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ledger secret file {0} is malformed")]
    SecretMalformed(PathBuf),
    #[error("the key-encryption key does not unwrap {0} (wrong key, or the file was altered)")]
    WrongKek(PathBuf),
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(out)
}

/// 32 fresh random bytes, e.g. the secret key of an application claim.
pub fn random_key() -> Result<[u8; 32], KeyError> {
    random_bytes()
}

/// A 32-byte AES-256 key with a redacted Debug.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    fn parse_hex(text: &str, origin: &str) -> Result<SecretKey, KeyError> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key)
            .map_err(|_| KeyError::KekMalformed(origin.to_owned()))?;
        Ok(SecretKey(key))
    }
}

/// Loads (or, for [`KekSource::DataDir`], creates) the key-encryption key.
pub fn load_kek(source: &KekSource, data_dir: &Path, create: bool) -> Result<SecretKey, KeyError> {
    match source {
        KekSource::Env(var) => {
            let value = std::env::var(var).map_err(|_| KeyError::KekEnvMissing(var.clone()))?;
            SecretKey::parse_hex(&value, &format!("${var}"))
        }
        KekSource::File(path) => read_kek_file(path),
        KekSource::DataDir => {
            let path = data_dir.join("keys").join("kek");
            if create && !path.exists() {
                let key = SecretKey(random_bytes()?);
                write_private_file(&path, hex::encode(key.0).as_bytes()).map_err(|source| {
                    KeyError::KekIo {
                        path: path.clone(),
                        source,
                    }
                })?;
                return Ok(key);
            }
            read_kek_file(&path)
        }
    }
}

fn read_kek_file(path: &Path) -> Result<SecretKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::KekIo {
        path: path.to_owned(),
        source,
    })?;
    SecretKey::parse_hex(&text, &path.display().to_string())
}

/// Writes a new file readable only by its owner, durably (file and directory fsync'd).
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("key files live in a directory");
    fs::create_dir_all(dir)?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::File::open(dir)?.sync_all()
}

/// The ledger secret: the AES key of private sections, and the root of the commit secret.
#[derive(Clone)]
pub struct LedgerSecret {
    cipher: Aes256Gcm,
    commit_secret: CommitSecret,
}

impl fmt::Debug for LedgerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LedgerSecret(<redacted>)")
    }
}

impl LedgerSecret {
    fn from_bytes(secret: &[u8; 32]) -> LedgerSecret {
        LedgerSecret {
            cipher: Aes256Gcm::new(secret.into()),
            commit_secret: CommitSecret::derive(secret),
        }
    }

    /// Generates a new ledger secret and stores it wrapped under `kek` at `path`.
    pub fn create(path: &Path, kek: &SecretKey) -> Result<LedgerSecret, KeyError> {
        let secret: [u8; 32] = random_bytes()?;
        let mut file = WRAPPED_MAGIC.to_vec();
        file.extend_from_slice(&seal(&Aes256Gcm::new((&kek.0).into()), WRAP_AAD, &secret)?);
        write_private_file(path, &file).map_err(|source| KeyError::SecretIo {
            path: path.to_owned(),
            source,
        })?;
        Ok(LedgerSecret::from_bytes(&secret))
    }

    /// Unwraps the ledger secret stored at `path`.
    pub fn load(path: &Path, kek: &SecretKey) -> Result<LedgerSecret, KeyError> {
        let file = fs::read(path).map_err(|source| KeyError::SecretIo {
            path: path.to_owned(),
            source,
        })?;
        let sealed = file
            .strip_prefix(WRAPPED_MAGIC.as_slice())
            .filter(|s| s.len() == 32 + SEAL_OVERHEAD)
            .ok_or_else(|| KeyError::SecretMalformed(path.to_owned()))?;
        let plain = open(&Aes256Gcm::new((&kek.0).into()), WRAP_AAD, sealed)
            .ok_or_else(|| KeyError::WrongKek(path.to_owned()))?;
        let secret: [u8; 32] = plain
            .try_into()
            .map_err(|_| KeyError::SecretMalformed(path.to_owned()))?;
        Ok(LedgerSecret::from_bytes(&secret))
    }

    pub fn commit_secret(&self) -> &CommitSecret {
        &self.commit_secret
    }

    /// A sealer for one entry. Drawing the nonce can fail only if the OS RNG fails.
    pub fn sealer(&self) -> Result<EntrySealer<'_>, KeyError> {
        Ok(EntrySealer {
            cipher: &self.cipher,
            nonce: random_bytes()?,
        })
    }
}

impl Opener for LedgerSecret {
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open(&self.cipher, aad, sealed)
    }
}

/// Seals exactly one private section with a nonce drawn when it was made.
pub struct EntrySealer<'a> {
    cipher: &'a Aes256Gcm,
    nonce: [u8; NONCE_LEN],
}

impl Sealer for EntrySealer<'_> {
    fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with_nonce(self.cipher, &self.nonce, aad, plaintext)
    }
}

fn seal(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    Ok(seal_with_nonce(cipher, &random_bytes()?, aad, plaintext))
}

fn seal_with_nonce(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(*nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&ciphertext);
    out
}

fn open(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_kek() {
        let dir = tempfile::tempdir().unwrap();
        let kek = load_kek(&KekSource::DataDir, dir.path(), true).unwrap();
        let path = dir.path().join("keys/ledger_secret");
        let secret = LedgerSecret::create(&path, &kek).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["keys/kek", "keys/ledger_secret"] {
                let mode = fs::metadata(dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        let again = LedgerSecret::load(
            &path,
            &load_kek(&KekSource::DataDir, dir.path(), false).unwrap(),
        )
        .unwrap();
        let mut sealer = secret.sealer().unwrap();
        let sealed = sealer.seal(b"aad", b"hello");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(again.open(b"aad", &sealed).as_deref(), Some(&b"hello"[..]));
        assert_eq!(again.open(b"aaX", &sealed), None);
        let other = SecretKey([1u8; 32]);
        assert!(matches!(
            LedgerSecret::load(&path, &other),
            Err(KeyError::WrongKek(_))
        ));
    }

    #[test]
    fn kek_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let hex_key = "11".repeat(32);
        let file = dir.path().join("kek.txt");
        fs::write(&file, format!("{hex_key}\n")).unwrap();
        assert_eq!(
            load_kek(&KekSource::File(file.clone()), dir.path(), false)
                .unwrap()
                .0,
            [0x11; 32]
        );
        fs::write(&file, "nothex").unwrap();
        assert!(matches!(
            load_kek(&KekSource::File(file), dir.path(), false),
            Err(KeyError::KekMalformed(_))
        ));
        assert!(matches!(
            load_kek(
                &KekSource::Env("CLEDGER_TEST_UNSET_KEK".into()),
                dir.path(),
                false
            ),
            Err(KeyError::KekEnvMissing(_))
        ));
    }
}
