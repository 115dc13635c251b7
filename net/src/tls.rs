//! mTLS set-up. Servers (the hub; later nodes serving hash checks) require a
//! client certificate from the federation CA, refuse revoked ones (CRL files,
//! re-read when they change) and speak TLS 1.3 only. The peer's identity is
//! read from its certificate once, at the handshake, and handed to every
//! request of that connection: no request field can claim another identity.

use meldnet_core::SpiffeId;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// Errors of TLS set-up, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {message}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(what: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(what, path, e))?;
    if certs.is_empty() {
        return Err(file_err(what, path, "no certificate in file"));
    }
    Ok(certs)
}

/// The first certificate of a party's own chain: its identity.
fn own_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    load_certs(path, "tls.cert")?
        .into_iter()
        .next()
        .ok_or_else(|| file_err("tls.cert", path, "no certificate in file"))
}

/// Reads a private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err("tls.key", path, e))
}

fn load_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for p in paths {
        let crls = CertificateRevocationListDer::pem_file_iter(p)
            .map_err(|e| file_err("tls.crls", p, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err("tls.crls", p, e))?;
        out.extend(crls);
    }
    Ok(out)
}

/// The TLS files of a server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFiles {
    /// The federation CA certificate (PEM): the only issuer of client certificates.
    pub ca: PathBuf,
    /// This server's certificate chain (PEM).
    pub cert: PathBuf,
    /// This server's private key (PEM).
    pub key: PathBuf,
    /// Certificate revocation lists (PEM), re-read when they change.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
}

/// The TLS files of a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsFiles {
    /// The federation CA certificate (PEM), to check the hub.
    pub ca: PathBuf,
    /// This party's certificate (PEM), which carries its SPIFFE id.
    pub cert: PathBuf,
    /// This party's private key (PEM).
    pub key: PathBuf,
}

impl ServerTlsFiles {
    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key]
            .into_iter()
            .chain(self.crls.iter_mut())
        {
            *p = base.join(&*p);
        }
    }

    /// The DNS names of the certificate: what a client checks a server's
    /// certificate for, so what a server tells its clients to ask for.
    pub fn dns_names(&self) -> Result<Vec<String>, TlsError> {
        let cert = own_cert(&self.cert)?;
        meldnet_core::dns_names(&cert).map_err(|e| file_err("tls.cert", &self.cert, e))
    }
}

impl ClientTlsFiles {
    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key] {
            *p = base.join(&*p);
        }
    }

    /// The identity in this party's own certificate.
    pub fn identity(&self) -> Result<SpiffeId, TlsError> {
        let cert = own_cert(&self.cert)?;
        SpiffeId::from_certificate(&cert).map_err(|e| file_err("tls.cert", &self.cert, e))
    }
}

/// A client-certificate verifier that re-reads the CRL files when they
/// change, so a revocation takes effect without restarting the server.
#[derive(Debug)]
pub struct ReloadingVerifier {
    roots: Arc<RootCertStore>,
    crl_paths: Vec<PathBuf>,
    hints: Vec<DistinguishedName>,
    state: RwLock<(CrlStamp, Arc<dyn ClientCertVerifier>)>,
}

/// What identifies the current content of the CRL files cheaply: for each
/// file its modification time, length and inode (a rename-into-place changes
/// the inode even within one mtime tick).
type CrlStamp = Vec<Option<(SystemTime, u64, u64)>>;

fn crl_stamp(paths: &[PathBuf]) -> CrlStamp {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))
        })
        .collect()
}

fn build_verifier(
    roots: &Arc<RootCertStore>,
    crl_paths: &[PathBuf],
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut b = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider);
    let crls = load_crls(crl_paths)?;
    if !crls.is_empty() {
        b = b.with_crls(crls).only_check_end_entity_revocation();
    }
    b.build().map_err(|e| TlsError::Config(e.to_string()))
}

impl ReloadingVerifier {
    /// A verifier trusting `roots` and refusing what `crl_paths` revoke.
    pub fn new(roots: RootCertStore, crl_paths: Vec<PathBuf>) -> Result<Arc<Self>, TlsError> {
        let roots = Arc::new(roots);
        let inner = build_verifier(&roots, &crl_paths)?;
        let hints = inner.root_hint_subjects().to_vec();
        Ok(Arc::new(ReloadingVerifier {
            state: RwLock::new((crl_stamp(&crl_paths), inner)),
            roots,
            crl_paths,
            hints,
        }))
    }

    /// Checks a peer's certificate chain again, against the CRLs and the clock
    /// of now: a connection opened before a revocation or an expiry does not
    /// keep its rights.
    pub fn recheck(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err("no client certificate".into());
        };
        self.verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Re-reads the CRLs if a file changed since the last read. A CRL that
    /// fails to parse keeps the previous one in force and is reported.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = crl_stamp(&self.crl_paths);
        let unchanged = self.state.read().map(|s| s.0 == stamp).unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        let inner = build_verifier(&self.roots, &self.crl_paths)?;
        if let Ok(mut s) = self.state.write() {
            *s = (stamp, inner);
        }
        Ok(true)
    }

    fn inner(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.state
            .read()
            .map(|s| s.1.clone())
            .map_err(|_| rustls::Error::General("verifier lock poisoned".into()))
    }
}

impl ClientCertVerifier for ReloadingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Re-checking the mtime per handshake is cheap next to the handshake.
        if let Err(e) = self.reload_if_changed() {
            tracing::error!(error = %e, "CRL reload failed; previous CRLs stay in force");
        }
        self.inner()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// A rustls server configuration: TLS 1.3 only, HTTP/2, client certificate
/// required from the federation CA and not revoked.
pub fn server_config(
    files: &ServerTlsFiles,
) -> Result<(Arc<rustls::ServerConfig>, Arc<ReloadingVerifier>), TlsError> {
    server_config_with(files, None, false)
}

/// As `server_config`, also trusting the CA in `extra_ca` (a node's own CA
/// for its hosting providers) and, with `http1`, offering HTTP/1.1 beside
/// HTTP/2 (for HTTP/JSON clients).
pub fn server_config_with(
    files: &ServerTlsFiles,
    extra_ca: Option<(&'static str, &Path)>,
    http1: bool,
) -> Result<(Arc<rustls::ServerConfig>, Arc<ReloadingVerifier>), TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(&files.ca, "tls.ca")? {
        roots.add(c).map_err(|e| file_err("tls.ca", &files.ca, e))?;
    }
    if let Some((what, path)) = extra_ca {
        for c in load_certs(path, what)? {
            roots.add(c).map_err(|e| file_err(what, path, e))?;
        }
    }
    let verifier = ReloadingVerifier::new(roots, files.crls.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(load_certs(&files.cert, "tls.cert")?, load_key(&files.key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    if http1 {
        cfg.alpn_protocols.push(b"http/1.1".to_vec());
    }
    Ok((Arc::new(cfg), verifier))
}

/// What a server knows of the peer of a connection; tonic puts it in every
/// request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's identity from its certificate, or why there is none.
    pub identity: Result<SpiffeId, String>,
    /// The certificate chain it presented, to check again later.
    pub chain: Vec<CertificateDer<'static>>,
    /// The peer's address.
    pub remote: Option<SocketAddr>,
}
