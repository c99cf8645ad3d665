//! The goroscope wire contract and the transport setup both ends of it share.
//!
//! - [`v1`]: the generated `goroscope.v1` messages and tonic services (ingest, query).
//! - [`identity`]: SPIFFE-style identities carried in certificates, and their parsing.
//! - [`tls`]: loading PEM material and building the rustls / tonic TLS configurations.
//! - [`settings`]: the layered settings loader both daemons share.
//! - [`daemon`]: what both daemons do alike at start (logging).
#![forbid(unsafe_code)]

pub mod daemon;
pub mod identity;
pub mod settings;
pub mod tls;

/// The `goroscope.v1` package, generated from `proto/goroscope/v1/*.proto`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("goroscope.v1");
}

pub use identity::{Identity, Role};

/// Now as the wire carries time: milliseconds since the Unix epoch (0 if the clock is
/// before it).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
