//! TLS to the enclave: a handshake whose certificate is judged by attestation, not by
//! WebPKI.
//!
//! CLIENT side. The enclave's certificate is self-signed, so no CA can vouch for it;
//! instead the client accepts the handshake (checking, properly, that the server holds
//! the private key of the certificate it presented — the TLS 1.3 CertificateVerify
//! signature), reads that certificate from the *same* connection, and sends nothing
//! but `GET /v1/attestation` until hardware evidence binds the certificate's public key
//! (`claims.tls_spki_sha256`). Only TLS 1.3, with rustls's aws-lc-rs provider
//! (X25519MLKEM768 hybrid key exchange first).
//!
//! ```text
//!  handshake ─► AcceptAnyServerKey (CertificateVerify checked) ─► peer cert
//!      ─► spki_sha256(cert) ═ evidence claims.tls_spki_sha256 ─► only then: prompts
//! ```

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use x509_cert::der::{Decode, Encode};

/// Accepts any end-entity certificate *for now*: the caller must bind its key through
/// attestation before trusting the connection. TLS 1.3 handshake signatures are
/// verified, so the peer provably holds the certificate's private key.
#[derive(Debug)]
pub struct AcceptAnyServerKey {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerKey {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Deliberately no WebPKI check: the key is authenticated by the attestation
        // that follows on this connection (see `crate::client`).
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The config only enables TLS 1.3; refuse rather than accept blindly.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The client TLS configuration for enclave connections (TLS 1.3 only).
pub fn enclave_tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AcceptAnyServerKey { provider: provider.clone() });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// SHA-256 of the DER SubjectPublicKeyInfo of an X.509 certificate — what the enclave
/// puts in `tls_spki_sha256`.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], String> {
    let cert =
        x509_cert::Certificate::from_der(cert_der).map_err(|e| format!("cannot parse certificate: {e}"))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("cannot encode SPKI: {e}"))?;
    Ok(Sha256::digest(&spki).into())
}
