//! Sources: one module per place the collector reads a process's vital signs from.
pub mod buildinfo;
pub mod cgroup;
pub mod environ;
pub mod expvar;
pub mod http;
pub mod pprof;
pub mod proc;
pub mod prometheus;
pub mod stacks;

/// One sample of a target: (metric name, value). Names are static (the catalogue in
/// docs/metrics.md), so a sample allocates no strings. The series of a target's own
/// `/metrics`, with labels, are [`crate::model::Labeled`].
pub type Metrics = Vec<(&'static str, f64)>;

#[cfg(test)]
mod proptests;
