//! TLS to etcd's `https://` endpoints: rustls with the ring provider (the same one the
//! https checks use: no OpenSSL, nothing to install), blocking, over `std::net`.
//!
//! The server is verified against `ca_file` when given (etcd clusters usually have a CA of
//! their own), else against the Mozilla roots; `cert_file`/`key_file` are the client
//! certificate etcd asks for with `--client-cert-auth`.

use rustls::crypto::ring;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

/// The files `[state]` names for TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles<'a> {
    /// CA certificates (PEM) that sign etcd's server certificates.
    pub ca_file: Option<&'a Path>,
    /// Client certificate chain (PEM).
    pub cert_file: Option<&'a Path>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<&'a Path>,
}

/// A client configuration from `files`; the error names the file and what is wrong.
pub fn client_config(files: &TlsFiles<'_>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut roots = RootCertStore::empty();
    match files.ca_file {
        Some(file) => {
            for c in read_certs(file, "ca_file")? {
                roots.add(c).map_err(|e| {
                    format!(
                        "ca_file {}: not a usable CA certificate: {e}",
                        file.display()
                    )
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = builder.with_root_certificates(roots);
    let config = match (files.cert_file, files.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!(
                    "key_file {}: no PEM private key could be read ({e})",
                    key.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cert_file and key_file do not go together: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("cert_file and key_file go together: give both or neither".into()),
    };
    Ok(Arc::new(config))
}

fn read_certs(file: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("cannot read {key} {}: {e}", file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {} holds no PEM certificate", file.display()));
    }
    Ok(certs)
}

/// What to check, for a TLS failure's message.
pub fn hint(error: &str) -> &'static str {
    if error.contains("invalid peer certificate") {
        " (is ca_file the CA that signed this etcd's certificate, and does the certificate name this host?)"
    } else if error.contains("CertificateRequired") || error.contains("BadCertificate") {
        " (etcd refused ebb's client certificate or got none: set cert_file and key_file to a certificate signed by the CA etcd trusts, --trusted-ca-file)"
    } else {
        ""
    }
}

/// A connection to one endpoint: plain, or TLS with its handshake done.
pub enum Stream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// TLS over `tcp` to `host`, the handshake completed (so that a refused certificate is
    /// reported here, as such, not as a failed request).
    pub fn tls(
        config: &Arc<ClientConfig>,
        host: &str,
        mut tcp: TcpStream,
    ) -> Result<Stream, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("\"{host}\" is not a valid TLS server name: {e}"))?;
        let mut conn =
            ClientConnection::new(config.clone(), name).map_err(|e| format!("TLS setup: {e}"))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|e| format!("TLS handshake failed: {e}{}", hint(&e.to_string())))?;
        }
        Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
