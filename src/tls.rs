//! Outbound TLS, for every HTTP and SMTP client the crate makes: which
//! roots are trusted, and the one place a `reqwest::Client` is built.
//!
//! Trusted: the Mozilla roots compiled in (`webpki-roots`, the set lettre
//! already used for SMTP) plus, when configured, every certificate of one
//! PEM bundle (`sinks.tls.ca_file` for the daemon, `--ca-file` /
//! `OUTAGECTL_CA_FILE` for `outagectl`): an operator's private CA for its
//! IVR, provisioning or SMS gateways. The platform's store
//! (`/etc/ssl/certs`) is not read, so what the daemon trusts does not depend
//! on the image it runs in. Crypto is rustls with *ring* (no C toolchain
//! beyond cc, no cmake). Kafka is not here: librdkafka does its own TLS with
//! OpenSSL (`kafka.client."ssl.ca.location"`).
//!
//! Every `reqwest::Client` goes through [`http_client`] (clippy's
//! `disallowed-methods` keeps it that way): with reqwest's
//! `rustls-no-provider` feature a client built any other way would have
//! no crypto provider and panic.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The roots outbound TLS trusts (`crate::tls`): the built-in Mozilla
/// roots, plus a CA file's.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// A PEM bundle of CA certificates trusted besides the built-in roots
    /// (an operator's private CA). Read at start-up; an unreadable file or
    /// one without a certificate is an error. Default: none.
    pub ca_file: Option<PathBuf>,
}

/// A CA file that could not be used; names the setting it came from.
#[derive(Debug, thiserror::Error)]
#[error("`{key}`: {path}: {message}")]
pub struct CaFileError {
    /// The setting: `sinks.tls.ca_file`, `--ca-file`.
    pub key: String,
    pub path: PathBuf,
    pub message: String,
}

impl From<CaFileError> for crate::runtime::InvalidSetting {
    fn from(e: CaFileError) -> Self {
        crate::runtime::InvalidSetting { key: e.key, message: format!("{}: {}", e.path.display(), e.message) }
    }
}

/// The roots outbound TLS trusts. Cheap to clone.
#[derive(Clone)]
pub struct Trust {
    /// For reqwest: built once, shared by every client.
    http: Arc<rustls::ClientConfig>,
    /// The CA file's certificates (DER), for lettre, which builds its own
    /// rustls configuration.
    extra: Arc<[CertificateDer<'static>]>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").field("extra_roots", &self.extra.len()).finish_non_exhaustive()
    }
}

impl Default for Trust {
    /// The built-in roots only.
    fn default() -> Self {
        // Only the built-in roots: nothing from outside can fail here.
        Trust::with_roots(Vec::new()).unwrap_or_else(|_| unreachable!("webpki-roots are valid trust anchors"))
    }
}

impl Trust {
    /// The built-in roots plus every certificate in `ca_file` (PEM, one or
    /// more `CERTIFICATE` blocks; anything else in the file is ignored).
    /// `key` names the setting in errors.
    pub fn load(ca_file: Option<&Path>, key: &str) -> Result<Self, CaFileError> {
        let Some(path) = ca_file else { return Ok(Trust::default()) };
        let err = |message: String| CaFileError { key: key.into(), path: path.into(), message };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("not a PEM file: {e}")))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into()));
        }
        Trust::with_roots(certs).map_err(err)
    }

    /// The number of certificates added from the CA file.
    pub fn extra_roots(&self) -> usize {
        self.extra.len()
    }

    fn with_roots(extra: Vec<CertificateDer<'static>>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for (i, c) in extra.iter().enumerate() {
            roots.add(c.clone()).map_err(|e| format!("certificate {} of the file: {e}", i + 1))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let http = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Trust { http: Arc::new(http), extra: extra.into() })
    }

    /// The rustls client configuration with these roots (implicit TLS to
    /// the SMTP relay, over the socket `sinks::email` opens).
    pub fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        self.http.clone()
    }

    /// lettre's TLS parameters for `domain` (the SMTP relay's name, which
    /// its certificate must carry): the same roots.
    pub fn smtp(&self, domain: &str) -> Result<lettre::transport::smtp::client::TlsParameters, String> {
        use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
        let mut b = TlsParameters::builder(domain.to_string()).certificate_store(CertificateStore::WebpkiRoots);
        for c in self.extra.iter() {
            b = b.add_root_certificate(Certificate::from_der(c.to_vec()).map_err(|e| e.to_string())?);
        }
        b.build_rustls().map_err(|e| e.to_string())
    }
}

/// The one `reqwest::ClientBuilder` every outbound HTTP client starts from
/// (SMS gateways, the IVR platform, the provisioning API, `outagectl`):
/// TLS through rustls with `trust`'s roots. Callers add their timeouts.
#[allow(clippy::disallowed_methods)] // the one place allowed to
pub fn http_client(trust: &Trust) -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(rustls::ClientConfig::clone(&trust.http))
}

/// An HTTPS server for unit tests: the fixture certificate (localhost,
/// 127.0.0.1) from `tests/fixtures/tls/`, made by `scripts/tls_ca.sh` with
/// `DAYS=36500` (test-only keys, valid until 2126).
/// A failed request in words, without its URL (Kannel's query holds the
/// password, the number and the text) and with every cause, which is where
/// the reason is: `error sending request: client error (Connect): invalid
/// peer certificate: UnknownIssuer`.
pub fn transport_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut words = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !words.contains(&more) {
            words.push_str(": ");
            words.push_str(&more);
        }
        cause = c.source();
    }
    words
}

#[cfg(test)]
pub(crate) mod testing {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::path::PathBuf;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
    }

    /// The server side of a test TLS endpoint: the fixture's server
    /// certificate and key (signed by the fixture CA).
    pub fn acceptor() -> tokio_rustls::TlsAcceptor {
        let certs =
            CertificateDer::pem_file_iter(fixture("server.pem")).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// Answers every request with 200 and `body` (JSON) over TLS, one
    /// request per connection. Returns the port.
    pub async fn https_server(body: &'static str) -> u16 {
        let acceptor = acceptor();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust us aborts the handshake.
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(body.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{fixture, https_server};
    use super::*;

    #[tokio::test]
    async fn https_trusts_the_ca_file_and_only_with_it() {
        let port = https_server("{}").await;
        let url = format!("https://localhost:{port}/");
        let with_ca = Trust::load(Some(&fixture("ca.pem")), "sinks.tls.ca_file").unwrap();
        assert_eq!(with_ca.extra_roots(), 1);
        let r = http_client(&with_ca).build().unwrap().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // By IP address too (the certificate names 127.0.0.1).
        let r = http_client(&with_ca).build().unwrap().get(format!("https://127.0.0.1:{port}/")).send().await;
        assert_eq!(r.unwrap().status(), 200);
        // The built-in roots alone do not know the test CA.
        let e = http_client(&Trust::default()).build().unwrap().get(&url).send().await.unwrap_err();
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        assert!(cause.to_string().contains("UnknownIssuer"), "{cause}");
        let words = transport_error(e);
        assert!(words.contains("UnknownIssuer") && !words.contains("localhost"), "{words}");
    }

    #[test]
    fn a_ca_file_error_names_the_setting_and_the_file() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("missing.pem");
        let e = Trust::load(Some(&missing), "sinks.tls.ca_file").unwrap_err().to_string();
        assert!(e.contains("sinks.tls.ca_file") && e.contains("missing.pem"), "{e}");
        let empty = d.path().join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();
        let e = Trust::load(Some(&empty), "--ca-file").unwrap_err().to_string();
        assert!(e.contains("--ca-file") && e.contains("no PEM certificate"), "{e}");
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let e = Trust::load(Some(&junk), "sinks.tls.ca_file").unwrap_err().to_string();
        assert!(e.contains("certificate 1"), "{e}");
    }

    #[test]
    fn no_file_is_the_built_in_roots_and_clients_build() {
        let t = Trust::load(None, "sinks.tls.ca_file").unwrap();
        assert_eq!(t.extra_roots(), 0);
        http_client(&t).build().unwrap();
        t.smtp("smtp.example.net").unwrap();
    }
}
