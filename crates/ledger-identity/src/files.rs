//! A node's identity files in its data directory: the service certificate clients pin, and the
//! private keys and node certificate only the node reads.
//!
//! ```text
//! service_cert.pem            the service identity certificate (public; give it to clients)
//! identity/service_key.pem    service private key, mode 0600 (issues node certificates)
//! identity/node_key.pem       node private key, mode 0600 (TLS and root signatures)
//! identity/node_cert.pem      node certificate issued by the service key
//! ```
//!
//! Keys are written once, with `create_new` and mode 0600 from the start, so there is no
//! window in which a key file is readable by others, and an existing identity is never
//! overwritten.

use crate::{
    Curve, IdentityError, ServiceIdentity, create_service_identity, generate_private_key,
    issue_node_certificate,
};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const SERVICE_CERT_FILE: &str = "service_cert.pem";
const IDENTITY_DIR: &str = "identity";
const SERVICE_KEY_FILE: &str = "service_key.pem";
const NODE_KEY_FILE: &str = "node_key.pem";
const NODE_CERT_FILE: &str = "node_cert.pem";

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already holds a node identity")]
    Exists(PathBuf),
    #[error(
        "{0} is missing: is this a cledger data directory? (create one with `cledger local init`)"
    )]
    Missing(PathBuf),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The identity material of a node, as PEM text.
#[derive(Clone)]
pub struct NodeFiles {
    pub service_cert_pem: String,
    pub service_key_pem: String,
    pub node_key_pem: String,
    pub node_cert_pem: String,
}

impl fmt::Debug for NodeFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeFiles")
            .field("service_cert_pem", &self.service_cert_pem)
            .field("node_cert_pem", &self.node_cert_pem)
            .finish_non_exhaustive()
    }
}

impl NodeFiles {
    /// Generates a service identity and a node key and certificate, and writes them to `dir`.
    pub fn create(dir: &Path, curve: Curve, hostnames: &[String]) -> Result<NodeFiles, FilesError> {
        let identity = dir.join(IDENTITY_DIR);
        if identity.exists() || dir.join(SERVICE_CERT_FILE).exists() {
            return Err(FilesError::Exists(dir.to_owned()));
        }
        let ServiceIdentity {
            cert_pem: service_cert_pem,
            key_pem: service_key_pem,
        } = create_service_identity(curve)?;
        let service = ServiceIdentity {
            cert_pem: service_cert_pem.clone(),
            key_pem: service_key_pem.clone(),
        };
        let node_key_pem = generate_private_key(curve)?;
        let node_cert_pem = issue_node_certificate(&service, &node_key_pem, hostnames)?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| FilesError::Io { path, source }
        };
        fs::create_dir_all(&identity).map_err(io(&identity))?;
        write_new(&identity.join(SERVICE_KEY_FILE), &service_key_pem, true)?;
        write_new(&identity.join(NODE_KEY_FILE), &node_key_pem, true)?;
        write_new(&identity.join(NODE_CERT_FILE), &node_cert_pem, false)?;
        write_new(&dir.join(SERVICE_CERT_FILE), &service_cert_pem, false)?;
        for d in [&identity, &dir.to_path_buf()] {
            fs::File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(io(d))?;
        }
        Ok(NodeFiles {
            service_cert_pem,
            service_key_pem,
            node_key_pem,
            node_cert_pem,
        })
    }

    /// The node key of a node that is asking to join a service: `identity/node_key.pem`,
    /// generated on the first attempt and kept, so a node restarted while it waits for
    /// approval asks again with the same key (and so the same node id).
    pub fn joining_node_key(dir: &Path, curve: Curve) -> Result<String, FilesError> {
        let identity = dir.join(IDENTITY_DIR);
        let path = identity.join(NODE_KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(pem) => return Ok(pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(FilesError::Io { path, source }),
        }
        fs::create_dir_all(&identity).map_err(|source| FilesError::Io {
            path: identity.clone(),
            source,
        })?;
        let pem = generate_private_key(curve)?;
        write_new(&path, &pem, true)?;
        Ok(pem)
    }

    /// Writes the identity a node received when it joined a service (the service's
    /// certificate and key, the certificate the service issued for `node_key_pem`) into `dir`,
    /// which must not hold an identity yet.
    pub fn install(dir: &Path, files: &NodeFiles) -> Result<(), FilesError> {
        let identity = dir.join(IDENTITY_DIR);
        if identity.join(NODE_CERT_FILE).exists() || dir.join(SERVICE_CERT_FILE).exists() {
            return Err(FilesError::Exists(dir.to_owned()));
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| FilesError::Io { path, source }
        };
        fs::create_dir_all(&identity).map_err(io(&identity))?;
        write_new(
            &identity.join(SERVICE_KEY_FILE),
            &files.service_key_pem,
            true,
        )?;
        if !identity.join(NODE_KEY_FILE).exists() {
            write_new(&identity.join(NODE_KEY_FILE), &files.node_key_pem, true)?;
        }
        write_new(&identity.join(NODE_CERT_FILE), &files.node_cert_pem, false)?;
        write_new(&dir.join(SERVICE_CERT_FILE), &files.service_cert_pem, false)?;
        for d in [&identity, &dir.to_path_buf()] {
            fs::File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(io(d))?;
        }
        Ok(())
    }

    /// Reads the identity files of `dir`.
    pub fn load(dir: &Path) -> Result<NodeFiles, FilesError> {
        let identity = dir.join(IDENTITY_DIR);
        let read = |path: PathBuf| match fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FilesError::Missing(path)),
            Err(source) => Err(FilesError::Io { path, source }),
        };
        Ok(NodeFiles {
            service_cert_pem: read(dir.join(SERVICE_CERT_FILE))?,
            service_key_pem: read(identity.join(SERVICE_KEY_FILE))?,
            node_key_pem: read(identity.join(NODE_KEY_FILE))?,
            node_cert_pem: read(identity.join(NODE_CERT_FILE))?,
        })
    }
}

fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), FilesError> {
    let io = |source| FilesError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn create_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let created = NodeFiles::create(dir.path(), Curve::P384, &["ledger.test".into()]).unwrap();
        let loaded = NodeFiles::load(dir.path()).unwrap();
        assert_eq!(created.node_cert_pem, loaded.node_cert_pem);
        assert_eq!(created.node_key_pem, loaded.node_key_pem);
        assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for (f, mode) in [
                ("identity/service_key.pem", 0o600),
                ("identity/node_key.pem", 0o600),
                ("service_cert.pem", 0o644),
            ] {
                let m = fs::metadata(dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777;
                assert_eq!(m, mode, "{f}");
            }
        }
        assert!(matches!(
            NodeFiles::create(dir.path(), Curve::P384, &[]),
            Err(FilesError::Exists(_))
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            NodeFiles::load(empty.path()),
            Err(FilesError::Missing(_))
        ));
    }
}
