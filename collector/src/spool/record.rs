//! A scrape as the spool stores it: a protobuf message of its own, independent of any
//! stream (no refs), so that a scrape spooled by one run can be sent on any later
//! stream, under any epoch.
//!
//! Compatibility: fields are only ever added, under new tags, and old tags are never
//! reused, so records written before a field existed decode with its default, and an
//! older collector reading a newer record ignores what it does not know. A change that
//! cannot be made that way bumps [`VERSION`] (the spool's record header carries it);
//! records of an unknown version are skipped and counted. Every model field is listed
//! in [`encode`]'s destructuring, so adding one to the model does not build until this
//! file says how it is stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use goroscope_proto::v1;
use prost::Message;

use crate::model::{Scrape, SeriesId, TargetMeta, TargetSample};

/// The payload version written in each record's header.
pub const VERSION: u8 = 1;

/// Distinct metric names a process takes from spool records at most (names are static
/// strings in the model; decoded ones are interned once and kept).
const MAX_INTERNED_NAMES: usize = 8192;

#[derive(Clone, PartialEq, Message)]
pub struct ScrapeRecord {
    #[prost(int64, tag = "1")]
    pub timestamp_ms: i64,
    /// The metric names the samples use, each once; samples refer to them by index.
    #[prost(string, repeated, tag = "2")]
    pub names: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub samples: Vec<SampleRecord>,
    #[prost(message, repeated, tag = "4")]
    pub gone: Vec<TargetRecord>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TargetRecord {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint64, tag = "2")]
    pub start_ticks: u64,
    #[prost(int64, tag = "3")]
    pub start_time_ms: i64,
    #[prost(message, repeated, tag = "4")]
    pub labels: Vec<v1::Label>,
    #[prost(message, optional, tag = "5")]
    pub coverage: Option<v1::Coverage>,
    #[prost(message, repeated, tag = "6")]
    pub runtime_env: Vec<v1::Label>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SampleRecord {
    #[prost(message, optional, tag = "1")]
    pub target: Option<TargetRecord>,
    /// Index into [`ScrapeRecord::names`], one per value.
    #[prost(uint32, repeated, tag = "2")]
    pub names: Vec<u32>,
    /// Raw IEEE 754 doubles: NaN payloads and infinities are kept bit for bit.
    #[prost(double, repeated, tag = "3")]
    pub values: Vec<f64>,
    #[prost(message, repeated, tag = "4")]
    pub stacks: Vec<v1::StackSummary>,
    #[prost(message, repeated, tag = "5")]
    pub series: Vec<LabeledRecord>,
}

/// A series of the target's own `/metrics`, with its labels, and its value.
#[derive(Clone, PartialEq, Message)]
pub struct LabeledRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub labels: Vec<v1::Label>,
    #[prost(double, tag = "3")]
    pub value: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record version {0} is unknown to this collector")]
    Version(u8),
    #[error("protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("sample {sample}: {what}")]
    Sample { sample: usize, what: String },
    #[error("more than {MAX_INTERNED_NAMES} distinct metric names")]
    TooManyNames,
}

fn target_record(meta: &TargetMeta) -> TargetRecord {
    let TargetMeta {
        pid,
        start_ticks,
        start_time_ms,
        labels,
        coverage,
        runtime_env,
        // Not spooled: a build is sent once per target and stream, and every record
        // would carry it again. A target replayed from the spool is declared without
        // it; the aggregator keeps the build it has, and the live target brings it on
        // the next stream.
        build: _,
    } = meta;
    TargetRecord {
        pid: *pid,
        start_ticks: *start_ticks,
        start_time_ms: *start_time_ms,
        labels: labels
            .iter()
            .map(|(name, value)| v1::Label {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        coverage: Some(coverage.clone()),
        runtime_env: runtime_env
            .iter()
            .map(|(name, value)| v1::Label {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

fn target_meta(r: TargetRecord) -> Arc<TargetMeta> {
    Arc::new(TargetMeta {
        pid: r.pid,
        start_ticks: r.start_ticks,
        start_time_ms: r.start_time_ms,
        labels: r.labels.into_iter().map(|l| (l.name, l.value)).collect(),
        coverage: r.coverage.unwrap_or_default(),
        runtime_env: r
            .runtime_env
            .into_iter()
            .map(|l| (l.name, l.value))
            .collect(),
        build: None,
    })
}

/// The payload of `scrape`'s record (version [`VERSION`]).
pub fn encode(scrape: &Scrape) -> Vec<u8> {
    let Scrape {
        timestamp_ms,
        samples,
        gone,
    } = scrape;
    let mut names: Vec<String> = Vec::new();
    let mut index: HashMap<&str, u32> = HashMap::new();
    let samples = samples
        .iter()
        .map(|s| {
            let TargetSample {
                meta,
                metrics,
                stacks,
                series,
            } = s;
            let mut ids = Vec::with_capacity(metrics.len());
            let mut values = Vec::with_capacity(metrics.len());
            for &(name, value) in metrics {
                let id = *index.entry(name).or_insert_with(|| {
                    names.push(name.to_owned());
                    (names.len() - 1) as u32
                });
                ids.push(id);
                values.push(value);
            }
            SampleRecord {
                target: Some(target_record(meta)),
                names: ids,
                values,
                stacks: stacks.clone(),
                series: series
                    .iter()
                    .map(|(id, value)| LabeledRecord {
                        name: id.name.to_string(),
                        labels: id.wire_labels(),
                        value: *value,
                    })
                    .collect(),
            }
        })
        .collect();
    ScrapeRecord {
        timestamp_ms: *timestamp_ms,
        names,
        samples,
        gone: gone.iter().map(|m| target_record(m)).collect(),
    }
    .encode_to_vec()
}

/// The scrape of a record payload of `version`.
pub fn decode(version: u8, payload: &[u8]) -> Result<Scrape, DecodeError> {
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let record = ScrapeRecord::decode(payload)?;
    let names = record
        .names
        .iter()
        .map(|n| intern(n))
        .collect::<Option<Vec<&'static str>>>()
        .ok_or(DecodeError::TooManyNames)?;
    let mut samples = Vec::with_capacity(record.samples.len());
    for (i, s) in record.samples.into_iter().enumerate() {
        let bad = |what: &str| DecodeError::Sample {
            sample: i,
            what: what.to_owned(),
        };
        if s.names.len() != s.values.len() {
            return Err(bad("names and values differ in length"));
        }
        let target = s.target.ok_or_else(|| bad("no target"))?;
        let metrics = s
            .names
            .iter()
            .zip(&s.values)
            .map(|(n, v)| names.get(*n as usize).map(|name| (*name, *v)))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("a metric name index is out of range"))?;
        samples.push(TargetSample {
            meta: target_meta(target),
            metrics,
            stacks: s.stacks,
            series: s
                .series
                .into_iter()
                .map(|r| {
                    let labels = r
                        .labels
                        .into_iter()
                        .map(|l| (Arc::from(l.name), Arc::from(l.value)))
                        .collect();
                    (Arc::new(SeriesId::new(Arc::from(r.name), labels)), r.value)
                })
                .collect(),
        });
    }
    Ok(Scrape {
        timestamp_ms: record.timestamp_ms,
        samples,
        gone: record.gone.into_iter().map(target_meta).collect(),
    })
}

/// The static copy of a metric name, made once per distinct name; `None` once
/// [`MAX_INTERNED_NAMES`] are held (a damaged or foreign spool cannot grow memory
/// without bound).
fn intern(name: &str) -> Option<&'static str> {
    static NAMES: OnceLock<Mutex<HashMap<&'static str, ()>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((known, _)) = names.get_key_value(name) {
        return Some(known);
    }
    if names.len() >= MAX_INTERNED_NAMES {
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked, ());
    Some(leaked)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Coverage;

    pub(crate) fn sample_scrape(ts: i64) -> Scrape {
        let meta = Arc::new(TargetMeta {
            pid: 42,
            start_ticks: u64::MAX,
            start_time_ms: -5,
            labels: vec![
                ("service".into(), "billing".into()),
                ("empty".into(), String::new()),
                ("huge".into(), "é".repeat(100_000)),
            ],
            coverage: Coverage {
                proc: true,
                expvar: true,
                debug_addr: "127.0.0.1:6060".into(),
                ..Coverage::default()
            },
            runtime_env: vec![("GOGC".into(), "off".into())],
            build: None,
        });
        Scrape {
            timestamp_ms: ts,
            samples: vec![
                TargetSample {
                    meta: meta.clone(),
                    metrics: vec![
                        ("go_goroutines", f64::NAN),
                        ("weird_nan", f64::from_bits(0x7ff8_dead_beef_0001)),
                        ("neg_nan", f64::from_bits(0xfff0_0000_0000_0001)),
                        ("inf", f64::INFINITY),
                        ("go_goroutines", f64::NEG_INFINITY),
                        ("zero", -0.0),
                        ("tiny", f64::MIN_POSITIVE / 2.0),
                    ],
                    series: vec![(
                        Arc::new(SeriesId::new(
                            Arc::from("http_request_duration_seconds_bucket"),
                            vec![(Arc::from("le"), Arc::from("+Inf"))].into_boxed_slice(),
                        )),
                        f64::NAN,
                    )],
                    stacks: vec![v1::StackSummary {
                        timestamp_ms: ts,
                        source: "debug=2".into(),
                        total: u64::MAX,
                        groups: vec![v1::StackGroup {
                            wait_reason: "chan receive".into(),
                            frames: vec!["main.worker".into(), String::new()],
                            count: 3,
                            max_wait_s: f64::INFINITY,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                },
                TargetSample {
                    meta: Arc::new(TargetMeta {
                        pid: 0,
                        start_ticks: 0,
                        start_time_ms: 0,
                        labels: vec![],
                        coverage: Coverage::default(),
                        runtime_env: vec![],
                        build: None,
                    }),
                    metrics: vec![],
                    stacks: vec![],
                    series: vec![],
                },
            ],
            gone: vec![meta],
        }
    }

    fn bits(s: &Scrape) -> Vec<(u32, Vec<(&'static str, u64)>)> {
        s.samples
            .iter()
            .map(|t| {
                (
                    t.meta.pid,
                    t.metrics.iter().map(|(n, v)| (*n, v.to_bits())).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn every_value_round_trips_bit_for_bit() {
        for ts in [0, -1, i64::MIN, i64::MAX, 1_800_000_000_000] {
            let s = sample_scrape(ts);
            let back = decode(VERSION, &encode(&s)).unwrap();
            assert_eq!(back.timestamp_ms, ts);
            assert_eq!(bits(&back), bits(&s));
            for (a, b) in back.samples.iter().zip(&s.samples) {
                assert_eq!(*a.meta, *b.meta);
                assert_eq!(a.stacks, b.stacks);
                assert_eq!(a.series.len(), b.series.len());
                for (x, y) in a.series.iter().zip(&b.series) {
                    assert_eq!(*x.0, *y.0);
                    assert_eq!(x.1.to_bits(), y.1.to_bits());
                }
            }
            assert_eq!(back.gone.len(), 1);
            assert_eq!(*back.gone[0], *s.gone[0]);
        }
        let empty = Scrape::default();
        let back = decode(VERSION, &encode(&empty)).unwrap();
        assert!(back.samples.is_empty() && back.gone.is_empty());
    }

    #[test]
    fn unknown_versions_and_bad_indexes_are_errors() {
        let payload = encode(&sample_scrape(1));
        assert!(matches!(
            decode(VERSION + 1, &payload),
            Err(DecodeError::Version(_))
        ));
        let mut r = ScrapeRecord::decode(payload.as_slice()).unwrap();
        r.samples[0].names[0] = 999;
        assert!(decode(VERSION, &r.encode_to_vec()).is_err());
        r.samples[0].names.pop();
        assert!(decode(VERSION, &r.encode_to_vec()).is_err());
    }
}
