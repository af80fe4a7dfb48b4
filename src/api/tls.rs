//! HTTPS for the REST API: the certificate and key from `tls_cert` / `tls_key`, served through a resolver
//! whose pair can be swapped while the node runs.
//!
//! rustls (with the `ring` provider, no OpenSSL) does the TLS; [`super::server`] runs the handshake on each
//! accepted connection, bounded by `http_header_timeout`, and then serves HTTP/1.1 or HTTP/2 over it as it
//! does over plain TCP (ALPN offers `h2` and `http/1.1`). With TLS configured the port speaks HTTPS only: a
//! plain-HTTP request fails the handshake and is closed without an answer, since an answer in clear is
//! exactly what the operator asked not to send.
//!
//! # Reload
//! On SIGHUP the server calls [`Tls::reload`]: both files are read and checked again (PEM, the key matches
//! the certificate) and, if they pass, the resolver hands the new pair to every handshake from then on.
//! Connections already established keep the session they negotiated, so nothing is dropped. A pair that
//! fails is logged and the old one kept: a half-copied file must not take HTTPS down.
//! `cave_tls_certificate_expiry_timestamp_seconds` and the log say which certificate is served.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use tokio_rustls::TlsAcceptor;
use x509_cert::der::Decode;

use crate::config::TlsFiles;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The protocols offered by ALPN, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The REST API's TLS: the acceptor handshakes use, the files its pair is read from, and the SIGHUPs that
/// ask for a reload.
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
    files: TlsFiles,
    /// Installed by [`Tls::load`], at the start of the node, so that a SIGHUP while the node is still
    /// opening its data (a certificate renewal hook runs whenever it likes) is kept for the server rather
    /// than killing the process (SIGHUP's default action); taken by the server's accept loop.
    hangups: Option<tokio::signal::unix::Signal>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Read and check the pair in `files`, and start listening for SIGHUP (which needs a Tokio runtime).
    /// Every failure of the pair is an [`Error::InvalidInput`] naming the file and what is wrong with it
    /// (never quoting the key), so that a node refuses to start on a bad pair.
    pub fn load(files: &TlsFiles) -> Result<Tls> {
        let pair = Pair::read(files)?;
        tokio::runtime::Handle::try_current()
            .map_err(|_| Error::internal("TLS is loaded outside a Tokio runtime: SIGHUP cannot be handled"))?;
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|err| Error::internal(format!("cannot listen for SIGHUP: {err}")))?;
        let provider = Arc::new(provider());
        let resolver = Arc::new(Resolver {
            current: RwLock::new(pair),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::internal(format!("TLS protocol versions: {err}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            files: files.clone(),
            hangups: Some(hangups),
        })
    }

    /// The SIGHUPs since [`Tls::load`], for the one accept loop that reloads on them.
    pub fn take_hangups(&mut self) -> Option<tokio::signal::unix::Signal> {
        self.hangups.take()
    }

    /// What handshakes accepted connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Log which certificate is served and publish its expiry in `metrics`.
    pub fn report(&self, metrics: &Metrics) {
        let current = self.resolver.current.read();
        metrics.tls_certificate(current.not_after_s);
        if current.not_after < SystemTime::now() {
            tracing::warn!(cert = %self.files.cert.display(), not_after = %current.not_after_text,
                "the TLS certificate has expired: clients will refuse it");
        }
        tracing::info!(
            cert = %self.files.cert.display(),
            subject = %current.subject,
            not_after = %current.not_after_text,
            sha256 = %current.fingerprint,
            "serving HTTPS"
        );
    }

    /// Read the files again and serve the new pair from the next handshake on; keep the old one (and log
    /// why) if the new one does not pass. Returns whether the new pair is served.
    pub fn reload(&self, metrics: &Metrics) -> bool {
        match Pair::read(&self.files) {
            Ok(pair) => {
                *self.resolver.current.write() = pair;
                metrics.tls_reload(true);
                self.report(metrics);
                true
            }
            Err(err) => {
                metrics.tls_reload(false);
                let current = self.resolver.current.read();
                tracing::error!(%err, still_serving = %current.fingerprint,
                    "cannot reload the TLS certificate; the previous one stays in use");
                false
            }
        }
    }
}

/// A checked certificate chain and key, and what the log and metrics say about it.
#[derive(Debug)]
struct Pair {
    key: Arc<CertifiedKey>,
    subject: String,
    not_after: SystemTime,
    not_after_s: u64,
    not_after_text: String,
    /// SHA-256 of the server's certificate (DER), in hex: what `openssl x509 -fingerprint -sha256` shows.
    fingerprint: String,
}

impl Pair {
    fn read(files: &TlsFiles) -> Result<Pair> {
        let cert_name = || format!("tls_cert {}", files.cert.display());
        let key_name = || format!("tls_key {}", files.key.display());
        let cert_pem = read_file(&files.cert, &cert_name())?;
        let key_pem = read_file(&files.key, &key_name())?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|err| Error::invalid(format!("{} is not a PEM certificate chain: {err}", cert_name())))?;
        let Some(leaf) = chain.first().cloned() else {
            return Err(Error::invalid(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                cert_name()
            )));
        };
        // The library's message is not shown: it may quote a line of the file, which holds the key.
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            Error::invalid(format!(
                "{} holds no PEM private key (PKCS#8 \"PRIVATE KEY\", PKCS#1 \"RSA PRIVATE KEY\" or SEC1 \"EC \
                 PRIVATE KEY\")",
                key_name()
            ))
        })?;
        let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => {
                Error::invalid(format!("{} is not the private key of {}", key_name(), cert_name()))
            }
            other => Error::invalid(format!("{} or {}: {other}", cert_name(), key_name())),
        })?;
        let parsed = x509_cert::Certificate::from_der(&leaf)
            .map_err(|err| Error::invalid(format!("{}: the first certificate is not X.509: {err}", cert_name())))?;
        let validity = parsed.tbs_certificate.validity;
        let not_after_unix = validity.not_after.to_unix_duration();
        Ok(Pair {
            key: Arc::new(key),
            subject: parsed.tbs_certificate.subject.to_string(),
            not_after: UNIX_EPOCH + not_after_unix,
            not_after_s: not_after_unix.as_secs().max(1),
            not_after_text: validity.not_after.to_string(),
            fingerprint: Sha256::digest(&leaf).iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

fn read_file(path: &Path, name: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| Error::invalid(format!("cannot read {name}: {err}")))
}

/// Hands every handshake the pair current at that moment.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Pair>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().key.clone())
    }
}

fn provider() -> CryptoProvider {
    ring::default_provider()
}

/// The client side of `cave healthcheck` over HTTPS, to wrap around the probe's socket. It does not verify
/// the server's certificate (it still checks the handshake's signatures): the probe targets the node on its
/// own host, sends no token or value and reads only the status, so a certificate made for the node's public
/// name (not for `127.0.0.1`) or a self-signed one must not make a healthy node look unhealthy. It names the
/// server `localhost` (SNI); the node serves the same certificate whatever the name.
pub fn probe_connection() -> std::result::Result<rustls::ClientConnection, rustls::Error> {
    let provider = Arc::new(provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(|err| rustls::Error::General(err.to_string()))?;
    rustls::ClientConnection::new(Arc::new(config), name)
}

/// Accepts any certificate; verifies the handshake signatures with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
