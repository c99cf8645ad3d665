//! `goroscope certs`: a development fleet CA and the leaf certificates signed by it.
//!
//! Each leaf carries its goroscope identity as a `spiffe://goroscope/<role>/<name>` URI SAN
//! and is written as `<stem>.pem` / `<stem>-key.pem` next to `ca.pem`, the layout
//! [`goroscope_proto::tls::TlsFiles::in_dir`] expects. Production fleets use cert-manager.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use goroscope_proto::identity::{Identity, IdentityError};
use goroscope_proto::tls::TlsError;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// File names of the CA inside the certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// The common name of every CA `init_ca` creates.
/// The CA's common name starts with this and ends with a fingerprint of its key, so
/// that two fleets' CAs never share a subject and a certificate from the other one is
/// refused as `UnknownIssuer`, not as a bad signature of a same-named issuer.
pub const CA_COMMON_NAME: &str = "goroscope fleet CA";

/// How long a CA lives: ten years.
pub const CA_VALIDITY_DAYS: u32 = 3653;

/// The longest a leaf may live; more would outlive any CA made here.
pub const MAX_VALIDITY_DAYS: u32 = CA_VALIDITY_DAYS;

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// The years a validity date may fall in: X.509 writes four-digit years, and a clock
/// before 1970 or far in the future is wrong rather than early or late.
const VALIDITY_YEARS: std::ops::RangeInclusive<i32> = 1970..=9000;

/// Whom a leaf certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A collector, named by the host it runs on.
    Collector(String),
    /// A person or robot that queries the aggregator.
    Operator(String),
    /// An aggregator, named by the DNS name (or IP address) clients dial.
    Aggregator(String),
}

impl Subject {
    fn name(&self) -> &str {
        match self {
            Subject::Collector(name) | Subject::Operator(name) | Subject::Aggregator(name) => name,
        }
    }

    fn role(&self) -> &'static str {
        match self {
            Subject::Collector(_) => "collector",
            Subject::Operator(_) => "operator",
            Subject::Aggregator(_) => "aggregator",
        }
    }

    /// What the name stands for, for error messages.
    fn name_kind(&self) -> &'static str {
        match self {
            Subject::Collector(_) => "host",
            Subject::Operator(_) | Subject::Aggregator(_) => "name",
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> CertsError {
        CertsError::InvalidName {
            role: self.role(),
            kind: self.name_kind(),
            name: self.name().to_owned(),
            reason: reason.into(),
        }
    }

    /// The identity the certificate will carry; validates the name.
    fn identity(&self) -> Result<Identity, CertsError> {
        let result = match self {
            Subject::Collector(host) => Identity::collector(host.as_str()),
            Subject::Operator(name) => Identity::operator(name.as_str()),
            Subject::Aggregator(name) => Identity::aggregator(name.as_str()),
        };
        result.map_err(|e| match e {
            IdentityError::Malformed { reason, .. } => self.invalid(reason),
            other => self.invalid(other.to_string()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{} exists; pass --force to replace it", path.display())]
    Exists { path: PathBuf },
    #[error("{} does not exist; create the fleet CA in {} first", path.display(), dir.display())]
    MissingCa { path: PathBuf, dir: PathBuf },
    #[error("invalid {role} {kind} {name:?}: {reason}")]
    InvalidName {
        role: &'static str,
        kind: &'static str,
        name: String,
        reason: String,
    },
    #[error("invalid subject alternative name {value:?}: {reason}")]
    InvalidSan { value: String, reason: String },
    #[error(
        "extra subject alternative names apply to aggregator certificates only, not to {role} {name:?}"
    )]
    SansNotAllowed { role: &'static str, name: String },
    #[error("validity of 0 days: a certificate must be valid for at least 1 day")]
    ZeroValidity,
    #[error("validity of {days} days is too long: at most {MAX_VALIDITY_DAYS} days (10 years)")]
    ValidityTooLong { days: u32 },
    #[error("{}: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("{}: not a usable private key: {source}", path.display())]
    BadKey { path: PathBuf, source: rcgen::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("generate {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("the system clock reads an implausible date; cannot set certificate validity")]
    Clock,
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CertsError + 'a {
    move |source| CertsError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn generate_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertsError {
    move |source| CertsError::Generate { what, source }
}

/// The file stem of a subject's certificate and key: `collector-<host>`,
/// `operator-<name>` or `aggregator-<name>`.
pub fn stem(subject: &Subject) -> String {
    format!("{}-{}", subject.role(), subject.name())
}

/// Creates `ca.pem` and `ca-key.pem` in `dir` (creating `dir` with mode 0700 if needed).
/// Refuses to overwrite an existing `ca.pem` or `ca-key.pem` unless `force`.
/// Returns the path of `ca.pem`.
pub fn init_ca(dir: &Path, force: bool) -> Result<PathBuf, CertsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error("create directory", dir))?;
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    refuse_existing(&[&cert_path, &key_path], force)?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_error("CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, ca_common_name(&key));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, CA_VALIDITY_DAYS)?;
    let cert = params
        .self_signed(&key)
        .map_err(generate_error("CA certificate"))?;

    // The key first: a ca.pem never appears without the key that goes with it.
    write_file(dir, CA_KEY_FILE, key.serialize_pem().as_bytes(), KEY_MODE)?;
    write_file(dir, CA_CERT_FILE, cert.pem().as_bytes(), CERT_MODE)?;
    Ok(cert_path)
}

/// Issues a key and certificate for `subject`, signed by the CA in `dir`, valid from a day
/// ago (clock skew) for `validity_days`. Writes `<stem>.pem` and `<stem>-key.pem` and
/// returns their paths. `extra_sans` (DNS names or IP addresses) are for aggregators only.
pub fn issue(
    dir: &Path,
    subject: &Subject,
    validity_days: u32,
    extra_sans: &[String],
    force: bool,
) -> Result<(PathBuf, PathBuf), CertsError> {
    if validity_days == 0 {
        return Err(CertsError::ZeroValidity);
    }
    if validity_days > MAX_VALIDITY_DAYS {
        return Err(CertsError::ValidityTooLong {
            days: validity_days,
        });
    }
    let identity = subject.identity()?;
    let sans = subject_alt_names(subject, &identity, extra_sans)?;

    let stem = stem(subject);
    let cert_name = format!("{stem}.pem");
    let key_name = format!("{stem}-key.pem");
    let cert_path = dir.join(&cert_name);
    let key_path = dir.join(&key_name);
    refuse_existing(&[&cert_path, &key_path], force)?;

    let ca = load_ca(dir)?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_error("key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, subject.name());
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match subject {
        Subject::Collector(_) | Subject::Operator(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Subject::Aggregator(_) => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity_days)?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(generate_error("certificate"))?;

    // rcgen re-encodes the CA's subject from the parsed name; a peer matches issuer to
    // subject byte for byte, so make sure the re-encoding is exact.
    let issuer_matches = X509Certificate::from_der(cert.der())
        .is_ok_and(|(_, leaf)| leaf.issuer().as_raw() == ca.subject_der.as_slice());
    if !issuer_matches {
        return Err(CertsError::BadCa {
            path: ca.cert_path,
            reason: "its subject name cannot be reproduced exactly as the issuer of new \
                     certificates (multi-valued or unusual name); use a CA made by goroscope"
                .to_owned(),
        });
    }

    write_file(dir, &key_name, key.serialize_pem().as_bytes(), KEY_MODE)?;
    write_file(dir, &cert_name, cert.pem().as_bytes(), CERT_MODE)?;
    Ok((cert_path, key_path))
}

/// The URI SAN of the identity, then for an aggregator its name as a DNS or IP SAN
/// (plus the loopback addresses for `localhost`) and the extra SANs, without duplicates.
fn subject_alt_names(
    subject: &Subject,
    identity: &Identity,
    extra_sans: &[String],
) -> Result<Vec<SanType>, CertsError> {
    let uri = Ia5String::try_from(identity.uri()).map_err(|e| subject.invalid(e.to_string()))?;
    let mut sans = vec![SanType::URI(uri)];
    let Subject::Aggregator(name) = subject else {
        if extra_sans.is_empty() {
            return Ok(sans);
        }
        return Err(CertsError::SansNotAllowed {
            role: subject.role(),
            name: subject.name().to_owned(),
        });
    };
    let mut add = |san: SanType| {
        if !sans.contains(&san) {
            sans.push(san);
        }
    };
    add(parse_san(name).map_err(|e| match e {
        CertsError::InvalidSan { reason, .. } => subject.invalid(reason),
        other => other,
    })?);
    if name == "localhost" {
        add(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        add(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }
    for extra in extra_sans {
        add(parse_san(extra)?);
    }
    Ok(sans)
}

/// An IP SAN if `value` parses as an IP address, else a DNS SAN.
fn parse_san(value: &str) -> Result<SanType, CertsError> {
    let invalid = |reason: &str| CertsError::InvalidSan {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    validate_dns_name(value).map_err(invalid)?;
    let name = Ia5String::try_from(value).map_err(|e| invalid(&e.to_string()))?;
    Ok(SanType::DnsName(name))
}

/// DNS names: labels of 1 to 63 letters, digits, `-` and `_`, not starting or ending in
/// `-`, joined by `.`, at most 253 characters, optionally behind a leading `*.`.
fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("a DNS name is at most 253 characters long");
    }
    let labels = name.strip_prefix("*.").unwrap_or(name);
    for label in labels.split('.') {
        if label.is_empty() {
            return Err("empty label in DNS name");
        }
        if label.len() > 63 {
            return Err("a DNS label is at most 63 characters long");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err(
                "not an IP address, and a DNS name may hold only letters, digits, \
                        '-', '_' and '.' (and a leading '*.')",
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a DNS label may not start or end with '-'");
        }
    }
    Ok(())
}

/// The CA of a directory, ready to sign.
struct LoadedCa {
    cert_path: PathBuf,
    /// The DER of the CA's subject name, which new certificates must carry as issuer.
    subject_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn load_ca(dir: &Path) -> Result<LoadedCa, CertsError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    for path in [&cert_path, &key_path] {
        match fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CertsError::MissingCa {
                    path: path.clone(),
                    dir: dir.to_owned(),
                });
            }
            Err(e) => return Err(io_error("inspect", path)(e)),
        }
    }

    let certs = goroscope_proto::tls::load_certs(&cert_path)?;
    let bad_ca = |reason: &str| CertsError::BadCa {
        path: cert_path.clone(),
        reason: reason.to_owned(),
    };
    // load_certs returns at least one certificate or an error.
    let ca_der = certs.first().ok_or_else(|| bad_ca("no certificate"))?;
    let (_, ca) = X509Certificate::from_der(ca_der)
        .map_err(|_| bad_ca("the first certificate is not a parsable X.509 certificate"))?;
    if !ca.is_ca() {
        return Err(bad_ca("not a CA certificate (basic constraints lack cA)"));
    }

    let key_pem = fs::read_to_string(&key_path).map_err(io_error("read", &key_path))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|source| CertsError::BadKey {
        path: key_path.clone(),
        source,
    })?;
    if key.public_key_raw() != ca.public_key().subject_public_key.data.as_ref() {
        return Err(CertsError::BadCa {
            path: key_path,
            reason: format!("this key does not belong to {}", cert_path.display()),
        });
    }

    // rcgen takes the CA's subject as issuer name and its subject key identifier (when it
    // has one) as the authority key identifier of new certificates.
    let issuer = Issuer::from_ca_cert_der(ca_der, key).map_err(|_| {
        bad_ca(
            "its subject name uses a form this tool cannot reproduce; use a CA made by goroscope",
        )
    })?;
    Ok(LoadedCa {
        subject_der: ca.subject().as_raw().to_vec(),
        issuer,
        cert_path,
    })
}

/// `goroscope fleet CA 0123456789ab`: the name and the first 6 bytes of the public key.
fn ca_common_name(key: &KeyPair) -> String {
    let raw = key.public_key_raw();
    // An uncompressed P-256 point: 0x04, then X.
    let fp: String = raw
        .iter()
        .skip(1)
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{CA_COMMON_NAME} {fp}")
}

/// Sets `not_before` to a day ago (tolerating clock skew) and `not_after` to `days` from
/// now, both to the second.
fn set_validity(params: &mut CertificateParams, days: u32) -> Result<(), CertsError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since_epoch| i64::try_from(since_epoch.as_secs()).ok())
        .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
        .ok_or(CertsError::Clock)?;
    let within_years = |t: OffsetDateTime| VALIDITY_YEARS.contains(&t.year());
    params.not_before = now
        .checked_sub(time::Duration::DAY)
        .filter(|t| within_years(*t))
        .ok_or(CertsError::Clock)?;
    params.not_after = now
        .checked_add(time::Duration::days(i64::from(days)))
        .filter(|t| within_years(*t))
        .ok_or(CertsError::Clock)?;
    Ok(())
}

fn refuse_existing(paths: &[&Path], force: bool) -> Result<(), CertsError> {
    if force {
        return Ok(());
    }
    for path in paths {
        match fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(CertsError::Exists {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspect", path)(e)),
        }
    }
    Ok(())
}

/// Writes `dir/name` with exactly `mode`: first to `dir/name.tmp`, then renamed over it.
fn write_file(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<PathBuf, CertsError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("remove stale", &tmp)(e)),
    }
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode given at creation; set it exactly.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("write", &tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("rename into place", &path)(e));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    use goroscope_proto::identity::Role;
    use goroscope_proto::tls::{TlsFiles, identity_of_file, load_certs, server_config};
    use goroscope_proto::v1::ListTargetsRequest;
    use goroscope_proto::v1::query_client::QueryClient;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Server, ServerTlsConfig};

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn fleet(parent: &Path) -> PathBuf {
        let dir = parent.join("certs");
        init_ca(&dir, false).unwrap();
        dir
    }

    fn issue_new(dir: &Path, subject: Subject) -> (PathBuf, PathBuf) {
        issue(dir, &subject, 30, &[], false).unwrap()
    }

    #[test]
    fn issues_each_role_with_its_identity_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let ca = init_ca(&dir, false).unwrap();
        assert_eq!(ca, dir.join("ca.pem"));
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&dir.join("ca-key.pem")), 0o600);
        assert_eq!(mode_of(&ca), 0o644);
        assert_eq!(load_certs(&ca).unwrap().len(), 1);

        for (subject, role, name, stem_name) in [
            (
                Subject::Collector("node-a.example".into()),
                Role::Collector,
                "node-a.example",
                "collector-node-a.example",
            ),
            (
                Subject::Operator("alice".into()),
                Role::Operator,
                "alice",
                "operator-alice",
            ),
            (
                Subject::Aggregator("localhost".into()),
                Role::Aggregator,
                "localhost",
                "aggregator-localhost",
            ),
        ] {
            assert_eq!(stem(&subject), stem_name);
            let (cert, key) = issue(&dir, &subject, 90, &[], false).unwrap();
            let files = TlsFiles::in_dir(&dir, stem_name);
            assert_eq!((&cert, &key), (&files.cert, &files.key));
            let identity = identity_of_file(&cert).unwrap();
            assert_eq!(identity, Identity::new(role, name).unwrap());
            assert_eq!(load_certs(&cert).unwrap().len(), 1);
            assert_eq!(mode_of(&key), 0o600, "{}", key.display());
            assert_eq!(mode_of(&cert), 0o644, "{}", cert.display());
            assert!(!dir.join(format!("{stem_name}.pem.tmp")).exists());
            assert!(!dir.join(format!("{stem_name}-key.pem.tmp")).exists());
        }
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).unwrap().1
    }

    #[test]
    fn leaves_name_the_ca_as_issuer() {
        use x509_parser::der_parser::asn1_rs::Tag;
        use x509_parser::extensions::ParsedExtension;

        let tmp = tempfile::tempdir().unwrap();
        let dir = fleet(tmp.path());
        let (cert, _) = issue_new(&dir, Subject::Operator("bob".into()));
        let ca_der = load_certs(&dir.join("ca.pem")).unwrap().remove(0);
        let leaf_der = load_certs(&cert).unwrap().remove(0);
        let ca = parse(&ca_der);
        let leaf = parse(&leaf_der);
        assert!(ca.is_ca());
        assert!(!leaf.is_ca());
        assert_eq!(
            ca.issuer().as_raw(),
            ca.subject().as_raw(),
            "the CA is self-signed"
        );
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());

        // The leaf names the CA's key by the CA's own subject key identifier.
        let ski = ca
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
                _ => None,
            })
            .expect("the CA has a subject key identifier");
        let aki = leaf
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
                _ => None,
            })
            .expect("the leaf has an authority key identifier");
        assert_eq!(aki.0, ski);

        let cn = ca.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.attr_value().header.tag(), Tag::Utf8String);
        let cn = cn.as_str().unwrap();
        assert!(
            cn.starts_with(CA_COMMON_NAME) && cn.len() == CA_COMMON_NAME.len() + 13,
            "{cn}"
        );
    }

    #[test]
    fn validity_starts_a_day_ago_and_lasts_the_days_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fleet(tmp.path());
        let (cert, _) = issue(&dir, &Subject::Operator("bob".into()), 90, &[], false).unwrap();
        let now = OffsetDateTime::now_utc();
        for (path, days) in [(dir.join("ca.pem"), CA_VALIDITY_DAYS), (cert, 90)] {
            let der = load_certs(&path).unwrap().remove(0);
            let validity = parse(&der).validity().clone();
            let not_before = validity.not_before.to_datetime();
            let not_after = validity.not_after.to_datetime();
            assert_eq!(
                not_after - not_before,
                time::Duration::days(i64::from(days) + 1),
                "{}",
                path.display()
            );
            let skew = now - time::Duration::DAY - not_before;
            assert!(
                skew >= time::Duration::ZERO && skew < time::Duration::minutes(5),
                "not before {not_before}, now {now}"
            );
        }
    }

    #[test]
    fn aggregator_pair_builds_a_server_config() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fleet(tmp.path());
        issue_new(&dir, Subject::Aggregator("localhost".into()));
        let files = TlsFiles::in_dir(&dir, "aggregator-localhost");
        let config = server_config(&files).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }

    /// Serves no services over mTLS (client certificates required) on a free port.
    async fn start_server(ca: &Path, cert: &Path, key: &Path) -> std::net::SocketAddr {
        let tls = ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                fs::read(cert).unwrap(),
                fs::read(key).unwrap(),
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(
                fs::read(ca).unwrap(),
            ));
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let mut server = Server::builder().tls_config(tls).unwrap();
        let router = server.add_routes(tonic::service::Routes::default());
        tokio::spawn(router.serve_with_incoming(incoming));
        addr
    }

    /// Calls the aggregator's query service; a server with no services answers
    /// `Unimplemented`, which proves both sides accepted each other's certificates.
    async fn call(
        addr: std::net::SocketAddr,
        ca: &Path,
        client: (&Path, &Path),
        server_name: &str,
    ) -> Result<tonic::Code, String> {
        let tls =
            goroscope_proto::connect::client_config(ca, Some(client)).map_err(|e| e.to_string())?;
        let connector = goroscope_proto::connect::Connector::fixed(
            tls,
            server_name,
            std::time::Duration::from_secs(10),
        )
        .map_err(|e| e.to_string())?;
        let attempt = async {
            let channel = connector
                .connect(&format!("https://{addr}"))
                .await
                .map_err(|e| format!("connect: {e:?}"))?;
            match QueryClient::new(channel)
                .list_targets(ListTargetsRequest::default())
                .await
            {
                Ok(_) => Ok(tonic::Code::Ok),
                Err(status) => Ok(status.code()),
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), attempt)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    #[tokio::test]
    async fn mtls_handshake_succeeds_within_the_fleet() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fleet(tmp.path());
        let ca = dir.join("ca.pem");
        let (server_cert, server_key) = issue_new(&dir, Subject::Aggregator("localhost".into()));
        let (op_cert, op_key) = issue_new(&dir, Subject::Operator("alice".into()));
        let (col_cert, col_key) = issue_new(&dir, Subject::Collector("node-a".into()));
        let addr = start_server(&ca, &server_cert, &server_key).await;

        // By DNS name, and by the loopback IP SAN added for `localhost`.
        for server_name in ["localhost", "127.0.0.1"] {
            assert_eq!(
                call(addr, &ca, (&op_cert, &op_key), server_name).await,
                Ok(tonic::Code::Unimplemented),
                "operator via {server_name}"
            );
        }
        assert_eq!(
            call(addr, &ca, (&col_cert, &col_key), "localhost").await,
            Ok(tonic::Code::Unimplemented)
        );
        // The aggregator certificate also serves as a client certificate (ClientAuth).
        assert_eq!(
            call(addr, &ca, (&server_cert, &server_key), "localhost").await,
            Ok(tonic::Code::Unimplemented)
        );
    }

    #[tokio::test]
    async fn mtls_handshake_refuses_another_fleet() {
        let tmp = tempfile::tempdir().unwrap();
        let ours = fleet(&tmp.path().join("ours"));
        let theirs = fleet(&tmp.path().join("theirs"));
        // Each CA's name carries its key's fingerprint: two fleets never share an issuer.
        let our_ca = load_certs(&ours.join("ca.pem")).unwrap().remove(0);
        let their_ca = load_certs(&theirs.join("ca.pem")).unwrap().remove(0);
        assert_ne!(
            parse(&our_ca).subject().as_raw(),
            parse(&their_ca).subject().as_raw()
        );

        let ca = ours.join("ca.pem");
        let (server_cert, server_key) = issue_new(&ours, Subject::Aggregator("localhost".into()));
        let (op_cert, op_key) = issue_new(&ours, Subject::Operator("alice".into()));
        let (foreign_cert, foreign_key) = issue_new(&theirs, Subject::Operator("mallory".into()));
        let (foreign_server_cert, foreign_server_key) =
            issue_new(&theirs, Subject::Aggregator("localhost".into()));

        let addr = start_server(&ca, &server_cert, &server_key).await;
        assert_eq!(
            call(addr, &ca, (&op_cert, &op_key), "localhost").await,
            Ok(tonic::Code::Unimplemented)
        );
        let foreign_client = call(addr, &ca, (&foreign_cert, &foreign_key), "localhost").await;
        assert_ne!(
            foreign_client,
            Ok(tonic::Code::Unimplemented),
            "{foreign_client:?}"
        );
        // The server name must match a SAN.
        let wrong_name = call(addr, &ca, (&op_cert, &op_key), "aggregator.example").await;
        assert!(wrong_name.is_err(), "{wrong_name:?}");

        let foreign_addr = start_server(&ca, &foreign_server_cert, &foreign_server_key).await;
        let foreign_server = call(foreign_addr, &ca, (&op_cert, &op_key), "localhost").await;
        assert!(foreign_server.is_err(), "{foreign_server:?}");
    }

    #[test]
    fn issuing_without_a_ca_names_the_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let err = issue(
            tmp.path(),
            &Subject::Operator("alice".into()),
            30,
            &[],
            false,
        )
        .unwrap_err();
        assert!(matches!(err, CertsError::MissingCa { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&tmp.path().join("ca.pem").display().to_string()),
            "{message}"
        );

        // A CA certificate without its key is no CA either.
        let dir = fleet(tmp.path());
        fs::remove_file(dir.join("ca-key.pem")).unwrap();
        let err = issue(&dir, &Subject::Operator("alice".into()), 30, &[], false).unwrap_err();
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
        assert!(!dir.join("operator-alice.pem").exists());
    }

    #[test]
    fn init_ca_refuses_to_overwrite_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fleet(tmp.path());
        let before = fs::read(dir.join("ca.pem")).unwrap();
        let err = init_ca(&dir, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} exists; pass --force to replace it",
                dir.join("ca.pem").display()
            )
        );
        assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), before);

        // The key alone is enough to refuse.
        fs::remove_file(dir.join("ca.pem")).unwrap();
        let err = init_ca(&dir, false).unwrap_err();
        assert!(err.to_string().contains("ca-key.pem exists"), "{err}");

        init_ca(&dir, true).unwrap();
        assert_ne!(fs::read(dir.join("ca.pem")).unwrap(), before);
        assert_eq!(mode_of(&dir.join("ca-key.pem")), 0o600);
    }

    #[test]
    fn issue_refuses_to_overwrite_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fleet(tmp.path());
        let subject = Subject::Collector("node-a".into());
        let (cert, key) = issue_new(&dir, subject.clone());
        let before = fs::read(&key).unwrap();
        let err = issue(&dir, &subject, 30, &[], false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} exists; pass --force to replace it", cert.display())
        );
        assert_eq!(fs::read(&key).unwrap(), before);
        issue(&dir, &subject, 30, &[], true).unwrap();
        assert_ne!(fs::read(&key).unwrap(), before);
        assert_eq!(mode_of(&key), 0o600);
    }

    #[test]
    fn bad_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fleet(tmp.path());
        let err = issue(&dir, &Subject::Collector("a b".into()), 30, &[], false).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid collector host \"a b\": "),
            "{err}"
        );
        let err = issue(&dir, &Subject::Operator(String::new()), 30, &[], false).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid operator name \"\": "),
            "{err}"
        );
        let err = issue(
            &dir,
            &Subject::Aggregator("agg/../x".into()),
            30,
            &[],
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("invalid aggregator name"),
            "{err}"
        );
        // A valid identity name that is no DNS name.
        let err = issue(&dir, &Subject::Aggregator("a..b".into()), 30, &[], false).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid aggregator name \"a..b\""),
            "{err}"
        );
        let only_ca: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(only_ca.len(), 2, "nothing but the CA was written");
    }

    #[test]
    fn validity_must_be_between_one_day_and_ten_years() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fleet(tmp.path());
        let subject = Subject::Operator("alice".into());
        let err = issue(&dir, &subject, 0, &[], false).unwrap_err();
        assert!(matches!(err, CertsError::ZeroValidity), "{err:?}");
        let err = issue(&dir, &subject, u32::MAX, &[], false).unwrap_err();
        assert!(matches!(err, CertsError::ValidityTooLong { .. }), "{err:?}");
        issue(&dir, &subject, 1, &[], false).unwrap();
        issue(&dir, &subject, MAX_VALIDITY_DAYS, &[], true).unwrap();
    }

    #[test]
    fn extra_sans_are_checked_and_for_aggregators_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fleet(tmp.path());
        let extra = vec![
            "agg.example".to_owned(),
            "*.agg.example".to_owned(),
            "10.0.0.7".to_owned(),
            "fd00::7".to_owned(),
        ];
        issue(
            &dir,
            &Subject::Aggregator("agg-1".into()),
            30,
            &extra,
            false,
        )
        .unwrap();
        let sans = subject_alt_names(
            &Subject::Aggregator("localhost".into()),
            &Identity::aggregator("localhost").unwrap(),
            &["127.0.0.1".to_owned(), "10.1.2.3".to_owned()],
        )
        .unwrap();
        let ip = |s: &str| SanType::IpAddress(s.parse().unwrap());
        assert_eq!(
            sans,
            vec![
                SanType::URI(
                    "spiffe://goroscope/aggregator/localhost"
                        .try_into()
                        .unwrap()
                ),
                SanType::DnsName("localhost".try_into().unwrap()),
                ip("127.0.0.1"),
                ip("::1"),
                ip("10.1.2.3"),
            ]
        );
        let sans = subject_alt_names(
            &Subject::Aggregator("10.0.0.9".into()),
            &Identity::aggregator("10.0.0.9").unwrap(),
            &[],
        )
        .unwrap();
        assert_eq!(sans[1], ip("10.0.0.9"));

        for bad in ["", "a b", "-x.example", "x..example", "ünicode.example"] {
            let err = issue(
                &dir,
                &Subject::Aggregator("agg-2".into()),
                30,
                &[bad.to_owned()],
                false,
            )
            .unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid subject alternative name {bad:?}: ")),
                "{err}"
            );
        }
        let err = issue(
            &dir,
            &Subject::Collector("node-a".into()),
            30,
            &["node-a.example".to_owned()],
            false,
        )
        .unwrap_err();
        assert!(matches!(err, CertsError::SansNotAllowed { .. }), "{err:?}");
    }

    #[test]
    fn a_ca_key_from_elsewhere_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ours = fleet(&tmp.path().join("ours"));
        let theirs = fleet(&tmp.path().join("theirs"));
        fs::copy(theirs.join("ca-key.pem"), ours.join("ca-key.pem")).unwrap();
        let err = issue(&ours, &Subject::Operator("alice".into()), 30, &[], false).unwrap_err();
        assert!(err.to_string().contains("does not belong to"), "{err}");

        // A leaf is no CA.
        let (cert, key) = issue_new(&theirs, Subject::Operator("bob".into()));
        fs::copy(&cert, ours.join("ca.pem")).unwrap();
        fs::copy(&key, ours.join("ca-key.pem")).unwrap();
        let err = issue(&ours, &Subject::Operator("alice".into()), 30, &[], false).unwrap_err();
        assert!(err.to_string().contains("not a CA certificate"), "{err}");
    }

    #[test]
    fn a_garbled_ca_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fleet(tmp.path());
        let ca = dir.join("ca.pem");
        fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = issue(&dir, &Subject::Operator("alice".into()), 30, &[], false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the first certificate is not a parsable X.509 certificate",
                ca.display()
            )
        );
        assert!(!dir.join("operator-alice.pem").exists());
    }
}
