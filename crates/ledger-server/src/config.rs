//! Settings of `cledger serve` and how they are merged.
//!
//! Every setting can come from four places; the first that sets it wins:
//!
//! 1. a command-line flag (`--data-dir`),
//! 2. an environment variable (`CLEDGER_DATA_DIR`),
//! 3. the TOML file named by `--config` (`data_dir = "..."`, the flag names in snake_case),
//! 4. the built-in default.
//!
//! Flags and environment variables are one layer here ([`Overrides`]): the command line parser
//! (clap, with `env = ...`) already resolves "flag, else variable". This module only merges that
//! layer with the file and the defaults, so the precedence rule is testable without a process.
//!
//! List settings (`hostname`, `admin_cert`) are replaced as a whole, never concatenated: giving
//! one `--hostname` on the command line drops the file's list.
//!
//! Relative paths in the config file are relative to the file's directory (so a config file
//! can sit next to its data); relative paths from flags and variables are relative to the
//! working directory, as usual for command lines.

use crate::ServeError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// ACL's documented limit on `contents`, the default.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 8192;
/// The most `max_entry_bytes` may be raised to.
pub const MAX_ENTRY_BYTES_LIMIT: usize = 1 << 20;
/// ACL's documented limit on collections per ledger.
pub const DEFAULT_MAX_COLLECTIONS: usize = 5000;

/// The resolved settings of a node. `Default` gives the built-in defaults; the TOML file is
/// parsed straight into this type (missing keys keep their defaults).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Where the ledger, its keys and the lock file live. Default `./cledger-data`.
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:8443`.
    pub listen: SocketAddr,
    /// Extra names for the node certificate (`localhost`, `127.0.0.1` and `::1` are always
    /// in it). Only used when the identity is created, on first start.
    #[serde(rename = "hostname", alias = "hostnames")]
    pub hostnames: Vec<String>,
    /// PEM files with client certificates to register as Administrator.
    #[serde(rename = "admin_cert", alias = "admin_certs")]
    pub admin_certs: Vec<PathBuf>,
    /// The ledger's name (the `{ledgerId}` of `/ledgerIdentity/{ledgerId}`). Recorded in the
    /// genesis transaction; on a restart the recorded name wins.
    pub ledger_id: String,
    /// Largest `contents` of one entry, in bytes of UTF-8. Default 8192, at most 1 MiB.
    pub max_entry_bytes: usize,
    /// Most collections a ledger may hold (the default collection does not count).
    pub max_collections: usize,
    /// Key-encryption key file (64 hex characters); default: generated `DATA_DIR/keys/kek`.
    pub kek_file: Option<PathBuf>,
    /// Most simultaneous client connections; further clients wait in the accept queue.
    pub max_connections: usize,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_grace_secs: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            data_dir: PathBuf::from("./cledger-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            hostnames: Vec::new(),
            admin_certs: Vec::new(),
            ledger_id: "cledger".to_owned(),
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_collections: DEFAULT_MAX_COLLECTIONS,
            kek_file: None,
            max_connections: 1024,
            handshake_timeout_secs: 10,
            shutdown_grace_secs: 10,
        }
    }
}

/// The flag-or-environment layer: `None` (or an empty list) means "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The TOML config file to read, if any.
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub hostnames: Vec<String>,
    pub admin_certs: Vec<PathBuf>,
    pub ledger_id: Option<String>,
    pub max_entry_bytes: Option<usize>,
    pub max_collections: Option<usize>,
    pub kek_file: Option<PathBuf>,
}

impl ServeConfig {
    /// Reads `overrides.config` (if given) and merges: overrides > file > defaults. Validates
    /// the result.
    pub fn load(overrides: Overrides) -> Result<ServeConfig, ServeError> {
        let file = match &overrides.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let base = path.parent().unwrap_or(Path::new("."));
                Some(
                    ServeConfig::from_toml(&text, base).map_err(|reason| ServeError::Config {
                        path: path.clone(),
                        reason,
                    })?,
                )
            }
            None => None,
        };
        let config = ServeConfig::merge(overrides, file);
        config.validate()?;
        Ok(config)
    }

    /// Parses a config file's text; relative paths in it are taken relative to `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<ServeConfig, String> {
        let mut config: ServeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.data_dir);
        config.admin_certs.iter_mut().for_each(rebase);
        if let Some(k) = config.kek_file.as_mut() {
            rebase(k);
        }
        Ok(config)
    }

    /// Applies the precedence rule: each override that is set replaces the file's value (or
    /// the default, when there is no file).
    pub fn merge(overrides: Overrides, file: Option<ServeConfig>) -> ServeConfig {
        let mut c = file.unwrap_or_default();
        let Overrides {
            config: _,
            data_dir,
            listen,
            hostnames,
            admin_certs,
            ledger_id,
            max_entry_bytes,
            max_collections,
            kek_file,
        } = overrides;
        if let Some(v) = data_dir {
            c.data_dir = v;
        }
        if let Some(v) = listen {
            c.listen = v;
        }
        if !hostnames.is_empty() {
            c.hostnames = hostnames;
        }
        if !admin_certs.is_empty() {
            c.admin_certs = admin_certs;
        }
        if let Some(v) = ledger_id {
            c.ledger_id = v;
        }
        if let Some(v) = max_entry_bytes {
            c.max_entry_bytes = v;
        }
        if let Some(v) = max_collections {
            c.max_collections = v;
        }
        if kek_file.is_some() {
            c.kek_file = kek_file;
        }
        c
    }

    /// Checks the ranges a setting must be in; the message names the setting.
    pub fn validate(&self) -> Result<(), ServeError> {
        let bad = |msg: String| Err(ServeError::InvalidSetting(msg));
        if self.max_entry_bytes == 0 || self.max_entry_bytes > MAX_ENTRY_BYTES_LIMIT {
            return bad(format!(
                "max_entry_bytes must be between 1 and {MAX_ENTRY_BYTES_LIMIT} (1 MiB), not {}",
                self.max_entry_bytes
            ));
        }
        if !valid_ledger_id(&self.ledger_id) {
            return bad(format!(
                "ledger_id {:?} must be 1-64 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
                self.ledger_id
            ));
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".to_owned());
        }
        if self.handshake_timeout_secs == 0 {
            return bad("handshake_timeout_secs must be at least 1".to_owned());
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir must not be empty".to_owned());
        }
        for h in &self.hostnames {
            if h.is_empty() || h.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return bad(format!(
                    "hostname {h:?} is not a valid DNS name or IP address"
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Hard cap on a request body: room for `max_entry_bytes` of contents even when every
    /// character is JSON-escaped as `\uXXXX` (6 bytes), plus the other fields.
    pub(crate) fn max_body_bytes(&self) -> usize {
        self.max_entry_bytes
            .saturating_mul(6)
            .saturating_add(64 << 10)
    }
}

fn valid_ledger_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = ServeConfig::load(Overrides::default()).unwrap();
        assert_eq!(c, ServeConfig::default());
        assert_eq!(c.data_dir, PathBuf::from("./cledger-data"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.ledger_id, "cledger");
        assert_eq!(c.max_entry_bytes, 8192);
    }

    #[test]
    fn override_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cledger.toml");
        std::fs::write(
            &file,
            r#"
data_dir = "data"
listen = "0.0.0.0:9000"
hostname = ["ledger.example", "10.0.0.5"]
admin_cert = ["/etc/cledger/admin.pem", "rel.pem"]
ledger_id = "from-file"
max_entry_bytes = 100
"#,
        )
        .unwrap();
        // File only: its values, relative paths based at the file's directory.
        let c = ServeConfig::load(Overrides {
            config: Some(file.clone()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.hostnames, ["ledger.example", "10.0.0.5"]);
        assert_eq!(
            c.admin_certs,
            [
                PathBuf::from("/etc/cledger/admin.pem"),
                dir.path().join("rel.pem")
            ]
        );
        assert_eq!(c.ledger_id, "from-file");
        assert_eq!(c.max_entry_bytes, 100);
        // Unset in the file: default.
        assert_eq!(c.max_collections, DEFAULT_MAX_COLLECTIONS);

        // Overrides win, lists are replaced as a whole, unset overrides keep the file's value.
        let c = ServeConfig::load(Overrides {
            config: Some(file),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            hostnames: vec!["other.example".into()],
            ledger_id: Some("from-flag".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:0");
        assert_eq!(c.hostnames, ["other.example"]);
        assert_eq!(c.ledger_id, "from-flag");
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.max_entry_bytes, 100);
        assert_eq!(c.admin_certs.len(), 2);
    }

    #[test]
    fn bad_files_and_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "data_dirr = \"x\"\n").unwrap();
        let err = ServeConfig::load(Overrides {
            config: Some(file.clone()),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("c.toml") && err.contains("data_dirr"), "{err}");

        let err = ServeConfig::load(Overrides {
            config: Some(dir.path().join("missing.toml")),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing.toml"), "{err}");

        std::fs::write(&file, "listen = \"not an address\"\n").unwrap();
        assert!(
            ServeConfig::load(Overrides {
                config: Some(file),
                ..Overrides::default()
            })
            .is_err()
        );

        for (over, word) in [
            (
                Overrides {
                    max_entry_bytes: Some((1 << 20) + 1),
                    ..Overrides::default()
                },
                "max_entry_bytes",
            ),
            (
                Overrides {
                    max_entry_bytes: Some(0),
                    ..Overrides::default()
                },
                "max_entry_bytes",
            ),
            (
                Overrides {
                    ledger_id: Some("a/b".into()),
                    ..Overrides::default()
                },
                "ledger_id",
            ),
        ] {
            let err = ServeConfig::load(over).unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
        }
        // 1 MiB exactly is allowed.
        ServeConfig::load(Overrides {
            max_entry_bytes: Some(1 << 20),
            ..Overrides::default()
        })
        .unwrap();
    }
}
