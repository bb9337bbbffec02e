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
use crate::auth::IssuerConfig;
use ledger_identity::Curve;
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
/// Descriptors kept for the store beyond those open at start: a checkpoint needs 3 at once
/// (tree directory, fork-guard file and directory), a probe 1, a reopened index 2, each new
/// segment 1 for as long as the node runs (64 MiB of ledger each); the rest is headroom for
/// segments and for the token-key fetcher's sockets.
pub const DEFAULT_RESERVED_DESCRIPTORS: usize = 64;
/// The store's signing cadence, the default: the interval that measured best for throughput
/// and latency on a cluster (docs/PERFORMANCE.md, issue 18 step 7), and a count that only
/// matters when one interval gathers more writes than that.
pub const DEFAULT_SIGNATURE_INTERVAL_MS: u64 = ledger_store::SIGN_INTERVAL.as_millis() as u64;
pub const DEFAULT_SIGNATURE_TX_COUNT: u64 = ledger_store::SIGN_EVERY;
/// The longest signature interval: a write waits for the next signature, and a cluster's
/// writes are answered "not committed yet" after 10 s.
pub const MAX_SIGNATURE_INTERVAL_MS: u64 = 1000;

/// A C2SP witness: its verifier key (`<name>+<key id>+<base64 key>`) and where it takes
/// checkpoints (the URL its `/add-checkpoint` is under; http is allowed, e.g. on loopback).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    pub vkey: String,
    pub url: String,
}

impl WitnessConfig {
    /// From `--witness VKEY@URL` (a vkey holds no '@'); checked with the other settings.
    pub fn parse(text: &str) -> WitnessConfig {
        let (vkey, url) = text.split_once('@').unwrap_or((text, ""));
        WitnessConfig {
            vkey: vkey.to_owned(),
            url: url.to_owned(),
        }
    }

    fn check(&self) -> Result<(), String> {
        ledger_core::note::CosignatureVerifier::from_vkey(&self.vkey)
            .map_err(|e| format!("witness vkey {:?}: {e}", self.vkey))?;
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(format!(
                "witness url {:?}: expected http(s)://… (--witness takes VKEY@URL)",
                self.url
            ));
        }
        Ok(())
    }
}

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
    /// The elliptic curve of the service identity and node key (`p384`, ACL's and CCF's
    /// default, or `p256`), chosen when the identity is created on first start. Every batch of
    /// writes carries two signatures, and a P-256 signature costs about a fifth of a P-384 one
    /// (docs/PERFORMANCE.md). `None`: P-384 for a new ledger, and whatever an existing one has;
    /// given for an existing ledger, it must match (a ledger's identity never changes).
    #[serde(deserialize_with = "curve_name")]
    pub curve: Option<Curve>,
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
    /// Most simultaneous client connections. When they are all open, a newcomer takes the slot
    /// of the connection idle longest (one not yet authenticated first), or is closed if every
    /// one is busy. Also bounded by the open-file limit, less `reserved_descriptors` (see
    /// `descriptors`).
    pub max_connections: usize,
    /// Connection slots that only connections authenticated as users of the ledger may hold
    /// (a connection is authenticated once a request on it is authorized as a user).
    pub reserved_connections: usize,
    /// Connections not yet authenticated that one IP address may hold at once.
    pub max_unauthenticated_connections_per_ip: usize,
    /// File descriptors kept free for the store (segments, checkpoints, probes): connections
    /// that would use them are closed at once. 0 turns the descriptor bounds off.
    pub reserved_descriptors: usize,
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_grace_secs: u64,
    /// Token principals (the user claim, `oid` by default) to register as Administrator,
    /// like `admin_cert`.
    #[serde(rename = "admin_oid", alias = "admin_oids")]
    pub admin_oids: Vec<String>,
    /// Trusted bearer-token issuers (`[[jwt_issuers]]` tables); empty: tokens are refused.
    pub jwt_issuers: Vec<IssuerConfig>,
    /// A connection with no request in progress for this long is closed (HTTP/1 also: the
    /// request headers must arrive within it).
    pub idle_timeout_secs: u64,
    /// A request (its body above all) must be complete within this, or it gets 408.
    pub request_timeout_secs: u64,
    /// Largest request head (request line + headers), in bytes; at least 8192.
    pub max_header_bytes: usize,
    /// Longest request URL (path and query), in bytes; longer gets 414.
    pub max_url_bytes: usize,
    /// Write request bytes admitted at once; beyond, writes get 503 `ServiceBusy`.
    pub max_pending_write_bytes: usize,
    /// Requests per second each caller (client certificate or token user; anonymous callers
    /// per IP address) may make, sustained; 0 turns rate limiting off.
    pub rate_limit_per_second: u32,
    /// Requests a caller may make at once above the sustained rate; 0 means the same as
    /// `rate_limit_per_second`.
    pub rate_limit_burst: u32,
    /// Requests per second one IP address may make on connections not yet authenticated as a
    /// user, counted before authentication (failed authentication also counts); 0 turns this
    /// limit off.
    pub unauthenticated_rate_per_second: u32,
    /// Such requests one IP address may make at once above that rate (0: the same as the rate).
    pub unauthenticated_rate_burst: u32,
    /// A connection whose responses make no progress (its client reads nothing) for this long
    /// is closed.
    pub send_timeout_secs: u64,
    /// Bytes of responses a connection's client may leave unread; further requests on that
    /// connection wait until it reads (503 `ResponseBacklog` after `send_timeout_secs`).
    pub max_unread_response_bytes: usize,
    /// Log format on stderr: `text` or `json`.
    pub log_format: LogFormat,
    /// Log filter, `tracing` `EnvFilter` syntax (`info`, `warn,cledger=debug`, ...).
    pub log_level: String,
    /// Serve Prometheus metrics at `/metrics` (no authentication; counts only, no contents).
    pub metrics: bool,
    /// Serve `/metrics` only on this address (TLS with the node's certificate, no client
    /// authentication), for example one reachable only from the monitoring network, instead
    /// of on the client listener, where anyone who reaches the node could read them.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the newest committed signature is published as a C2SP checkpoint (and sent
    /// to the witnesses), in milliseconds; 0: no checkpoints. Default 5000.
    pub checkpoint_interval_ms: u64,
    /// The signing node (standalone, or a cluster's primary) signs once this long has passed
    /// since its last signature, in milliseconds (CCF's `ledger_signatures.delay`). A write
    /// is acknowledged only once a signature after it is committed, so this bounds what a
    /// busy node adds to a write's latency; a standalone node whose queue runs empty signs at
    /// once. Default 1; at most 1000.
    pub signature_interval_ms: u64,
    /// ...or once this many transactions wait for a signature, whichever comes first (CCF's
    /// `ledger_signatures.tx_count`). Default 1000.
    pub signature_tx_count: u64,
    /// The checkpoints' origin line (and the checkpoint key's name). Default
    /// `cledger/<ledger id>/<first 16 hex digits of the service key's SHA-256>`.
    pub checkpoint_origin: Option<String>,
    /// C2SP witnesses each checkpoint is submitted to (`[[witnesses]]` tables: `vkey`, `url`).
    pub witnesses: Vec<WitnessConfig>,
    /// How long an `Idempotency-Key` is remembered, in seconds.
    pub idempotency_retention_secs: u64,
    /// Also treat `x-ms-client-request-id` as an idempotency key (the Azure SDKs resend the
    /// same id when they retry a request).
    pub idempotency_client_request_id: bool,
    /// Run as a node of a cluster, serving the peer protocol on this address (mutual TLS with
    /// node certificates). Without it a node is standalone.
    pub peer_listen: Option<SocketAddr>,
    /// Join the service one of whose nodes listens at this client address
    /// (`https://host:port`) instead of founding one; needs `peer_listen` and `service_cert`.
    pub join: Option<String>,
    /// The service certificate of the service to join (PEM): the only root trusted when
    /// asking to join.
    pub service_cert: Option<PathBuf>,
    /// A file holding a join token made by `cledger cluster join-token`: the join is approved
    /// in advance (otherwise an Administrator approves it).
    pub join_token_file: Option<PathBuf>,
    /// Found a new service on this directory's ledger, a copy of a lost cluster's (`--recover`;
    /// a one-time action, so a flag only, never read from the file).
    #[serde(skip)]
    pub recover: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            data_dir: PathBuf::from("./cledger-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            hostnames: Vec::new(),
            curve: None,
            admin_certs: Vec::new(),
            ledger_id: "cledger".to_owned(),
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_collections: DEFAULT_MAX_COLLECTIONS,
            kek_file: None,
            max_connections: 1024,
            reserved_connections: 64,
            max_unauthenticated_connections_per_ip: 256,
            unauthenticated_rate_per_second: 200,
            unauthenticated_rate_burst: 1000,
            send_timeout_secs: 30,
            max_unread_response_bytes: 16 << 20,
            reserved_descriptors: DEFAULT_RESERVED_DESCRIPTORS,
            handshake_timeout_secs: 10,
            shutdown_grace_secs: 10,
            admin_oids: Vec::new(),
            peer_listen: None,
            join: None,
            service_cert: None,
            join_token_file: None,
            recover: false,
            jwt_issuers: Vec::new(),
            idle_timeout_secs: 60,
            request_timeout_secs: 30,
            max_header_bytes: 64 << 10,
            max_url_bytes: 8 << 10,
            max_pending_write_bytes: ledger_http::config::DEFAULT_MAX_PENDING_WRITE_BYTES,
            rate_limit_per_second: 0,
            rate_limit_burst: 0,
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            metrics: true,
            metrics_listen: None,
            checkpoint_interval_ms: 5000,
            signature_interval_ms: DEFAULT_SIGNATURE_INTERVAL_MS,
            signature_tx_count: DEFAULT_SIGNATURE_TX_COUNT,
            checkpoint_origin: None,
            witnesses: Vec::new(),
            idempotency_retention_secs: ledger_http::config::DEFAULT_IDEMPOTENCY_RETENTION_SECS,
            idempotency_client_request_id: false,
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
    pub curve: Option<Curve>,
    pub admin_certs: Vec<PathBuf>,
    pub ledger_id: Option<String>,
    pub max_entry_bytes: Option<usize>,
    pub max_collections: Option<usize>,
    pub kek_file: Option<PathBuf>,
    pub admin_oids: Vec<String>,
    /// `--jwt-issuer`: when given, the one issuer built from the `jwt_*` flags replaces the
    /// file's `[[jwt_issuers]]` list.
    pub jwt_issuer: Option<String>,
    pub jwt_audiences: Vec<String>,
    pub jwt_jwks_file: Option<PathBuf>,
    pub jwt_jwks_url: Option<String>,
    pub jwt_oidc_discovery: Option<String>,
    pub jwt_user_claim: Option<String>,
    pub jwt_tenant_id: Option<String>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub peer_listen: Option<SocketAddr>,
    pub join: Option<String>,
    pub service_cert: Option<PathBuf>,
    pub join_token_file: Option<PathBuf>,
    pub recover: bool,
    pub metrics_listen: Option<SocketAddr>,
    pub checkpoint_interval_ms: Option<u64>,
    pub signature_interval_ms: Option<u64>,
    pub signature_tx_count: Option<u64>,
    pub checkpoint_origin: Option<String>,
    /// `--witness VKEY@URL`: when given, replaces the file's `[[witnesses]]` list.
    pub witnesses: Vec<String>,
}

impl Overrides {
    /// The `--jwt-*` flags other than `--jwt-issuer` only describe that issuer.
    fn check_jwt(&self) -> Result<(), ServeError> {
        let stray = [
            (!self.jwt_audiences.is_empty(), "--jwt-audience"),
            (self.jwt_jwks_file.is_some(), "--jwt-jwks-file"),
            (self.jwt_jwks_url.is_some(), "--jwt-jwks-url"),
            (self.jwt_oidc_discovery.is_some(), "--jwt-oidc-discovery"),
            (self.jwt_user_claim.is_some(), "--jwt-user-claim"),
            (self.jwt_tenant_id.is_some(), "--jwt-tenant-id"),
        ];
        if self.jwt_issuer.is_none()
            && let Some((_, flag)) = stray.iter().find(|(given, _)| *given)
        {
            return Err(ServeError::InvalidSetting(format!(
                "{flag} describes a token issuer and needs --jwt-issuer (more issuers: \
                 [[jwt_issuers]] in the config file)"
            )));
        }
        Ok(())
    }
}

impl ServeConfig {
    /// Reads `overrides.config` (if given) and merges: overrides > file > defaults. Validates
    /// the result.
    pub fn load(overrides: Overrides) -> Result<ServeConfig, ServeError> {
        overrides.check_jwt()?;
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
        for p in [&mut config.service_cert, &mut config.join_token_file]
            .into_iter()
            .flatten()
        {
            rebase(p);
        }
        if let Some(k) = config.kek_file.as_mut() {
            rebase(k);
        }
        for issuer in &mut config.jwt_issuers {
            if let Some(f) = issuer.jwks_file.as_mut() {
                rebase(f);
            }
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
            curve,
            admin_certs,
            ledger_id,
            max_entry_bytes,
            max_collections,
            kek_file,
            admin_oids,
            jwt_issuer,
            jwt_audiences,
            jwt_jwks_file,
            jwt_jwks_url,
            jwt_oidc_discovery,
            jwt_user_claim,
            jwt_tenant_id,
            log_format,
            log_level,
            peer_listen,
            join,
            service_cert,
            join_token_file,
            recover,
            metrics_listen,
            checkpoint_interval_ms,
            signature_interval_ms,
            signature_tx_count,
            checkpoint_origin,
            witnesses,
        } = overrides;
        c.recover = recover;
        if let Some(ms) = checkpoint_interval_ms {
            c.checkpoint_interval_ms = ms;
        }
        if let Some(ms) = signature_interval_ms {
            c.signature_interval_ms = ms;
        }
        if let Some(count) = signature_tx_count {
            c.signature_tx_count = count;
        }
        if checkpoint_origin.is_some() {
            c.checkpoint_origin = checkpoint_origin;
        }
        if !witnesses.is_empty() {
            c.witnesses = witnesses.iter().map(|w| WitnessConfig::parse(w)).collect();
        }
        if metrics_listen.is_some() {
            c.metrics_listen = metrics_listen;
        }
        if peer_listen.is_some() {
            c.peer_listen = peer_listen;
        }
        if join.is_some() {
            c.join = join;
        }
        if service_cert.is_some() {
            c.service_cert = service_cert;
        }
        if join_token_file.is_some() {
            c.join_token_file = join_token_file;
        }
        if let Some(v) = log_format {
            c.log_format = v;
        }
        if let Some(v) = log_level {
            c.log_level = v;
        }
        if let Some(v) = data_dir {
            c.data_dir = v;
        }
        if let Some(v) = listen {
            c.listen = v;
        }
        if !hostnames.is_empty() {
            c.hostnames = hostnames;
        }
        if curve.is_some() {
            c.curve = curve;
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
        if !admin_oids.is_empty() {
            c.admin_oids = admin_oids;
        }
        if let Some(issuer) = jwt_issuer {
            c.jwt_issuers = vec![IssuerConfig {
                issuer,
                audiences: jwt_audiences,
                jwks_file: jwt_jwks_file,
                jwks_url: jwt_jwks_url,
                oidc_discovery: jwt_oidc_discovery,
                user_claim: jwt_user_claim.unwrap_or_else(crate::auth::default_user_claim),
                tenant_id: jwt_tenant_id,
                // One issuer: its principals are the bare claim, as in ACL.
                principal_prefix: None,
            }];
        }
        c
    }

    /// Checks the ranges a setting must be in; the message names the setting.
    pub fn validate(&self) -> Result<(), ServeError> {
        let bad = |msg: String| Err(ServeError::InvalidSetting(msg));
        if self.join.is_some() && (self.peer_listen.is_none() || self.service_cert.is_none()) {
            return bad(
                "join needs peer_listen (--peer-listen) and service_cert (--service-cert)".into(),
            );
        }
        if let Some(url) = &self.join
            && !url.starts_with("https://")
        {
            return bad(format!(
                "join must be an https:// URL of a node's client address, not {url:?}"
            ));
        }
        if self.join.is_none() && (self.service_cert.is_some() || self.join_token_file.is_some()) {
            return bad("service_cert and join_token_file only apply with join (--join)".into());
        }
        if self.recover && (self.peer_listen.is_none() || self.join.is_some()) {
            return bad(
                "--recover founds a new cluster on this ledger: it needs --peer-listen, and not --join"
                    .into(),
            );
        }
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
        for witness in &self.witnesses {
            witness.check().map_err(ServeError::InvalidSetting)?;
        }
        if let Some(origin) = &self.checkpoint_origin {
            ledger_core::note::check_key_name(origin).map_err(|e| {
                ServeError::InvalidSetting(format!("checkpoint_origin {origin:?}: {e}"))
            })?;
        }
        if !self.witnesses.is_empty() && self.checkpoint_interval_ms == 0 {
            return bad("witnesses need checkpoints: checkpoint_interval_ms must not be 0".into());
        }
        if self.signature_interval_ms > MAX_SIGNATURE_INTERVAL_MS {
            return bad(format!(
                "signature_interval_ms must be at most {MAX_SIGNATURE_INTERVAL_MS}, not {}: \
                 every write waits for the next signature",
                self.signature_interval_ms
            ));
        }
        if self.signature_tx_count == 0 {
            return bad("signature_tx_count must be at least 1".to_owned());
        }
        if self.metrics_listen.is_some() && !self.metrics {
            return bad("metrics_listen needs metrics = true".to_owned());
        }
        if self.reserved_connections >= self.max_connections {
            return bad(format!(
                "reserved_connections ({}) must be less than max_connections ({})",
                self.reserved_connections, self.max_connections
            ));
        }
        if self.max_unauthenticated_connections_per_ip == 0 {
            return bad("max_unauthenticated_connections_per_ip must be at least 1".to_owned());
        }
        if self.send_timeout_secs == 0 {
            return bad("send_timeout_secs must be at least 1".to_owned());
        }
        if self.max_unread_response_bytes < 1 << 20 {
            return bad(format!(
                "max_unread_response_bytes must be at least 1048576 (1 MiB), not {}",
                self.max_unread_response_bytes
            ));
        }
        if self.handshake_timeout_secs == 0 {
            return bad("handshake_timeout_secs must be at least 1".to_owned());
        }
        if self.idle_timeout_secs == 0 || self.request_timeout_secs == 0 {
            return bad("idle_timeout_secs and request_timeout_secs must be at least 1".to_owned());
        }
        if self.max_header_bytes < 8192 {
            return bad(format!(
                "max_header_bytes must be at least 8192, not {}",
                self.max_header_bytes
            ));
        }
        if self.max_url_bytes < 1024 {
            return bad(format!(
                "max_url_bytes must be at least 1024, not {}",
                self.max_url_bytes
            ));
        }
        if self.max_pending_write_bytes < self.max_body_bytes() {
            return bad(format!(
                "max_pending_write_bytes ({}) must be at least the largest request body ({} \
                 bytes for max_entry_bytes = {})",
                self.max_pending_write_bytes,
                self.max_body_bytes(),
                self.max_entry_bytes
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return bad(format!("log_level {:?}: {e}", self.log_level));
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
        for oid in &self.admin_oids {
            if oid.is_empty()
                || oid.len() > 128
                || oid
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '/')
            {
                return bad(format!(
                    "admin_oid {oid:?} is not a valid token principal id (expected e.g. an \
                     Entra object id, a GUID)"
                ));
            }
            if crate::http::users::is_fingerprint(oid) {
                return bad(format!(
                    "admin_oid {oid:?} is a certificate fingerprint, which no token can name; \
                     give the certificate with admin_cert"
                ));
            }
        }
        for issuer in &self.jwt_issuers {
            issuer.validate().map_err(ServeError::InvalidSetting)?;
        }
        crate::auth::check_namespaces(&self.jwt_issuers).map_err(ServeError::InvalidSetting)?;
        Ok(())
    }

    /// `signature_interval_ms`, for the store's writer and the cluster's signer alike.
    pub(crate) fn signature_interval(&self) -> Duration {
        Duration::from_millis(self.signature_interval_ms)
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    pub(crate) fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_secs)
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
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

/// `curve = "p256"` in the TOML file: the names `--curve` takes ([`Curve`]'s `FromStr`).
fn curve_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Curve>, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map(Some).map_err(serde::de::Error::custom)
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
curve = "P-256"
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
        assert_eq!(c.curve, Some(Curve::P256));
        // Unset in the file: default.
        assert_eq!(c.max_collections, DEFAULT_MAX_COLLECTIONS);

        // Overrides win, lists are replaced as a whole, unset overrides keep the file's value.
        let c = ServeConfig::load(Overrides {
            config: Some(file),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            hostnames: vec!["other.example".into()],
            ledger_id: Some("from-flag".into()),
            curve: Some(Curve::P384),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.curve, Some(Curve::P384));
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
                config: Some(file.clone()),
                ..Overrides::default()
            })
            .is_err()
        );

        std::fs::write(&file, "curve = \"p521\"\n").unwrap();
        let err = ServeConfig::load(Overrides {
            config: Some(file),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("p521") && err.contains("p256 or p384"),
            "{err}"
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
            (
                Overrides {
                    recover: true,
                    ..Overrides::default()
                },
                "--recover",
            ),
            (
                Overrides {
                    recover: true,
                    peer_listen: Some("127.0.0.1:0".parse().unwrap()),
                    join: Some("https://127.0.0.1:1".into()),
                    service_cert: Some("s.pem".into()),
                    ..Overrides::default()
                },
                "--recover",
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

    #[test]
    fn signature_cadence_from_file_and_flags_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "signature_interval_ms = 50\nsignature_tx_count = 200\n",
        )
        .unwrap();
        let c = ServeConfig::load(Overrides {
            config: Some(file.clone()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!((c.signature_interval_ms, c.signature_tx_count), (50, 200));
        let c = ServeConfig::load(Overrides {
            config: Some(file),
            signature_interval_ms: Some(0),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!((c.signature_interval_ms, c.signature_tx_count), (0, 200));
        let default = ServeConfig::default();
        assert_eq!(
            (default.signature_interval_ms, default.signature_tx_count),
            (1, 1000)
        );
        for (over, words) in [
            (
                Overrides {
                    signature_interval_ms: Some(MAX_SIGNATURE_INTERVAL_MS + 1),
                    ..Overrides::default()
                },
                ["signature_interval_ms", "at most 1000"],
            ),
            (
                Overrides {
                    signature_tx_count: Some(0),
                    ..Overrides::default()
                },
                ["signature_tx_count", "at least 1"],
            ),
        ] {
            let err = ServeConfig::load(over).unwrap_err().to_string();
            assert!(words.iter().all(|w| err.contains(w)), "{err}");
        }
        ServeConfig::load(Overrides {
            signature_interval_ms: Some(MAX_SIGNATURE_INTERVAL_MS),
            signature_tx_count: Some(1),
            ..Overrides::default()
        })
        .unwrap();
    }

    #[test]
    fn jwt_issuers_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            r#"
admin_oid = ["6a1e2c55-0d1b-4c3e-9f00-00000000000a"]

[[jwt_issuers]]
issuer = "https://login.microsoftonline.com/t/v2.0"
audiences = ["https://confidential-ledger.azure.com"]
oidc_discovery = "https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration"
tenant_id = "t"

[[jwt_issuers]]
issuer = "https://idp.example"
audience = ["ledger"]
jwks_file = "keys/jwks.json"
user_claim = "sub"
principal_prefix = "idp"
"#,
        )
        .unwrap();
        let c = ServeConfig::load(Overrides {
            config: Some(file.clone()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.admin_oids.len(), 1);
        assert_eq!(c.jwt_issuers.len(), 2);
        assert_eq!(c.jwt_issuers[0].user_claim, "oid");
        assert_eq!(c.jwt_issuers[0].tenant_id.as_deref(), Some("t"));
        assert_eq!(
            c.jwt_issuers[1].jwks_file.as_deref(),
            Some(dir.path().join("keys/jwks.json").as_path())
        );
        assert_eq!(c.jwt_issuers[1].user_claim, "sub");
        assert_eq!(c.jwt_issuers[0].principal_prefix, None);
        assert_eq!(c.jwt_issuers[1].principal_prefix.as_deref(), Some("idp"));

        // Issuers that could name each other's principals are refused, naming the setting.
        let text = std::fs::read_to_string(&file).unwrap();
        for (changed, expected) in [
            (
                text.replace("principal_prefix = \"idp\"", ""),
                "principal_prefix",
            ),
            (
                text.replace(
                    "tenant_id = \"t\"",
                    "tenant_id = \"t\"\nprincipal_prefix = \"idp\"",
                ),
                "the same principal_prefix \"idp\"",
            ),
            (
                text.replace("principal_prefix = \"idp\"", "principal_prefix = \"a:b\""),
                "principal_prefix \"a:b\"",
            ),
        ] {
            let other = dir.path().join("other.toml");
            std::fs::write(&other, changed).unwrap();
            let err = ServeConfig::load(Overrides {
                config: Some(other),
                ..Overrides::default()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }

        // --jwt-issuer replaces the file's list with one issuer.
        let c = ServeConfig::load(Overrides {
            config: Some(file),
            jwt_issuer: Some("https://other.example".into()),
            jwt_audiences: vec!["a".into()],
            jwt_jwks_url: Some("https://other.example/keys".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.jwt_issuers.len(), 1);
        assert_eq!(c.jwt_issuers[0].issuer, "https://other.example");
        assert_eq!(c.jwt_issuers[0].user_claim, "oid");

        for (over, word) in [
            (
                Overrides {
                    jwt_audiences: vec!["a".into()],
                    ..Overrides::default()
                },
                "--jwt-issuer",
            ),
            (
                Overrides {
                    jwt_issuer: Some("i".into()),
                    jwt_jwks_url: Some("u".into()),
                    ..Overrides::default()
                },
                "audience",
            ),
            (
                Overrides {
                    jwt_issuer: Some("i".into()),
                    jwt_audiences: vec!["a".into()],
                    ..Overrides::default()
                },
                "key source",
            ),
            (
                Overrides {
                    jwt_issuer: Some("i".into()),
                    jwt_audiences: vec!["a".into()],
                    jwt_jwks_url: Some("https://x.example/k".into()),
                    jwt_oidc_discovery: Some("https://x.example/d".into()),
                    ..Overrides::default()
                },
                "only one",
            ),
            (
                Overrides {
                    jwt_issuer: Some("i".into()),
                    jwt_audiences: vec!["a".into()],
                    jwt_jwks_url: Some("http://x.example/k".into()),
                    ..Overrides::default()
                },
                "https",
            ),
            (
                Overrides {
                    admin_oids: vec!["a b".into()],
                    ..Overrides::default()
                },
                "admin_oid",
            ),
            (
                Overrides {
                    admin_oids: vec![["ab"; 32].join(":")],
                    ..Overrides::default()
                },
                "admin_cert",
            ),
        ] {
            let err = ServeConfig::load(over).unwrap_err().to_string();
            assert!(err.contains(word), "{word}: {err}");
        }
        // http on loopback is fine (tests, local proxies).
        ServeConfig::load(Overrides {
            jwt_issuer: Some("i".into()),
            jwt_audiences: vec!["a".into()],
            jwt_jwks_url: Some("http://127.0.0.1:9/keys".into()),
            ..Overrides::default()
        })
        .unwrap();
    }
}
