//! mTLS setup shared by the aggregator (server), the collector and the CLI (clients).
//!
//! Every peer holds a key and certificate issued by the fleet CA, with its identity in a
//! URI SAN (see [`crate::identity`]). The server asks every client for a certificate and
//! verifies any it gets against the fleet CA; a client that presents none still
//! completes the handshake so that the gRPC layer can refuse it with a clear
//! `Unauthenticated` status instead of a bare TLS alert. Clients build their side with
//! [`crate::connect`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::identity::{Identity, IdentityError, Role};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in the file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key in the file")]
    NoKey { path: PathBuf },
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("{path}: certificate names no goroscope identity: {source}")]
    Identity {
        path: PathBuf,
        source: IdentityError,
    },
    #[error("tls configuration: {0}")]
    Config(String),
}

/// Where one peer's PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The fleet CA certificate that peers' certificates must chain to.
    pub ca: PathBuf,
    /// This peer's certificate (leaf first, then any intermediates).
    pub cert: PathBuf,
    /// This peer's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The conventional file names inside a directory made by `goroscope certs`:
    /// `ca.pem`, `<stem>.pem`, `<stem>-key.pem`.
    pub fn in_dir(dir: &Path, stem: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// All certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        other => TlsError::BadPem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// The goroscope identity named by the leaf of a certificate file.
pub fn identity_of_file(path: &Path) -> Result<Identity, TlsError> {
    let certs = load_certs(path)?;
    Identity::from_cert_der(&certs[0]).map_err(|source| TlsError::Identity {
        path: path.to_owned(),
        source,
    })
}

/// When the first certificate of a PEM file expires, Unix seconds; `None` if the file
/// cannot be read or parsed.
pub fn not_after(path: &Path) -> Option<i64> {
    let certs = load_certs(path).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).ok()?;
    Some(cert.validity().not_after.timestamp())
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::BadPem {
            path: ca.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The server side: presents `files.cert`, verifies client certificates against
/// `files.ca`, speaks HTTP/2 only.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&files.ca)?), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A server configuration that follows its files (see [`crate::connect::Reloading`]).
pub fn reloading_server_config(
    files: &TlsFiles,
) -> Result<crate::connect::Reloading<rustls::ServerConfig>, TlsError> {
    let files = files.clone();
    crate::connect::Reloading::start(
        vec![files.ca.clone(), files.cert.clone(), files.key.clone()],
        crate::connect::RELOAD_EVERY,
        move || server_config(&files),
    )
}

/// The verified identity of the peer that sent `request`, or the status to refuse it with.
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Result<Identity, tonic::Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        tonic::Status::unauthenticated(
            "no client certificate: connect with a certificate issued by the fleet CA",
        )
    })?;
    let leaf = certs.first().ok_or_else(|| {
        tonic::Status::unauthenticated("no client certificate in the TLS session")
    })?;
    Identity::from_cert_der(leaf)
        .map_err(|e| tonic::Status::unauthenticated(format!("client certificate refused: {e}")))
}

/// Refuses `request` unless its peer holds `role`. Returns the identity on success.
pub fn require_role<T>(request: &tonic::Request<T>, role: Role) -> Result<Identity, tonic::Status> {
    let identity = peer_identity(request)?;
    if identity.role != role {
        return Err(tonic::Status::permission_denied(format!(
            "identity {identity} has role {}; this service is for {} identities only",
            identity.role, role
        )));
    }
    Ok(identity)
}
