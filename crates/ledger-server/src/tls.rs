//! The TLS server configuration.
//!
//! * rustls with the aws-lc-rs provider, chosen explicitly (`builder_with_provider`), so no
//!   process-wide default provider is needed; TLS 1.3 and 1.2 only.
//! * The chain sent is `[node certificate, service certificate]`: clients pin the service
//!   certificate (`DATA_DIR/service_cert.pem`), and OpenSSL-based clients (Python) validate
//!   whether their trust file holds the service certificate alone or both.
//! * ALPN offers `h2` and `http/1.1`.
//! * Client certificates are **requested but neither required nor CA-validated**
//!   ([`AnyClientCert`]). That is Azure confidential ledger's model: users register
//!   certificates (usually self-signed) at runtime, the user id is the SHA-256 fingerprint of
//!   the certificate, and authorization happens per route in `ledger-http`. A CA check in the
//!   handshake would reject exactly those self-signed user certificates, and requiring a
//!   certificate would reject token-based callers. What the handshake still checks is the
//!   CertificateVerify signature: the client proves it holds the certificate's private key,
//!   so a fingerprint cannot be claimed by someone who merely has the (public) certificate.

use crate::ServeError;
use ledger_identity::files::NodeFiles;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::sync::Arc;

/// The crypto provider used for TLS everywhere in the server (and in its tests).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the server configuration from the node's identity files.
pub fn server_config(files: &NodeFiles) -> Result<Arc<ServerConfig>, ServeError> {
    let tls = |what: &str, e: String| ServeError::Tls(format!("{what}: {e}"));
    let node_cert = CertificateDer::from_pem_slice(files.node_cert_pem.as_bytes())
        .map_err(|e| tls("identity/node_cert.pem", e.to_string()))?;
    let service_cert = CertificateDer::from_pem_slice(files.service_cert_pem.as_bytes())
        .map_err(|e| tls("service_cert.pem", e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(files.node_key_pem.as_bytes())
        .map_err(|e| tls("identity/node_key.pem", e.to_string()))?;
    let provider = provider();
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls("protocol versions", e.to_string()))?
        .with_client_cert_verifier(Arc::new(AnyClientCert(provider)))
        .with_single_cert(vec![node_cert, service_cert], key)
        .map_err(|e| tls("node certificate and key", e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Offers client authentication, does not require it, accepts any end-entity certificate, and
/// still verifies the client's handshake signature (proof of possession of the key).
#[derive(Debug)]
pub struct AnyClientCert(pub Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Who the certificate belongs to is decided per route, from its fingerprint.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
