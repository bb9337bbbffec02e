//! Bringing a node up from its data directory: the lock, the identity, the ledger, and the
//! first administrators.
//!
//! **First start** (no ledger in the directory): create the service identity and the node
//! key and certificate (P-384, `ledger_identity::files`), then the ledger, whose genesis
//! transaction registers the administrators. With no `--admin-cert`, an administrator client
//! identity is generated into `DATA_DIR/admin.pem` (certificate + key, mode 0600, never
//! overwritten), the way a database hands out its first password: without it, nobody could
//! manage the ledger, since ACL users are only ever added by an administrator.
//!
//! A first start that was interrupted resumes: an identity without a ledger is reused, and an
//! `admin.pem` left behind is registered instead of generating another.
//!
//! **Restart**: everything is reused (`Ledger::open` recovers the ledger). Certificates given
//! with `--admin-cert` that are not registered as any user yet are registered as Administrator
//! in one governance transaction; certificates already registered keep their current role
//! (an administrator may have changed it on purpose). A ledger made by `cledger local init`
//! that has no users at all gets an `admin.pem` the same way as on first start.
//!
//! **Lock**: `DATA_DIR/cledger.lock` is locked (`File::try_lock`, an advisory `flock`) for as
//! long as the [`Node`] lives and holds the owner's PID, so a second server (or a second
//! `Server` in the same process) on the same directory fails at once and says who holds it.
//! The lock dies with the process, so a crash never leaves a stale lock behind.

use crate::http::users::{Role, user_write};
use crate::{ServeConfig, ServeError};
use ledger_core::entry::TableWrite;
use ledger_core::signing::EcSigningKey;
use ledger_identity::Curve;
use ledger_identity::files::NodeFiles;
use ledger_store::{Genesis, KekSource, Ledger, NodeIdentity, StoreConfig, WriteRequest};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const LOCK_FILE: &str = "cledger.lock";
pub const ADMIN_FILE: &str = "admin.pem";
/// The directory of a cluster node's consensus state (`raft/vote.json`): its presence marks a
/// ledger that belongs to a cluster.
pub const CLUSTER_DIR: &str = "raft";
const ADMIN_COMMON_NAME: &str = "cledger admin";

/// A running node's state: the open ledger and the identity it serves with.
pub struct Node {
    pub ledger: Arc<Ledger>,
    pub files: NodeFiles,
    /// The ledger id recorded in the ledger (on restart it may differ from the setting).
    pub ledger_id: String,
    /// Hex node id (SHA-256 of the node's public key).
    pub node_id: String,
    /// What this start created or registered, for the operator.
    pub report: StartReport,
    _lock: DirLock,
}

/// What happened at start, so the caller can tell the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartReport {
    /// The ledger was created by this start.
    pub created: bool,
    /// An administrator identity was generated at this path (its key is in it).
    pub generated_admin: Option<PathBuf>,
    /// Fingerprints (and token principals) registered as Administrator by this start.
    pub registered_admins: Vec<String>,
    /// Notes for the operator (e.g. a setting that was ignored).
    pub notes: Vec<String>,
}

impl Node {
    /// Locks the data directory, then creates or opens the ledger in it. Blocking.
    pub fn start(config: &ServeConfig) -> Result<Node, ServeError> {
        Node::start_observed(config, None)
    }

    /// [`Node::start`], with the store reporting its work to `observer` (metrics).
    pub fn start_observed(
        config: &ServeConfig,
        observer: Option<std::sync::Arc<dyn ledger_store::StoreObserver>>,
    ) -> Result<Node, ServeError> {
        let dir = &config.data_dir;
        create_private_dir(dir)?;
        let lock = DirLock::acquire(dir)?;
        let store_config = StoreConfig {
            kek: match &config.kek_file {
                Some(f) => KekSource::File(f.clone()),
                None => KekSource::DataDir,
            },
            observer,
            sign_every: config.signature_tx_count,
            sign_interval: config.signature_interval(),
            ..StoreConfig::default()
        };
        let mut report = StartReport::default();
        // Read the admin certificates before touching anything, so a typo fails cleanly.
        let mut given_admins = config
            .admin_certs
            .iter()
            .map(|p| read_admin_cert(p))
            .collect::<Result<Vec<_>, _>>()?;
        // Token principals (`--admin-oid`) are registered exactly like certificates.
        given_admins.extend(
            config
                .admin_oids
                .iter()
                .map(|oid| crate::http::users::normalize_user_id(oid)),
        );

        let ledger_exists = holds_ledger(dir)?;
        let files = if ledger_exists {
            NodeFiles::load(dir)?
        } else {
            match NodeFiles::load(dir) {
                Ok(files) => files, // an interrupted first start: reuse the identity
                Err(ledger_identity::files::FilesError::Missing(_)) => {
                    NodeFiles::create(dir, config.curve.unwrap_or_default(), &config.hostnames)?
                }
                Err(e) => return Err(e.into()),
            }
        };
        let identity = node_identity(&files)?;
        check_curve(config.curve, &identity, dir)?;
        let node_id = identity.signing_key.node_id().to_hex();

        // A ledger that belongs to a cluster is only ever opened as a replica: opened
        // standalone, it would sign its unsigned tail by itself and leave the cluster's log.
        let member = dir.join(CLUSTER_DIR).exists() || config.join.is_some();
        if member && config.peer_listen.is_none() {
            return Err(ServeError::InvalidSetting(format!(
                "{} belongs to a cluster ({} exists): start it with --peer-listen",
                dir.display(),
                dir.join(CLUSTER_DIR).display()
            )));
        }
        let replica_config = StoreConfig {
            role: ledger_store::Role::Replica,
            ..store_config.clone()
        };
        let ledger = if ledger_exists && member {
            if !given_admins.is_empty() {
                report.notes.push(
                    "--admin-cert/--admin-oid are ignored on a cluster node: users are added \
                     through the primary (PATCH /app/users/{id})"
                        .into(),
                );
            }
            let (ledger, _) = Ledger::open(dir, replica_config.clone(), identity)?;
            ledger
        } else if ledger_exists {
            let (ledger, recovery) = Ledger::open(dir, store_config, identity)?;
            if let Some((file, offset, bytes)) = &recovery.truncated_tail {
                report.notes.push(format!(
                    "recovery: cut a torn write of {bytes} bytes at {} offset {offset}",
                    file.display()
                ));
            }
            for rebuilt in &recovery.rebuilt {
                report.notes.push(format!(
                    "recovery: rebuilt {} from the ledger: {}",
                    rebuilt.file.display(),
                    rebuilt.reason
                ));
            }
            let mut admins = given_admins;
            if admins.is_empty() && ledger.governance_table(&admin_write("x").table)?.is_empty() {
                // No users at all (made by `cledger local init`): bootstrap like a first start.
                admins.push(bootstrap_admin(dir, &mut report)?);
            }
            let mut writes = Vec::new();
            for fp in admins {
                let w = admin_write(&fp);
                if ledger.governance(&w.table, &w.key)?.is_none() && !writes.contains(&w) {
                    writes.push(w);
                    report.registered_admins.push(fp);
                }
            }
            if !writes.is_empty() {
                ledger.append(WriteRequest::Governance(writes))?;
            }
            ledger
        } else {
            let admins = if given_admins.is_empty() {
                vec![bootstrap_admin(dir, &mut report)?]
            } else {
                given_admins
            };
            let mut writes: Vec<TableWrite> = Vec::new();
            for fp in admins {
                let w = admin_write(&fp);
                if !writes.contains(&w) {
                    writes.push(w);
                    report.registered_admins.push(fp);
                }
            }
            let genesis = Genesis {
                ledger_id: config.ledger_id.clone(),
                service_cert_pem: files.service_cert_pem.clone(),
                writes,
            };
            report.created = true;
            Ledger::create(dir, store_config, identity, genesis)?
        };
        let ledger = if config.peer_listen.is_some() && !member {
            // Founding a cluster: what a standalone start does (create, register the
            // administrators) is done; from now on consensus decides what is written.
            ledger.close();
            drop(ledger);
            let identity = node_identity(&files)?;
            Ledger::open(dir, replica_config, identity)?.0
        } else {
            ledger
        };

        let ledger_id = match ledger.governance(
            ledger_core::entry::tables::CONFIG,
            ledger_store::LEDGER_ID_KEY,
        )? {
            Some(bytes) => serde_json::from_slice::<String>(&bytes).map_err(|e| {
                ServeError::Identity(format!(
                    "the ledger's recorded ledger_id is unreadable: {e}"
                ))
            })?,
            None => config.ledger_id.clone(),
        };
        if ledger_id != config.ledger_id {
            report.notes.push(format!(
                "this ledger was created with ledger_id {ledger_id:?}; the setting {:?} is ignored",
                config.ledger_id
            ));
        }
        Ok(Node {
            ledger: Arc::new(ledger),
            files,
            ledger_id,
            node_id,
            report,
            _lock: lock,
        })
    }
}

fn admin_write(fingerprint: &str) -> TableWrite {
    user_write(fingerprint, Role::Administrator)
}

/// Registers `DATA_DIR/admin.pem`, generating it unless a previous start left one.
fn bootstrap_admin(dir: &Path, report: &mut StartReport) -> Result<String, ServeError> {
    let path = dir.join(ADMIN_FILE);
    if path.exists() {
        return read_admin_cert(&path);
    }
    let identity = ledger_identity::create_client_identity(ADMIN_COMMON_NAME, Curve::P384)
        .map_err(|e| ServeError::Identity(format!("generating the admin identity: {e}")))?;
    let bundle = identity.bundle_pem();
    write_private_new(&path, bundle.as_bytes())?;
    report.generated_admin = Some(path);
    ledger_identity::certificate_fingerprint(&identity.cert_pem)
        .map_err(|e| ServeError::Identity(format!("the generated admin certificate: {e}")))
}

fn read_admin_cert(path: &Path) -> Result<String, ServeError> {
    let text = fs::read_to_string(path).map_err(|e| ServeError::AdminCert {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    ledger_identity::certificate_fingerprint(&text).map_err(|e| ServeError::AdminCert {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Whether `dir` holds ledger segments (as opposed to nothing, or only an identity).
fn holds_ledger(dir: &Path) -> Result<bool, ServeError> {
    let ledger_dir = dir.join("ledger");
    match ledger_store::segment::list_segments(&ledger_dir) {
        Ok(segments) => Ok(!segments.is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ServeError::Io {
            path: ledger_dir,
            source,
        }),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ServeError> {
    let io = |source| ServeError::Io {
        path: dir.to_owned(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io)
}

fn write_private_new(path: &Path, contents: &[u8]) -> Result<(), ServeError> {
    let io = |source| ServeError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The data directory's lock, held until dropped.
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, ServeError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| ServeError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(ServeError::AlreadyRunning {
                    dir: dir.to_owned(),
                    lock: path.clone(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(fs::TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

/// A curve given for a data directory that already has an identity must be that identity's:
/// the service key signs every receipt, so a ledger's curve never changes, and silently
/// serving another curve than the one asked for would mislead whoever asked.
fn check_curve(
    wanted: Option<Curve>,
    identity: &NodeIdentity,
    dir: &Path,
) -> Result<(), ServeError> {
    let Some(wanted) = wanted else {
        return Ok(());
    };
    let has = curve_of(identity.service_key.curve());
    if has == wanted {
        return Ok(());
    }
    Err(ServeError::InvalidSetting(format!(
        "curve {wanted} was asked for, but the identity in {} is on {has}: the curve is chosen \
         when a ledger is created and never changes (drop --curve, or use a new --data-dir)",
        dir.display()
    )))
}

/// The same curve under its identity-files name.
pub(crate) fn curve_of(key_curve: ledger_core::signing::Curve) -> Curve {
    match key_curve {
        ledger_core::signing::Curve::P256 => Curve::P256,
        ledger_core::signing::Curve::P384 => Curve::P384,
    }
}

/// The signing identity of the node whose identity files are `files`.
pub(crate) fn node_identity(files: &NodeFiles) -> Result<NodeIdentity, ServeError> {
    Ok(NodeIdentity {
        signing_key: EcSigningKey::from_pkcs8_pem(&files.node_key_pem)
            .map_err(|e| ServeError::Identity(format!("identity/node_key.pem: {e}")))?,
        cert_pem: files.node_cert_pem.clone(),
        service_key: EcSigningKey::from_pkcs8_pem(&files.service_key_pem)
            .map_err(|e| ServeError::Identity(format!("identity/service_key.pem: {e}")))?,
    })
}
