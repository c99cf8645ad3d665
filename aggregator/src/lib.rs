//! The goroscope aggregator: accepts collector streams over mTLS gRPC, stores their
//! samples in an embedded RocksDB, and answers operators' queries.
//!
//! - [`config`]: layered settings.
//! - [`grpc`]: the TLS accept loop and the `Ingest` and `Query` services.
//! - [`storage`]: time series storage on RocksDB, behind its own small API.
#![forbid(unsafe_code)]

pub mod config;
pub mod grpc;
pub mod storage;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::AggregatorConfig;
use crate::storage::{Storage, StorageOptions};

/// Opens storage, binds the listener and serves until `shutdown` is cancelled.
/// `on_listening` is called with the bound address (useful with port 0).
pub async fn run(
    config: AggregatorConfig,
    shutdown: CancellationToken,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    // Certificates first: a missing or wrong file stops the start before anything else
    // (the database, the port) is taken.
    let tls = std::sync::Arc::new(
        goroscope_proto::tls::server_config(&config.tls_files()).context("tls")?,
    );
    let storage = Storage::open(
        &config.data_dir,
        StorageOptions {
            sync_writes: config.storage.sync_writes,
            max_query_samples: config.storage.max_query_samples,
            ..StorageOptions::default()
        },
    )?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("local address of the listener")?;
    on_listening(addr);
    grpc::serve(listener, tls, &config, storage, shutdown).await?;
    Ok(())
}
