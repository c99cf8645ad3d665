//! The binary encoding of the records in the `series` and `targets` column families.
//!
//! Every record starts with a version byte ([`VERSION`]); the rest is a sequence of
//! fields in a fixed order:
//!
//! - unsigned integers: LEB128 varints (`u32`, `u64`);
//! - signed integers (times in Unix milliseconds): zig-zag varints;
//! - strings: a varint byte length, then UTF-8 bytes;
//! - booleans and flag sets: one byte.
//!
//! `SeriesRecord` v2: host, pid, start ticks, metric, label count and that many
//! (name, value) pairs. (v1, still read: without the labels.)
//!
//! `TargetRecord` v2: host, pid, start ticks, label count and that many (name, value)
//! pairs, coverage flags (bit 0 proc, 1 buildinfo, 2 expvar, 3 pprof, 4 metrics,
//! 5 cgroup, 6 goroutineleak), debug address, start time, first seen, last seen, exited
//! (0 or 1), runtime setting count and that many (name, value) pairs, build (0, or 1
//! then the 16-byte build id). (v1, still read: bits 0-3 only, and nothing after
//! exited.)
//!
//! `builds` and `stacks` records are the version byte, then the protobuf encoding of
//! the wire's `BuildInfo` and `StackSummary`: a collector's own message, kept as sent
//! (with the aggregator's first-seen times on a summary's groups).
//!
//! Decoding never trusts a length: every one is checked against what is left of the
//! record, so a corrupt record is an error with a reason, never a panic or a huge
//! allocation. A record of a version this build does not know is an error too; the
//! caller skips and counts it. Sample values are not records: they are raw IEEE 754
//! doubles in the `head` family, where NaN and ±Inf are stored like any other value.

use std::collections::BTreeMap;

use goroscope_proto::v1;
use prost::Message;

use super::{BuildId, Coverage, HostStats, SeriesKey, TargetKey, TargetRecord};

/// The version byte every record this build writes starts with.
pub const VERSION: u8 = 2;
/// The oldest version this build still reads.
const OLDEST: u8 = 1;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("record version {0} is not known to this build (it knows {OLDEST} to {VERSION})")]
    Version(u8),
    #[error("protobuf: {0}")]
    Proto(String),
    #[error("truncated at byte {at} while reading {what}")]
    Truncated { at: usize, what: &'static str },
    #[error("{what} at byte {at} is not valid UTF-8")]
    Utf8 { at: usize, what: &'static str },
    #[error("{what} at byte {at} is out of range")]
    Range { at: usize, what: &'static str },
    #[error("{0} bytes left over after the record")]
    Trailing(usize),
}

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn new() -> Enc {
        Enc(vec![VERSION])
    }

    fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }
}

struct Dec<'a> {
    data: &'a [u8],
    at: usize,
    version: u8,
}

impl<'a> Dec<'a> {
    fn new(data: &'a [u8]) -> Result<Dec<'a>, DecodeError> {
        match data.first() {
            None => Err(DecodeError::Empty),
            Some(&v) if (OLDEST..=VERSION).contains(&v) => Ok(Dec {
                data,
                at: 1,
                version: v,
            }),
            Some(&v) => Err(DecodeError::Version(v)),
        }
    }

    /// (name, value) pairs after their count; a count beyond what the record can hold
    /// is corrupt and must not drive an allocation.
    fn pairs(&mut self, what: &'static str) -> Result<Vec<(String, String)>, DecodeError> {
        let at = self.at;
        let count = self.u64(what)?;
        if count > ((self.data.len() - self.at) as u64) / 2 {
            return Err(DecodeError::Range { at, what });
        }
        let mut pairs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name = self.str("label name")?;
            let value = self.str("label value")?;
            pairs.push((name, value));
        }
        Ok(pairs)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .data
                .get(self.at)
                .ok_or(DecodeError::Truncated { at: start, what })?;
            self.at += 1;
            if shift == 63 && b > 1 {
                return Err(DecodeError::Range { at: start, what });
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::Range { at: start, what })
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let at = self.at;
        u32::try_from(self.u64(what)?).map_err(|_| DecodeError::Range { at, what })
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let v = self.u64(what)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn str(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let at = self.at;
        let len = self.u64(what)?;
        let left = (self.data.len() - self.at) as u64;
        if len > left {
            return Err(DecodeError::Truncated { at, what });
        }
        let bytes = &self.data[self.at..self.at + len as usize];
        self.at += len as usize;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8 { at, what })
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self
            .data
            .get(self.at)
            .ok_or(DecodeError::Truncated { at: self.at, what })?;
        self.at += 1;
        Ok(b)
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.data.len() - self.at {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// A host's ingest statistics (`meta`, `host/<host>`): the version byte, first and
/// last arrival (zig-zag), batches, samples, gaps, missed, a loss count and that many
/// (reason, batches, bytes).
pub fn encode_host_stats(s: &HostStats) -> Vec<u8> {
    let mut e = Enc::new();
    e.i64(s.first_ms);
    e.i64(s.last_ms);
    e.u64(s.batches);
    e.u64(s.samples);
    e.u64(s.gaps);
    e.u64(s.missed);
    e.u64(s.losses.len() as u64);
    for (reason, (batches, bytes)) in &s.losses {
        e.str(reason);
        e.u64(*batches);
        e.u64(*bytes);
    }
    e.0
}

pub fn decode_host_stats(data: &[u8]) -> Result<HostStats, DecodeError> {
    let mut d = Dec::new(data)?;
    let mut s = HostStats {
        first_ms: d.i64("first arrival")?,
        last_ms: d.i64("last arrival")?,
        batches: d.u64("batches")?,
        samples: d.u64("samples")?,
        gaps: d.u64("gaps")?,
        missed: d.u64("missed")?,
        losses: BTreeMap::new(),
    };
    let at = d.at;
    let n = d.u64("loss count")?;
    if n > ((data.len() - d.at) as u64) / 3 {
        return Err(DecodeError::Range {
            at,
            what: "loss count",
        });
    }
    for _ in 0..n {
        let reason = d.str("loss reason")?;
        let batches = d.u64("lost batches")?;
        let bytes = d.u64("lost bytes")?;
        s.losses.insert(reason, (batches, bytes));
    }
    d.finish()?;
    Ok(s)
}

/// The version byte of a `headlog` record.
pub const HEADLOG_VERSION: u8 = 1;

/// Samples by series: a series id and its points, in time order.
pub type SeriesSamples = Vec<(u64, Vec<(i64, f64)>)>;

/// A `headlog` record (the samples of one group commit of one writer shard): the
/// version byte, a series count, and per series its id, its point count, the first
/// timestamp and then each next one as the delta to the one before (zig-zag varints),
/// then the values as IEEE 754 doubles, little-endian, bit for bit.
pub fn encode_headlog<'a>(
    series: impl ExactSizeIterator<Item = (u64, &'a [(i64, f64)])>,
) -> Vec<u8> {
    let mut e = Enc(vec![HEADLOG_VERSION]);
    e.u64(series.len() as u64);
    for (id, points) in series {
        e.u64(id);
        e.u64(points.len() as u64);
        let mut prev = 0i64;
        for &(ts, _) in points {
            e.i64(ts.wrapping_sub(prev));
            prev = ts;
        }
        for &(_, v) in points {
            e.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    e.0
}

pub fn decode_headlog(data: &[u8]) -> Result<SeriesSamples, DecodeError> {
    match data.first() {
        None => return Err(DecodeError::Empty),
        Some(&HEADLOG_VERSION) => {}
        Some(&v) => return Err(DecodeError::Version(v)),
    }
    let mut d = Dec {
        data,
        at: 1,
        version: HEADLOG_VERSION,
    };
    let at = d.at;
    let count = d.u64("series count")?;
    // A series takes at least two bytes (its id and a zero count).
    if count > ((data.len() - d.at) as u64) / 2 {
        return Err(DecodeError::Range {
            at,
            what: "series count",
        });
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = d.u64("series id")?;
        let at = d.at;
        let n = d.u64("point count")?;
        // A point takes at least nine bytes (a one-byte delta and its value).
        if n > ((data.len() - d.at) as u64) / 9 {
            return Err(DecodeError::Range {
                at,
                what: "point count",
            });
        }
        let mut points = Vec::with_capacity(n as usize);
        let mut ts = 0i64;
        for _ in 0..n {
            ts = ts.wrapping_add(d.i64("timestamp")?);
            points.push((ts, 0.0));
        }
        for point in &mut points {
            let bytes = d.data.get(d.at..d.at + 8).ok_or(DecodeError::Truncated {
                at: d.at,
                what: "value",
            })?;
            point.1 = f64::from_le_bytes(bytes.try_into().expect("eight bytes"));
            d.at += 8;
        }
        out.push((id, points));
    }
    d.finish()?;
    Ok(out)
}

fn put_target_key(e: &mut Enc, k: &TargetKey) {
    e.str(&k.host);
    e.u64(k.pid.into());
    e.u64(k.start_ticks);
}

fn get_target_key(d: &mut Dec<'_>) -> Result<TargetKey, DecodeError> {
    Ok(TargetKey {
        host: d.str("host")?,
        pid: d.u32("pid")?,
        start_ticks: d.u64("start ticks")?,
    })
}

impl Enc {
    fn pairs<'a>(&mut self, pairs: impl ExactSizeIterator<Item = (&'a String, &'a String)>) {
        self.u64(pairs.len() as u64);
        for (name, value) in pairs {
            self.str(name);
            self.str(value);
        }
    }
}

pub fn encode_series(s: &SeriesKey) -> Vec<u8> {
    let mut e = Enc::new();
    put_target_key(&mut e, &s.target);
    e.str(&s.metric);
    e.pairs(s.labels.iter().map(|(n, v)| (n, v)));
    e.0
}

pub fn decode_series(data: &[u8]) -> Result<SeriesKey, DecodeError> {
    let mut d = Dec::new(data)?;
    let target = get_target_key(&mut d)?;
    let metric = d.str("metric")?;
    let labels = if d.version >= 2 {
        d.pairs("series label count")?
    } else {
        Vec::new()
    };
    d.finish()?;
    Ok(SeriesKey {
        target,
        metric,
        labels,
    })
}

/// A `builds` record, and its id (the key it is stored under).
pub fn encode_build(build: &v1::BuildInfo) -> (BuildId, Vec<u8>) {
    let mut bytes = vec![VERSION];
    build.encode(&mut bytes).expect("a Vec grows as needed");
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes[1..]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.as_ref()[..16]);
    (id, bytes)
}

pub fn decode_build(data: &[u8]) -> Result<v1::BuildInfo, DecodeError> {
    let d = Dec::new(data)?;
    v1::BuildInfo::decode(&data[d.at..]).map_err(|e| DecodeError::Proto(e.to_string()))
}

/// A `stacks` record.
pub fn encode_stacks(summary: &v1::StackSummary) -> Vec<u8> {
    let mut bytes = vec![VERSION];
    summary.encode(&mut bytes).expect("a Vec grows as needed");
    bytes
}

pub fn decode_stacks(data: &[u8]) -> Result<v1::StackSummary, DecodeError> {
    let d = Dec::new(data)?;
    v1::StackSummary::decode(&data[d.at..]).map_err(|e| DecodeError::Proto(e.to_string()))
}

pub fn encode_target(t: &TargetRecord) -> Vec<u8> {
    let mut e = Enc::new();
    put_target_key(&mut e, &t.key);
    e.pairs(t.labels.iter());
    let c = &t.coverage;
    e.byte(
        u8::from(c.proc)
            | u8::from(c.buildinfo) << 1
            | u8::from(c.expvar) << 2
            | u8::from(c.pprof) << 3
            | u8::from(c.metrics) << 4
            | u8::from(c.cgroup) << 5
            | u8::from(c.goroutineleak) << 6,
    );
    e.str(&c.debug_addr);
    e.i64(t.start_time_ms);
    e.i64(t.first_seen_ms);
    e.i64(t.last_seen_ms);
    e.byte(u8::from(t.exited));
    e.pairs(t.runtime_env.iter());
    match &t.build {
        None => e.byte(0),
        Some(id) => {
            e.byte(1);
            e.0.extend_from_slice(id);
        }
    }
    e.0
}

pub fn decode_target(data: &[u8]) -> Result<TargetRecord, DecodeError> {
    let mut d = Dec::new(data)?;
    let key = get_target_key(&mut d)?;
    let labels: BTreeMap<String, String> = d.pairs("label count")?.into_iter().collect();
    let at = d.at;
    let flags = d.byte("coverage")?;
    let known = if d.version >= 2 { 0b111_1111 } else { 0b1111 };
    if flags > known {
        return Err(DecodeError::Range {
            at,
            what: "coverage",
        });
    }
    let coverage = Coverage {
        proc: flags & 1 != 0,
        buildinfo: flags & 2 != 0,
        expvar: flags & 4 != 0,
        pprof: flags & 8 != 0,
        metrics: flags & 16 != 0,
        cgroup: flags & 32 != 0,
        goroutineleak: flags & 64 != 0,
        debug_addr: d.str("debug address")?,
    };
    let start_time_ms = d.i64("start time")?;
    let first_seen_ms = d.i64("first seen")?;
    let last_seen_ms = d.i64("last seen")?;
    let at = d.at;
    let exited = match d.byte("exited")? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError::Range { at, what: "exited" }),
    };
    let mut runtime_env = BTreeMap::new();
    let mut build = None;
    if d.version >= 2 {
        runtime_env = d.pairs("runtime setting count")?.into_iter().collect();
        let at = d.at;
        match d.byte("build")? {
            0 => {}
            1 => {
                let left = &d.data[d.at..];
                let id: BuildId = left.get(..16).and_then(|b| b.try_into().ok()).ok_or(
                    DecodeError::Truncated {
                        at,
                        what: "build id",
                    },
                )?;
                d.at += 16;
                build = Some(id);
            }
            _ => return Err(DecodeError::Range { at, what: "build" }),
        }
    }
    d.finish()?;
    Ok(TargetRecord {
        key,
        labels,
        coverage,
        start_time_ms,
        first_seen_ms,
        last_seen_ms,
        exited,
        runtime_env,
        build,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target_key() -> impl Strategy<Value = TargetKey> {
        (".{0,40}", any::<u32>(), any::<u64>()).prop_map(|(host, pid, start_ticks)| TargetKey {
            host,
            pid,
            start_ticks,
        })
    }

    fn target_record() -> impl Strategy<Value = TargetRecord> {
        (
            target_key(),
            prop::collection::btree_map(".{0,20}", ".{0,60}", 0..8),
            any::<[bool; 8]>(),
            ".{0,30}",
            any::<[i64; 3]>(),
            any::<bool>(),
        )
            .prop_map(|(key, labels, f, debug_addr, t, exited)| TargetRecord {
                key,
                coverage: Coverage {
                    proc: f[0],
                    buildinfo: f[1],
                    expvar: f[2],
                    pprof: f[3],
                    metrics: f[4],
                    cgroup: f[5],
                    goroutineleak: f[6],
                    debug_addr,
                },
                start_time_ms: t[0],
                first_seen_ms: t[1],
                last_seen_ms: t[2],
                exited,
                runtime_env: labels.clone(),
                build: f[7].then_some([0xab; 16]),
                labels,
            })
    }

    proptest! {
        #[test]
        fn headlog_records_round_trip_bit_for_bit(
            series in prop::collection::vec((any::<u64>(), prop::collection::vec((any::<i64>(), any::<u64>()), 0..20)), 0..6)
        ) {
            let series: Vec<(u64, Vec<(i64, f64)>)> = series
                .into_iter()
                .map(|(id, pts)| (id, pts.into_iter().map(|(t, v)| (t, f64::from_bits(v))).collect()))
                .collect();
            let bytes = encode_headlog(series.iter().map(|(id, p)| (*id, p.as_slice())));
            let back = decode_headlog(&bytes).unwrap();
            let bits = |s: &[(u64, Vec<(i64, f64)>)]| -> Vec<(u64, Vec<(i64, u64)>)> {
                s.iter().map(|(id, p)| (*id, p.iter().map(|(t, v)| (*t, v.to_bits())).collect())).collect()
            };
            prop_assert_eq!(bits(&back), bits(&series));
            // Any damage is an error or another valid record, never a panic.
            for cut in 0..bytes.len() {
                let _ = decode_headlog(&bytes[..cut]);
            }
        }

        #[test]
        fn host_stats_round_trip(
            n in any::<[u64; 4]>(), t in any::<[i64; 2]>(),
            losses in prop::collection::btree_map(".{0,12}", any::<(u64, u64)>(), 0..5)
        ) {
            let s = HostStats {
                first_ms: t[0], last_ms: t[1], batches: n[0], samples: n[1], gaps: n[2], missed: n[3], losses,
            };
            let bytes = encode_host_stats(&s);
            prop_assert_eq!(decode_host_stats(&bytes).unwrap(), s);
            for cut in 0..bytes.len() {
                prop_assert!(decode_host_stats(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn headlog_decoder_takes_any_bytes(data in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_headlog(&data);
        }

        #[test]
        fn target_records_round_trip(t in target_record()) {
            prop_assert_eq!(decode_target(&encode_target(&t)).unwrap(), t);
        }

        #[test]
        fn series_records_round_trip(
            target in target_key(),
            metric in ".{0,80}",
            labels in prop::collection::vec((".{0,20}", ".{0,60}"), 0..6),
        ) {
            let s = SeriesKey { target, metric, labels };
            prop_assert_eq!(decode_series(&encode_series(&s)).unwrap(), s);
        }

        #[test]
        fn any_bytes_decode_to_a_record_or_an_error(data in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_target(&data);
            let _ = decode_series(&data);
            let _ = decode_build(&data);
            let _ = decode_stacks(&data);
        }

        #[test]
        fn every_truncation_of_a_record_is_an_error(t in target_record()) {
            let bytes = encode_target(&t);
            for len in 0..bytes.len() {
                prop_assert!(decode_target(&bytes[..len]).is_err());
            }
        }
    }

    #[test]
    fn version_1_records_are_still_read() {
        // A v1 series record: host "h", pid 7, start ticks 9, metric "m"; no labels.
        let v1 = [1, 1, b'h', 7, 9, 1, b'm'];
        let s = decode_series(&v1).unwrap();
        assert_eq!((s.metric.as_str(), s.labels.len()), ("m", 0));
        // A v1 target record: no labels, flags 0b1111, no debug address, times, exited;
        // nothing after.
        let v1 = [1, 1, b'h', 7, 9, 0, 0b1111, 0, 2, 4, 6, 1];
        let t = decode_target(&v1).unwrap();
        assert!(t.exited && t.coverage.pprof && !t.coverage.metrics);
        assert!(t.runtime_env.is_empty() && t.build.is_none());
        // v1 knew only four coverage bits.
        assert!(decode_target(&[1, 1, b'h', 7, 9, 0, 0b1_1111, 0, 2, 4, 6, 1]).is_err());
    }

    #[test]
    fn build_and_stack_records_round_trip_and_refuse_garbage() {
        let b = v1::BuildInfo {
            go_version: "go1.26".into(),
            ..Default::default()
        };
        let (id, bytes) = encode_build(&b);
        assert_eq!(decode_build(&bytes).unwrap(), b);
        assert_eq!(encode_build(&b).0, id);
        assert_ne!(encode_build(&v1::BuildInfo::default()).0, id);
        let s = v1::StackSummary {
            total: u64::MAX,
            ..Default::default()
        };
        assert_eq!(decode_stacks(&encode_stacks(&s)).unwrap(), s);
        assert!(decode_stacks(&[VERSION, 0xff, 0xff]).is_err());
        assert_eq!(decode_build(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn unknown_versions_and_huge_lengths_are_refused() {
        assert_eq!(decode_series(&[]), Err(DecodeError::Empty));
        assert_eq!(decode_series(&[3, 0]), Err(DecodeError::Version(3)));
        // JSON from an older layout is a version byte of '{'.
        assert_eq!(
            decode_target(b"{\"key\":1}"),
            Err(DecodeError::Version(b'{'))
        );
        // A string length of 2^63 must not allocate.
        let mut e = Enc::new();
        e.u64(1 << 63);
        assert!(matches!(
            decode_series(&e.0),
            Err(DecodeError::Truncated { what: "host", .. })
        ));
        let mut e = Enc::new();
        e.str("h");
        e.u64(1);
        e.u64(1);
        e.u64(u64::MAX);
        assert!(matches!(
            decode_target(&e.0),
            Err(DecodeError::Range {
                what: "label count",
                ..
            })
        ));
    }
}
