//! goroscope's Prometheus remote-write 1.0 exporter: the aggregator forwards every
//! sample it acknowledged to a distributed store (Mimir, Thanos Receive,
//! VictoriaMetrics, Cortex) from a persistent queue, retrying until the store accepts.
//! docs/export.md describes the settings and the guarantees.
//!
//! - [`prompb`]: the wire messages and the snappy-compressed body.
//! - [`queue`]: the queue the aggregator implements on its storage; [`MemoryQueue`].
//! - [`sender`]: the task draining it; [`spawn`] starts it.
//! - [`client`]: one HTTP request over rustls. [`backoff`]: retry waits.
//! - [`config`]: the `[export]` settings. [`stats`]: counters for metrics.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod client;
pub mod config;
pub mod prompb;
pub mod queue;
pub mod sender;
pub mod stats;

#[cfg(test)]
mod testserver;

pub use config::{Config, ConfigError};
pub use prompb::{Label, METRIC_NAME, Sample, TimeSeries, WriteRequest};
pub use queue::{Entry, MemoryQueue, Pending, Queue, QueueError};
pub use sender::{Error, Exporter, spawn};
pub use stats::{DropReason, FailReason, Stats};
