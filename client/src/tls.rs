//! Trust for the node's certificate: a private CA (chain validation with only that root), or
//! a pinned certificate fingerprint.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::{ConnectError, Trust};

pub(crate) fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, ConnectError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ConnectError::Trust(e.to_string()))?;
    let mut config = match trust {
        Trust::CaFile(_) | Trust::CaPem(_) => {
            let pem = match trust {
                Trust::CaFile(path) => std::fs::read(path)
                    .map_err(|e| ConnectError::Trust(format!("{}: {e}", path.display())))?,
                Trust::CaPem(pem) => pem.clone(),
                Trust::Fingerprint(_) => Vec::new(),
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| ConnectError::Trust(format!("CA certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ConnectError::Trust(format!("CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ConnectError::Trust("no CA certificate found".to_owned()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Fingerprint(fp) => {
            let expected = hex::decode(fp.replace(':', ""))
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    ConnectError::Trust("a fingerprint is 64 hex digits (SHA-256)".to_owned())
                })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                    expected,
                    provider,
                }))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![veche_protocol::ALPN.to_vec()];
    config.enable_early_data = false;
    Ok(config)
}

/// Accepts exactly one server certificate, identified by its SHA-256, and checks that the
/// server holds its key.
#[derive(Debug)]
struct PinnedCertificate {
    expected: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref())[..] == self.expected[..] {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server certificate does not match the pinned fingerprint".to_owned(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".to_owned()))
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
