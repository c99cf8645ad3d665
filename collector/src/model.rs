//! What the collector produces: one [`Scrape`] per interval, made of target samples.
//!
//! A target's descriptive part ([`TargetMeta`]) is shared behind an `Arc` and replaced
//! only when it changes, so the sender can tell with a pointer comparison whether it
//! must declare the target again on its stream.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::sources::Metrics;

/// Which sources answered for a target in its latest sample: the wire's own message,
/// kept as is on the target until the sender declares it.
pub use goroscope_proto::v1::Coverage;

/// Label values from processes cut to the longest a label may be, since start.
pub static LABELS_TRIMMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The identity and labels of one Go process.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetMeta {
    pub pid: u32,
    pub start_ticks: u64,
    pub start_time_ms: i64,
    /// service, version, go_version, module, path, container_id and pod_uid (when the
    /// process's cgroup names them), plus the host's configured labels.
    pub labels: Vec<(String, String)>,
    pub coverage: Coverage,
    /// The executable's full build information, sent when the target is first declared
    /// on a stream.
    pub build: Option<Arc<goroscope_proto::v1::BuildInfo>>,
    /// The Go runtime settings in the process's environment (GOGC, GOMEMLIMIT, ...),
    /// never any other variable.
    pub runtime_env: Vec<(String, String)>,
}

/// A series with labels of its own, from a target's `/metrics`: its name and its labels
/// (sorted by name, each name once, none named like a target label). Interned per
/// target and shared by every sample of the series, so that a sample allocates nothing.
#[derive(Debug)]
pub struct SeriesId {
    pub name: Arc<str>,
    pub labels: Box<[(Arc<str>, Arc<str>)]>,
    hash: u64,
    /// The encoded length of the labels in a `SeriesDecl`.
    labels_len: usize,
}

impl SeriesId {
    /// The series' labels as the wire carries them.
    pub fn wire_labels(&self) -> Vec<goroscope_proto::v1::Label> {
        self.labels
            .iter()
            .map(|(name, value)| goroscope_proto::v1::Label {
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect()
    }

    pub fn new(name: Arc<str>, labels: Box<[(Arc<str>, Arc<str>)]>) -> SeriesId {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        labels.hash(&mut h);
        let labels_len = labels
            .iter()
            .map(|(k, v)| {
                let label = string_field_len(k.len()) + string_field_len(v.len());
                string_field_len(label).max(2)
            })
            .sum();
        SeriesId {
            name,
            labels,
            hash: h.finish(),
            labels_len,
        }
    }

    /// What the labels add to the encoded `SeriesDecl`.
    pub fn labels_encoded_len(&self) -> usize {
        self.labels_len
    }
}

/// A length-delimited field of `len` bytes in a message, as proto3 encodes it (an
/// empty string is left out).
fn string_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(len as u64) + len
    }
}

impl PartialEq for SeriesId {
    fn eq(&self, other: &SeriesId) -> bool {
        std::ptr::eq(self, other)
            || (self.hash == other.hash && self.name == other.name && self.labels == other.labels)
    }
}

impl Eq for SeriesId {}

impl Hash for SeriesId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// One value of a labeled series.
pub type Labeled = (Arc<SeriesId>, f64);

/// One target's sample at one instant.
#[derive(Debug, Clone)]
pub struct TargetSample {
    pub meta: Arc<TargetMeta>,
    /// The series of the collector's catalogue (docs/metrics.md).
    pub metrics: Metrics,
    /// Goroutine stack summaries read (or skipped) with this sample.
    pub stacks: Vec<goroscope_proto::v1::StackSummary>,
    /// The series of the target's own `/metrics`, labels and all.
    pub series: Vec<Labeled>,
}

/// Everything sampled in one interval.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Unix milliseconds at the start of the interval.
    pub timestamp_ms: i64,
    pub samples: Vec<TargetSample>,
    /// Targets whose process exited since the previous scrape.
    pub gone: Vec<Arc<TargetMeta>>,
}

impl Scrape {
    /// About what the scrape takes encoded with every target and series declared (the
    /// most it takes on any stream, but for build information, which a stream carries
    /// once per target): what the outbox's byte bound counts.
    pub fn estimated_bytes(&self) -> usize {
        let target = |m: &TargetMeta| {
            48 + m.coverage.debug_addr.len()
                + m.labels
                    .iter()
                    .chain(&m.runtime_env)
                    .map(|(k, v)| k.len() + v.len() + 6)
                    .sum::<usize>()
        };
        let samples: usize = self
            .samples
            .iter()
            .map(|s| {
                target(&s.meta)
                    + s.metrics
                        .iter()
                        .map(|(name, _)| name.len() + 32)
                        .sum::<usize>()
                    + s.stacks
                        .iter()
                        .map(|st| {
                            use prost::Message;
                            st.encoded_len() + 16
                        })
                        .sum::<usize>()
                    + s.series
                        .iter()
                        .map(|(id, _)| id.name.len() + id.labels_encoded_len() + 34)
                        .sum::<usize>()
            })
            .sum();
        samples + self.gone.iter().map(|m| target(m) + 4).sum::<usize>()
    }
}
