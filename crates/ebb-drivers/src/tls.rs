//! TLS for `https://` checks and monitoring APIs: rustls with the ring provider (no
//! OpenSSL, nothing to configure on the machine running ebb). Servers are verified against
//! the Mozilla roots (webpki-roots) plus the user's `ca_file`; `insecure_tls` accepts any
//! certificate, for a member that serves a self-signed one.

use crate::http::TlsOptions;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_rustls::TlsConnector;

/// Opens a TLS session to `authority` (`host:port`) over `stream`.
pub async fn connect(
    stream: TcpStream,
    authority: &str,
    opts: &TlsOptions,
) -> Result<TlsStream<TcpStream>, String> {
    let config = client_config(opts)?;
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("\"{host}\" is not a valid TLS server name: {e}"))?;
    TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| {
            let hint = if opts.insecure {
                ""
            } else {
                " (for a self-signed certificate set ca_file = \"its.pem\", or insecure_tls = true)"
            };
            format!("TLS handshake with {authority} failed: {e}{hint}")
        })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn client_config(opts: &TlsOptions) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    if opts.insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(file) = &opts.ca_file {
        let certs = CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("cannot read ca_file {}: {e}", file.display()))?;
        let mut n = 0;
        for c in certs {
            let c = c.map_err(|e| format!("ca_file {}: {e}", file.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("ca_file {}: {e}", file.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!(
                "ca_file {} holds no PEM certificate",
                file.display()
            ));
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `insecure_tls = true`: any certificate is accepted; signatures are still checked, so the
/// session is encrypted with the key the server showed.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
