//! Identities: who a certificate speaks for, as a SPIFFE-style URI SAN.
//!
//! `spiffe://goroscope/collector/<host>`, `spiffe://goroscope/operator/<name>` and
//! `spiffe://goroscope/aggregator/<name>`. cert-manager and SPIRE can issue these; the
//! `goroscope certs` command issues them for development and tests.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The trust domain every goroscope identity lives in.
pub const TRUST_DOMAIN: &str = "goroscope";

/// What a peer may do is decided by its role alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Collector,
    Operator,
    Aggregator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::Operator => "operator",
            Role::Aggregator => "aggregator",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "collector" => Some(Role::Collector),
            "operator" => Some(Role::Operator),
            "aggregator" => Some(Role::Aggregator),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified peer identity: a role and the name it holds it for (a host for a
/// collector, a person or robot for an operator, a DNS name for an aggregator).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("certificate is not valid DER X.509")]
    BadCertificate,
    #[error("certificate has no spiffe://{TRUST_DOMAIN}/ URI SAN")]
    NoIdentity,
    #[error("certificate has more than one spiffe://{TRUST_DOMAIN}/ URI SAN")]
    AmbiguousIdentity,
    #[error("identity {uri:?} is malformed: {reason}")]
    Malformed { uri: String, reason: &'static str },
}

impl Identity {
    pub fn new(role: Role, name: impl Into<String>) -> Result<Identity, IdentityError> {
        let name = name.into();
        if let Err(reason) = validate_name(&name) {
            return Err(IdentityError::Malformed {
                uri: format!("spiffe://{TRUST_DOMAIN}/{role}/{name}"),
                reason,
            });
        }
        Ok(Identity { role, name })
    }

    pub fn collector(host: impl Into<String>) -> Result<Identity, IdentityError> {
        Identity::new(Role::Collector, host)
    }

    pub fn operator(name: impl Into<String>) -> Result<Identity, IdentityError> {
        Identity::new(Role::Operator, name)
    }

    pub fn aggregator(name: impl Into<String>) -> Result<Identity, IdentityError> {
        Identity::new(Role::Aggregator, name)
    }

    /// The URI SAN form, `spiffe://goroscope/<role>/<name>`.
    pub fn uri(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}/{}", self.role, self.name)
    }

    /// Parses a URI SAN. Returns `Ok(None)` for URIs outside the goroscope trust domain
    /// (a certificate may carry other URIs too).
    pub fn parse_uri(uri: &str) -> Result<Option<Identity>, IdentityError> {
        let Some(path) = uri
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.strip_prefix(TRUST_DOMAIN))
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            return Ok(None);
        };
        let malformed = |reason| IdentityError::Malformed {
            uri: uri.to_owned(),
            reason,
        };
        let (role, name) = path
            .split_once('/')
            .ok_or_else(|| malformed("expected <role>/<name>"))?;
        let role = Role::parse(role).ok_or_else(|| malformed("unknown role"))?;
        validate_name(name).map_err(malformed)?;
        Ok(Some(Identity {
            role,
            name: name.to_owned(),
        }))
    }

    /// The one goroscope identity of a DER certificate (the leaf a peer presented, whose
    /// chain TLS has already verified).
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|_| IdentityError::BadCertificate)?;
        let mut found = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name
                    && let Some(id) = Identity::parse_uri(uri)?
                {
                    if found.is_some() {
                        return Err(IdentityError::AmbiguousIdentity);
                    }
                    found = Some(id);
                }
            }
        }
        found.ok_or(IdentityError::NoIdentity)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{TRUST_DOMAIN}/{}/{}", self.role, self.name)
    }
}

/// Names are host names, user names or DNS names: 1 to 253 characters of ASCII letters,
/// digits, `.`, `-` and `_`.
fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("name longer than 253 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("name may hold only letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_each_role() {
        for id in [
            Identity::collector("node-a.example").unwrap(),
            Identity::operator("alice").unwrap(),
            Identity::aggregator("localhost").unwrap(),
        ] {
            assert_eq!(Identity::parse_uri(&id.uri()).unwrap(), Some(id));
        }
    }

    #[test]
    fn foreign_trust_domain_is_not_ours() {
        assert_eq!(
            Identity::parse_uri("spiffe://other/collector/a").unwrap(),
            None
        );
        assert_eq!(
            Identity::parse_uri("https://goroscope/collector/a").unwrap(),
            None
        );
        assert_eq!(
            Identity::parse_uri("spiffe://goroscopex/collector/a").unwrap(),
            None
        );
    }

    #[test]
    fn rejects_malformed_identities() {
        for uri in [
            "spiffe://goroscope/collector",
            "spiffe://goroscope/janitor/a",
            "spiffe://goroscope/collector/",
            "spiffe://goroscope/collector/a/b",
            "spiffe://goroscope/operator/al ice",
        ] {
            assert!(
                matches!(
                    Identity::parse_uri(uri),
                    Err(IdentityError::Malformed { .. })
                ),
                "{uri} should be malformed"
            );
        }
    }
}
