//! Encryption at rest: the ledger secret, the key-encryption key (KEK) that wraps it, the
//! AES-256-GCM sealer for private entry sections, and the data key versions that bound how
//! much one key seals.
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
//!
//! Random nonces make the number of encryptions under one key the thing to bound (NIST SP
//! 800-38D §8.3: at most 2^32 with random 96-bit IVs). So the data key is rotated, as CCF
//! rotates ledger secrets: the writer records a new 32-byte secret in a governance transaction
//! (table [`LEDGER_SECRETS`]), sealed under the previous version's key, and the new key seals
//! every private section from the next seqno on ([`Sealing`], the writer's side, rotates when
//! its budget is spent). Readers pick the key by seqno from the [`KeyRing`], which recovery
//! rebuilds by scanning those transactions. Only version 0 lives outside the ledger (in
//! `keys/ledger_secret`), and the commit secret stays derived from it, so receipts never
//! depend on the key version (`docs/FORMAT.md` §5.1).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ledger_core::TxId;
pub use ledger_core::entry::tables::LEDGER_SECRETS;
use ledger_core::entry::{
    DecodeError, EntryView, Opener, SEAL_OVERHEAD, Sealer, TableWrite, TxKind,
};
use ledger_core::evidence::CommitSecret;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

const NONCE_LEN: usize = 12;
const WRAPPED_MAGIC: &[u8; 8] = b"CLEDGKEY";
/// Associated data binding a wrapped ledger secret to its purpose.
const WRAP_AAD: &[u8] = b"cledger/v1/ledger-secret";
/// Start of the associated data of a rotation record, followed by the key version and the
/// seqno of the rotation transaction (u64 little-endian each).
const ROTATION_AAD: &[u8] = b"cledger/v1/ledger-secret-rotation\0";
/// Size of a rotation record's value: a 32-byte secret, sealed.
pub const ROTATION_RECORD_LEN: usize = 32 + SEAL_OVERHEAD;
/// Default budget of seals per data key, `StoreConfig::key_rotation_every`: 2^24. With random
/// 96-bit nonces, n seals under one key collide with probability about n²/2^97, so 2^-49 per
/// key, and over a whole ledger of N seals about N·2^24/2^97: below 2^-32 (the bound NIST's
/// 2^32 limit keeps for a single key) for any ledger under 2^41 entries. A rotation costs one
/// small governance transaction per 16.7 million entries.
pub const DEFAULT_KEY_ROTATION_EVERY: u64 = 1 << 24;
/// A lower bound on the bytes of a frame that holds a sealed entry (at least 76: 8 of frame
/// header, 37 of entry header, 28 of nonce and tag, 3 of plaintext fields), to bound how many
/// seals a torn tail cut at recovery may have held.
const MIN_SEALED_FRAME: u64 = 64;

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

/// Why a ledger secret rotation record (a write to [`LEDGER_SECRETS`]) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("the transaction's public section does not parse: {0}")]
    Malformed(DecodeError),
    #[error("a ledger secret rotation must be the only write of its transaction, not one of {0}")]
    NotAlone(usize),
    #[error("a ledger secret rotation cannot be removed")]
    Removed,
    #[error("it names key version {found:?}, but the next version is {expected}")]
    Version { expected: u64, found: String },
    #[error("its sealed secret is {0} bytes, not {ROTATION_RECORD_LEN}")]
    Length(usize),
    #[error(
        "its new secret does not open under key version {0} (a different ledger secret, or the record was altered)"
    )]
    Unseal(u64),
    #[error("it is at seqno {seqno}, before key version {version} applies (seqno {first})")]
    OutOfOrder {
        seqno: u64,
        version: u64,
        first: u64,
    },
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

/// One version of the data key: the AES-256-GCM key of private sections.
pub struct DataKey {
    cipher: Aes256Gcm,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    fn from_bytes(secret: &[u8; 32]) -> DataKey {
        DataKey {
            cipher: Aes256Gcm::new(secret.into()),
        }
    }

    /// A sealer for one entry. Drawing the nonce can fail only if the OS RNG fails.
    pub fn sealer(&self) -> Result<EntrySealer<'_>, KeyError> {
        Ok(EntrySealer {
            cipher: &self.cipher,
            nonce: random_bytes()?,
        })
    }
}

impl Opener for DataKey {
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open(&self.cipher, aad, sealed)
    }
}

/// The ledger secret: the AES key of private sections, and the root of the commit secret.
#[derive(Clone)]
pub struct LedgerSecret {
    key: Arc<DataKey>,
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
            key: Arc::new(DataKey::from_bytes(secret)),
            commit_secret: CommitSecret::derive(secret),
        }
    }

    /// Generates a new ledger secret and stores it wrapped under `kek` at `path`.
    pub fn create(path: &Path, kek: &SecretKey) -> Result<LedgerSecret, KeyError> {
        let secret: [u8; 32] = random_bytes()?;
        LedgerSecret::install(path, kek, &secret)
    }

    /// Stores `secret`, which the service handed to this node when it joined (over the
    /// authenticated join channel), wrapped under this node's own `kek` at `path`.
    pub fn install(
        path: &Path,
        kek: &SecretKey,
        secret: &[u8; 32],
    ) -> Result<LedgerSecret, KeyError> {
        let secret = *secret;
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
        Ok(LedgerSecret::from_bytes(&LedgerSecret::export(path, kek)?))
    }

    /// The raw ledger secret stored at `path`: what a node joining the service receives (over
    /// the authenticated join channel) so that it can check and read the ledger.
    pub fn export(path: &Path, kek: &SecretKey) -> Result<[u8; 32], KeyError> {
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
        plain
            .try_into()
            .map_err(|_| KeyError::SecretMalformed(path.to_owned()))
    }

    pub fn commit_secret(&self) -> &CommitSecret {
        &self.commit_secret
    }

    /// A sealer for one entry under this secret's own key (key version 0 when it is the
    /// secret of `keys/ledger_secret`). Drawing the nonce can fail only if the OS RNG fails.
    pub fn sealer(&self) -> Result<EntrySealer<'_>, KeyError> {
        self.key.sealer()
    }
}

impl Opener for LedgerSecret {
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        self.key.open(aad, sealed)
    }
}

/// A data key version and the first seqno whose private section it seals.
#[derive(Clone)]
struct KeyVersion {
    first_seqno: u64,
    key: Arc<DataKey>,
}

/// Every data key version of a ledger, by the seqno from which each applies, shared by the
/// writer (which adds a version once its rotation is durable) and the readers (which open an
/// entry with the key of its seqno). Version 0 is the ledger secret of `keys/ledger_secret`
/// and applies from seqno 1; version `v ≥ 1` applies from the seqno after the transaction that
/// recorded it. The commit secret is version 0's, whatever the version: receipts and commit
/// evidence do not change when the data key does.
pub struct KeyRing {
    commit_secret: CommitSecret,
    versions: RwLock<Vec<KeyVersion>>,
    /// Seals under the newest version that the ledger does not hold (a torn tail cut at
    /// open); the writer counts them against that version's budget.
    discarded: AtomicU64,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("first_seqnos", &self.first_seqnos())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A ring holding only version 0, `first`.
    pub fn new(first: LedgerSecret) -> KeyRing {
        KeyRing {
            commit_secret: first.commit_secret,
            versions: RwLock::new(vec![KeyVersion {
                first_seqno: 1,
                key: first.key,
            }]),
            discarded: Default::default(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<KeyVersion>> {
        // The lock guards a Vec that is only pushed to or truncated: no holder can leave it
        // half-changed, so a poisoned lock is still consistent.
        self.versions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<KeyVersion>> {
        self.versions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The commit secret (always version 0's).
    pub fn commit_secret(&self) -> &CommitSecret {
        &self.commit_secret
    }

    /// The key that sealed (or seals) the private section of the entry at `seqno`.
    pub fn opener(&self, seqno: u64) -> Arc<DataKey> {
        let versions = self.read();
        let later = versions.partition_point(|v| v.first_seqno <= seqno);
        // Version 0 applies from seqno 1 and there is no seqno 0 entry: clamp to version 0.
        versions[later.saturating_sub(1)].key.clone()
    }

    /// The first seqno of each key version, version 0 first (its first seqno is 1).
    pub fn first_seqnos(&self) -> Vec<u64> {
        self.read().iter().map(|v| v.first_seqno).collect()
    }

    /// Follows the governance transaction `view` (at `txid`): when it records a rotation, the
    /// new secret is unsealed with the newest key and added as the next version, applying from
    /// the seqno after `txid`. Returns whether it was a rotation. Transactions must be fed in
    /// seqno order; anything but a well-formed rotation that opens under the newest key is
    /// refused and leaves the ring unchanged.
    pub fn observe(&self, txid: TxId, view: &EntryView<'_>) -> Result<bool, RotationError> {
        if view.kind != TxKind::Governance {
            return Ok(false);
        }
        let writes = view.governance_writes().map_err(RotationError::Malformed)?;
        let mut versions = self.write();
        let version = versions.len() as u64;
        let Some(record) = rotation_record(&writes, version)? else {
            return Ok(false);
        };
        let newest = versions.last().expect("version 0 is always present");
        let seqno = txid.seqno();
        if seqno < newest.first_seqno {
            return Err(RotationError::OutOfOrder {
                seqno,
                version: version - 1,
                first: newest.first_seqno,
            });
        }
        let secret: [u8; 32] = open(&newest.key.cipher, &rotation_aad(version, seqno), record)
            .and_then(|plain| plain.try_into().ok())
            .ok_or(RotationError::Unseal(version - 1))?;
        versions.push(KeyVersion {
            first_seqno: seqno + 1,
            key: Arc::new(DataKey::from_bytes(&secret)),
        });
        self.discarded.store(0, Ordering::Relaxed);
        Ok(true)
    }

    /// Forgets the versions recorded by transactions after `seqno` (a suffix of the ledger
    /// that was cut off): afterwards the ring is what a scan of seqnos `1..=seqno` builds.
    pub fn truncate_after(&self, seqno: u64) {
        let mut versions = self.write();
        let keep = versions
            .partition_point(|v| v.first_seqno <= seqno.saturating_add(1))
            .max(1);
        if keep < versions.len() {
            versions.truncate(keep);
            self.discarded.store(0, Ordering::Relaxed);
        }
    }

    /// Counts the seals a torn tail of `bytes` bytes, cut off at open, may have held against
    /// the newest version's budget: a cut frame's ciphertext may have been seen on disk, and its
    /// seqno will be sealed again.
    pub fn charge_torn_tail(&self, bytes: u64) {
        self.discarded
            .fetch_add(bytes.div_ceil(MIN_SEALED_FRAME), Ordering::Relaxed);
    }

    /// The writer's sealing state, starting from the newest version, with `budget` seals per
    /// key (at least 2: an entry and the record of the next key).
    pub(crate) fn sealing(&self, budget: u64) -> Sealing {
        let versions = self.read();
        let newest = versions.last().expect("version 0 is always present");
        Sealing {
            version: versions.len() as u64 - 1,
            first_seqno: newest.first_seqno,
            key: newest.key.clone(),
            discarded: self.discarded.load(Ordering::Relaxed),
            budget: budget.max(2),
            made: Vec::new(),
        }
    }

    /// Adds the versions a durable batch of the writer recorded (already checked by it).
    fn extend(&self, made: Vec<KeyVersion>) {
        if made.is_empty() {
            return;
        }
        self.write().extend(made);
        self.discarded.store(0, Ordering::Relaxed);
    }
}

/// The rotation a governance transaction's `writes` record, checked for form only (no key is
/// needed, so the keyless audit checks the same): `None` when they do not touch
/// [`LEDGER_SECRETS`]; otherwise the sealed secret of version `next_version`, which must be the
/// transaction's only write.
pub fn rotation_record(
    writes: &[TableWrite],
    next_version: u64,
) -> Result<Option<&[u8]>, RotationError> {
    if !writes.iter().any(|w| w.table == LEDGER_SECRETS) {
        return Ok(None);
    }
    let [write] = writes else {
        return Err(RotationError::NotAlone(writes.len()));
    };
    let value = write.value.as_deref().ok_or(RotationError::Removed)?;
    if write.key != next_version.to_string() {
        return Err(RotationError::Version {
            expected: next_version,
            found: write.key.clone(),
        });
    }
    if value.len() != ROTATION_RECORD_LEN {
        return Err(RotationError::Length(value.len()));
    }
    Ok(Some(value))
}

fn rotation_aad(version: u64, seqno: u64) -> Vec<u8> {
    let mut aad = ROTATION_AAD.to_vec();
    aad.extend_from_slice(&version.to_le_bytes());
    aad.extend_from_slice(&seqno.to_le_bytes());
    aad
}

/// The writer's side of the key ring: the key that seals now and how much of its budget is
/// used. Cloned per batch (like the tree frontier) and kept only once the batch is durable,
/// so a batch that fails leaves no rotation behind.
#[derive(Clone)]
pub(crate) struct Sealing {
    version: u64,
    first_seqno: u64,
    key: Arc<DataKey>,
    /// Seals under `key` that the ledger does not hold (batches cut back, torn tails).
    discarded: u64,
    budget: u64,
    /// Versions recorded by this batch, added to the ring once it is durable.
    made: Vec<KeyVersion>,
}

impl Sealing {
    /// Whether the entry at `seqno` must come after a rotation: sealing it, and later the
    /// record of the next key (itself sealed under this one), would pass the budget. Seals
    /// are counted as the seqnos from the key's first (an upper bound: governance writes and
    /// signatures seal nothing) plus the discarded ones, so the count survives restarts
    /// without being stored. A key thus seals at most `budget` times, its rotation included.
    pub fn rotation_due(&self, seqno: u64) -> bool {
        let before = seqno.saturating_sub(self.first_seqno) + self.discarded;
        before + 2 > self.budget
    }

    /// Draws a new secret and returns the governance write that records it as the next
    /// version, for the transaction at `seqno`; sealing uses the new key from `seqno + 1` on.
    pub fn rotate(&mut self, seqno: u64) -> Result<TableWrite, KeyError> {
        let secret: [u8; 32] = random_bytes()?;
        let version = self.version + 1;
        let record = seal(&self.key.cipher, &rotation_aad(version, seqno), &secret)?;
        let next = KeyVersion {
            first_seqno: seqno + 1,
            key: Arc::new(DataKey::from_bytes(&secret)),
        };
        self.version = version;
        self.first_seqno = next.first_seqno;
        self.key = next.key.clone();
        self.discarded = 0;
        self.made.push(next);
        Ok(TableWrite {
            table: LEDGER_SECRETS.into(),
            key: version.to_string(),
            value: Some(record),
        })
    }

    /// A sealer for one entry under the current key.
    pub fn sealer(&self) -> Result<EntrySealer<'_>, KeyError> {
        self.key.sealer()
    }

    /// Counts `seals` that were made under the current key and will not be in the ledger.
    pub fn discard(&mut self, seals: u64) {
        self.discarded = self.discarded.saturating_add(seals);
    }

    /// The batch is durable: its rotations join the ring (before anything sealed under them
    /// is published).
    pub fn publish_to(&mut self, ring: &KeyRing) {
        ring.extend(std::mem::take(&mut self.made));
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

    /// A sealed private section as `entry::encode` would make it: the AAD starts with the seqno.
    fn seal_at(sealing: &Sealing, seqno: u64) -> (Vec<u8>, Vec<u8>) {
        let aad = seqno.to_le_bytes().to_vec();
        let sealed = sealing.sealer().unwrap().seal(&aad, b"private");
        (aad, sealed)
    }

    fn opens(ring: &KeyRing, seqno: u64, aad: &[u8], sealed: &[u8]) -> bool {
        ring.opener(seqno).open(aad, sealed).as_deref() == Some(&b"private"[..])
    }

    /// The rotation transaction at `seqno` as the writer would store it, parsed back.
    fn rotation_entry(write: TableWrite, seqno: u64) -> Vec<u8> {
        rotation_entry_of(vec![write], seqno)
    }

    fn rotation_entry_of(writes: Vec<TableWrite>, seqno: u64) -> Vec<u8> {
        struct Never;
        impl Sealer for Never {
            fn seal(&mut self, _: &[u8], _: &[u8]) -> Vec<u8> {
                unreachable!("governance writes are not sealed")
            }
        }
        ledger_core::entry::encode(
            TxId::new(1, seqno).unwrap(),
            &ledger_core::entry::TxBody::Governance(writes),
            &ledger_core::hash::Hash32::ZERO,
            &ledger_core::hash::Hash32::ZERO,
            &mut Never,
        )
    }

    fn observe(ring: &KeyRing, seqno: u64, bytes: &[u8]) -> Result<bool, RotationError> {
        let view = EntryView::parse(bytes, seqno).unwrap();
        ring.observe(TxId::new(1, seqno).unwrap(), &view)
    }

    #[test]
    fn the_ring_opens_each_seqno_with_the_key_of_its_version() {
        let first = LedgerSecret::from_bytes(&[7; 32]);
        let ring = KeyRing::new(first.clone());
        let mut sealing = ring.sealing(5);
        // Budget 5: a key seals seqnos first..=first+4, the last of them its successor's record
        // (here every seqno is counted; in a ledger, signatures and governance are too).
        let mut sealed = Vec::new();
        let mut rotations = Vec::new();
        for seqno in 1..=20 {
            if sealing.rotation_due(seqno) {
                let write = sealing.rotate(seqno).unwrap();
                rotations.push((seqno, rotation_entry(write, seqno)));
                continue;
            }
            sealed.push((seqno, seal_at(&sealing, seqno)));
        }
        assert_eq!(
            rotations.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [5, 10, 15, 20],
            "a rotation once the next seal would pass the budget"
        );
        // Not published yet: the ring still knows version 0 only.
        assert_eq!(ring.first_seqnos(), [1]);
        sealing.publish_to(&ring);
        assert_eq!(ring.first_seqnos(), [1, 6, 11, 16, 21]);
        for (seqno, (aad, ct)) in &sealed {
            assert!(opens(&ring, *seqno, aad, ct), "seqno {seqno}");
            // The keys of the neighbouring versions do not open it.
            for other in [seqno.saturating_sub(4), seqno + 4] {
                let version = |s: u64| ring.first_seqnos().partition_point(|f| *f <= s);
                if other >= 1 && version(other) != version(*seqno) {
                    assert!(!opens(&ring, other, aad, ct), "{seqno} under {other}'s key");
                }
            }
        }
        // Version 0 is the ledger secret itself (existing ledgers read as before) and the
        // commit secret never changes.
        let (aad, ct) = &sealed[0].1;
        assert_eq!(first.open(aad, ct).as_deref(), Some(&b"private"[..]));
        assert_eq!(
            ring.commit_secret().evidence(TxId::new(1, 19).unwrap()),
            first.commit_secret().evidence(TxId::new(1, 19).unwrap())
        );

        // A reader that only has version 0 rebuilds the same ring from the transactions.
        let rebuilt = KeyRing::new(first.clone());
        for (seqno, bytes) in &rotations {
            assert_eq!(observe(&rebuilt, *seqno, bytes), Ok(true));
        }
        assert_eq!(rebuilt.first_seqnos(), ring.first_seqnos());
        for (seqno, (aad, ct)) in &sealed {
            assert!(opens(&rebuilt, *seqno, aad, ct), "rebuilt, seqno {seqno}");
        }
        // Cutting the ledger after seqno 12 drops the versions recorded after it (at 15 and
        // 20), keeps the rest, and the writer resumes with version 2 and its budget.
        rebuilt.truncate_after(12);
        assert_eq!(rebuilt.first_seqnos(), [1, 6, 11]);
        let resumed = rebuilt.sealing(5);
        assert!(!resumed.rotation_due(14) && resumed.rotation_due(15));
        let (aad, ct) = seal_at(&resumed, 13);
        assert!(opens(&rebuilt, 13, &aad, &ct) && opens(&ring, 13, &aad, &ct));
        rebuilt.truncate_after(14);
        assert_eq!(
            rebuilt.first_seqnos(),
            [1, 6, 11],
            "15 recorded nothing yet"
        );
        rebuilt.truncate_after(0);
        assert_eq!(rebuilt.first_seqnos(), [1]);
    }

    #[test]
    fn discarded_seals_count_against_the_budget() {
        let ring = KeyRing::new(LedgerSecret::from_bytes(&[9; 32]));
        let mut sealing = ring.sealing(100);
        assert!(!sealing.rotation_due(50));
        sealing.discard(60);
        assert!(sealing.rotation_due(50), "50 seqnos + 60 discarded seals");
        ring.charge_torn_tail(64 * 70);
        assert!(
            ring.sealing(100).rotation_due(40),
            "a torn tail of 70 minimal frames"
        );
        assert!(!ring.sealing(100).rotation_due(20));
        // A budget below 2 would leave no room for an entry besides the next key's record.
        assert!(
            !KeyRing::new(LedgerSecret::from_bytes(&[9; 32]))
                .sealing(0)
                .rotation_due(1)
        );
    }

    #[test]
    fn a_wrong_or_garbled_rotation_is_refused_and_changes_nothing() {
        let first = LedgerSecret::from_bytes(&[3; 32]);
        let ring = KeyRing::new(first.clone());
        let mut sealing = ring.sealing(10);
        let good = sealing.rotate(8).unwrap();
        let record = good.value.clone().unwrap();
        let with = |key: &str, value: Option<Vec<u8>>| TableWrite {
            table: LEDGER_SECRETS.into(),
            key: key.into(),
            value,
        };
        let mut flipped = record.clone();
        flipped[20] ^= 1;
        let cases: Vec<(&str, Vec<u8>, u64, RotationError)> = vec![
            (
                "a flipped bit",
                rotation_entry(with("1", Some(flipped)), 8),
                8,
                RotationError::Unseal(0),
            ),
            (
                "moved to another seqno",
                rotation_entry(good.clone(), 9),
                9,
                RotationError::Unseal(0),
            ),
            (
                "another version",
                rotation_entry(with("2", Some(record.clone())), 8),
                8,
                RotationError::Version {
                    expected: 1,
                    found: "2".into(),
                },
            ),
            (
                "a non-canonical version",
                rotation_entry(with("01", Some(record.clone())), 8),
                8,
                RotationError::Version {
                    expected: 1,
                    found: "01".into(),
                },
            ),
            (
                "short",
                rotation_entry(with("1", Some(record[..59].to_vec())), 8),
                8,
                RotationError::Length(59),
            ),
            (
                "a removal",
                rotation_entry(with("1", None), 8),
                8,
                RotationError::Removed,
            ),
            (
                "with another write",
                rotation_entry_of(
                    vec![
                        good.clone(),
                        TableWrite {
                            table: ledger_core::entry::tables::USERS.into(),
                            key: "u".into(),
                            value: Some(b"{}".to_vec()),
                        },
                    ],
                    8,
                ),
                8,
                RotationError::NotAlone(2),
            ),
        ];
        for (what, bytes, seqno, expected) in cases {
            assert_eq!(observe(&ring, seqno, &bytes), Err(expected), "{what}");
            assert_eq!(ring.first_seqnos(), [1], "{what}: the ring is unchanged");
        }
        // Sealed under another ledger's secret: it does not open under ours.
        let other = KeyRing::new(LedgerSecret::from_bytes(&[4; 32]));
        let foreign = other.sealing(10).rotate(8).unwrap();
        assert_eq!(
            observe(&ring, 8, &rotation_entry(foreign, 8)),
            Err(RotationError::Unseal(0))
        );
        // Governance that does not touch the table is not a rotation.
        let users = rotation_entry_of(
            vec![TableWrite {
                table: ledger_core::entry::tables::USERS.into(),
                key: "u".into(),
                value: None,
            }],
            8,
        );
        assert_eq!(observe(&ring, 8, &users), Ok(false));
        // The genuine record opens; replayed before its key's first seqno it is refused.
        assert_eq!(observe(&ring, 8, &rotation_entry(good, 8)), Ok(true));
        let again = ring.sealing(10).rotate(3).unwrap();
        assert_eq!(
            observe(&ring, 3, &rotation_entry(again, 3)),
            Err(RotationError::OutOfOrder {
                seqno: 3,
                version: 1,
                first: 9
            })
        );
        assert_eq!(ring.first_seqnos(), [1, 9]);
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
