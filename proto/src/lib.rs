//! The goroscope wire contract and the transport setup both ends of it share.
//!
//! - [`v1`]: the generated `goroscope.v1` messages and tonic services (ingest, query).
//! - [`identity`]: SPIFFE-style identities carried in certificates, and their parsing.
//! - [`tls`]: loading PEM material, the server's rustls configuration, authorising peers.
//! - [`connect`]: connecting to the aggregator, certificates reloaded as they are renewed.
//! - [`rules`]: the rules both ends enforce on metric names and labels.
#![forbid(unsafe_code)]

pub mod connect;
pub mod identity;
pub mod rules;
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
