//! An issuer's signing keys: where they come from, which algorithm each may verify, and the
//! cache that keeps them fresh.
//!
//! Why our own cache (and not a crate): a resource server needs only "discovery → JWKS → keys by
//! `kid`", refreshed on a timer and when a token names a `kid` we have not seen (the issuer
//! rotated its keys). Both refreshes are rate-limited, and failures back off exponentially, so a
//! stream of tokens with made-up `kid`s cannot make us hammer the issuer. A failed refresh keeps
//! the keys we had.
//!
//! The algorithm a key verifies comes from the key (its JWK `alg`, else its type and curve),
//! never from the token alone: RSA keys verify RS256/PS256, P-256 keys ES256, P-384 keys ES384.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The algorithms we accept at all.
pub const SUPPORTED: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// How often keys are re-fetched even when nothing asks for it.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(3600);
/// After a refresh caused by an unknown `kid`, the next one waits at least this long.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery or JWKS document we read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Where an issuer's keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    JwksUrl(String),
    Discovery(String),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "JWKS file {}", p.display()),
            KeySource::JwksUrl(u) => write!(f, "JWKS {u}"),
            KeySource::Discovery(u) => write!(f, "OpenID discovery {u}"),
        }
    }
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{source_name}: {reason}")]
    Fetch { source_name: String, reason: String },
    #[error("{source_name}: no usable signing key (RS256, PS256, ES256 or ES384)")]
    NoKeys { source_name: String },
}

/// `https://`, or `http://` to a loopback address (tests, a local proxy).
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!("{url:?}: keys must be fetched over https"))
            }
        }
        other => Err(format!("{url:?}: unsupported scheme {other:?} (use https)")),
    }
}

/// One verification key and the algorithms it may verify.
pub struct Key {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// The keys of one issuer at one moment.
#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the signature keys we can use and skipping the rest
    /// (other key types, encryption keys, unknown algorithms).
    pub fn from_jwks(text: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys = doc
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(|jwk| usable(&jwk))
            .collect();
        Ok(KeySet { keys })
    }

    /// The key a token's header names: by `kid`, or the only key when neither names one.
    pub fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::PS256],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        _ => return None, // HMAC secrets, EdDSA, unknown: never
    };
    let algorithms = match jwk.common.key_algorithm {
        Some(alg) => {
            let alg = match alg {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                _ => return None,
            };
            if !by_type.contains(&alg) {
                return None; // e.g. an RSA key claiming ES256, or HS256
            }
            vec![alg]
        }
        None => by_type,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    })
}

struct Schedule {
    fetched_at: Instant,
    /// Earliest moment for the next refresh caused by an unknown `kid` or a timer.
    next_allowed: Instant,
    failures: u32,
}

/// The cached keys of one issuer.
pub struct KeyStore {
    source: KeySource,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    schedule: std::sync::Mutex<Schedule>,
    // Serializes fetches, so a burst of unknown kids makes one request.
    fetching: tokio::sync::Mutex<()>,
}

impl KeyStore {
    /// Loads the keys once; an issuer whose keys cannot be loaded at start is a setup error.
    pub async fn load(source: KeySource, http: reqwest::Client) -> Result<KeyStore, KeyError> {
        let keys = fetch(&source, &http).await?;
        let now = Instant::now();
        Ok(KeyStore {
            source,
            http,
            keys: RwLock::new(Arc::new(keys)),
            schedule: std::sync::Mutex::new(Schedule {
                fetched_at: now,
                next_allowed: now,
                failures: 0,
            }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    #[cfg(test)]
    pub(crate) fn empty_for_tests() -> KeyStore {
        let now = Instant::now();
        KeyStore {
            source: KeySource::File(PathBuf::from("/nonexistent/jwks.json")),
            http: reqwest::Client::new(),
            keys: RwLock::new(Arc::new(KeySet::default())),
            schedule: std::sync::Mutex::new(Schedule {
                fetched_at: now,
                next_allowed: now,
                failures: 0,
            }),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The keys as they are now.
    pub fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether the keys are older than [`REFRESH_INTERVAL`] (and a refresh is allowed).
    pub fn stale(&self) -> bool {
        let s = self.lock_schedule();
        let now = Instant::now();
        now.duration_since(s.fetched_at) >= REFRESH_INTERVAL && now >= s.next_allowed
    }

    /// Re-fetches the keys unless rate-limited or backing off. Returns whether new keys were
    /// installed. Failures keep the old keys.
    pub async fn refresh(&self) -> bool {
        let _one = self.fetching.lock().await;
        if Instant::now() < self.lock_schedule().next_allowed {
            return false;
        }
        let result = fetch(&self.source, &self.http).await;
        let mut s = self.lock_schedule();
        let now = Instant::now();
        match result {
            Ok(keys) => {
                s.fetched_at = now;
                s.failures = 0;
                s.next_allowed = now + UNKNOWN_KID_INTERVAL;
                drop(s);
                match self.keys.write() {
                    Ok(mut k) => *k = Arc::new(keys),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
                }
                true
            }
            Err(e) => {
                s.failures = s.failures.saturating_add(1);
                let backoff = BACKOFF_FIRST
                    .saturating_mul(1u32 << s.failures.min(16).saturating_sub(1))
                    .min(BACKOFF_MAX);
                s.next_allowed = now + backoff;
                tracing::warn!("token keys: refresh failed (retry in {backoff:?}): {e}");
                false
            }
        }
    }

    fn lock_schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        match self.schedule.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

async fn fetch(source: &KeySource, http: &reqwest::Client) -> Result<KeySet, KeyError> {
    let fail = |reason: String| KeyError::Fetch {
        source_name: source.to_string(),
        reason,
    };
    let text = match source {
        KeySource::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || std::fs::read(&path))
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(e.to_string()))?
        }
        KeySource::JwksUrl(url) => get(http, url).await.map_err(fail)?,
        KeySource::Discovery(url) => {
            #[derive(serde::Deserialize)]
            struct Discovery {
                jwks_uri: String,
            }
            let doc = get(http, url).await.map_err(fail)?;
            let doc: Discovery = serde_json::from_slice(&doc)
                .map_err(|e| fail(format!("not an OpenID discovery document: {e}")))?;
            check_url(&doc.jwks_uri).map_err(|e| fail(format!("jwks_uri: {e}")))?;
            get(http, &doc.jwks_uri)
                .await
                .map_err(|e| fail(format!("jwks_uri: {e}")))?
        }
    };
    let keys = KeySet::from_jwks(&text).map_err(fail)?;
    if keys.keys.is_empty() {
        return Err(KeyError::NoKeys {
            source_name: source.to_string(),
        });
    }
    Ok(keys)
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let response = http
        .get(url)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes"
        ));
    }
    Ok(body.to_vec())
}
