//! TLS for `https://` checks and monitoring APIs: rustls with the ring provider (no
//! OpenSSL, nothing to configure on the machine running ebb). Servers are verified against
//! the Mozilla roots (webpki-roots) plus the user's `ca_file`; `insecure_tls` accepts any
//! certificate, for a member that serves a self-signed one. A client certificate is
//! presented when one is configured (WinRM's `winrm_auth = "certificate"`).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_rustls::TlsConnector;

/// How an `https://` server is verified.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Accept any certificate (self-signed, expired, another name): encrypted but not
    /// authenticated.
    pub insecure: bool,
    /// Also trust the certificates in this PEM file.
    pub ca_file: Option<std::path::PathBuf>,
    /// Present this client certificate and key (PEM files) when the server asks for one.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

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
            let hint = if opts.insecure || opts.ca_file.is_some() {
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
    let client = client_identity(opts)?;
    if opts.insecure {
        let b = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())));
        return with_identity(b, client);
    }
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut pinned = Vec::new();
    if let Some(file) = &opts.ca_file {
        let certs = CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("cannot read ca_file {}: {e}", file.display()))?;
        let mut n = 0;
        for c in certs {
            let c = c.map_err(|e| format!("ca_file {}: {e}", file.display()))?;
            pinned.push(c.clone());
            // A self-signed server certificate is often not a valid CA (no CA flag):
            // it is still accepted below as a pinned certificate.
            let _ = roots.add(c);
            n += 1;
        }
        if n == 0 {
            return Err(format!(
                "ca_file {} holds no PEM certificate",
                file.display()
            ));
        }
    }
    if pinned.is_empty() {
        return with_identity(builder.with_root_certificates(roots), client);
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let b = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki { webpki, pinned }));
    with_identity(b, client)
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The client certificate chain and key of `opts.client_cert`, read now so that a missing
/// or unusable file is named before anything is sent.
fn client_identity(opts: &TlsOptions) -> Result<Option<Identity>, String> {
    let Some((cert, key)) = &opts.client_cert else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the client certificate {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("client certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "client certificate {} holds no PEM certificate",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "cannot read the client key {} (a PEM private key): {e}",
            key.display()
        )
    })?;
    Ok(Some((chain, key)))
}

fn with_identity(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    identity: Option<Identity>,
) -> Result<ClientConfig, String> {
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the client certificate and key do not go together: {e}")),
    }
}

/// `ca_file`: a server whose certificate is one of the file's (a self-signed
/// certificate, byte for byte) is accepted; any other is verified against the roots and
/// the file's CAs as usual.
#[derive(Debug)]
struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
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
