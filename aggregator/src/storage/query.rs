//! Reads: range queries over the `head` family and paged target listings.
//!
//! The index lock is held only to pick what to read (series ids, record handles, a
//! page of latest values); scans and copies happen outside it. Long scans poll a
//! [`Cancel`] flag, so a query whose caller gave up (its deadline passed, the client
//! went away) stops instead of running to the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use goroscope_proto::v1;

use super::chunk::Rollup;
use super::index::label_set;
use super::rocks::{CF_BUILDS, CF_CHUNKS, CF_ROLLUPS, CF_STACKS};
use super::{
    LabelMatcher, LatestValue, Selector, SeriesData, SeriesLabels, Storage, StorageError,
    TargetKey, TargetRecord, TargetView, chunk, keys, records,
};

/// Summaries looked at, at most, when searching back from a time for one of a source.
const STACKS_LOOKBACK: usize = 512;

/// A series picked for listing: its id, metric and labels.
type Picked = (u64, String, SeriesLabels);

/// A flag a long read polls to stop early: set when its caller gave up.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// The flag itself, for a reader that polls an `AtomicBool`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where the next page of a target listing starts: after this target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken(pub TargetKey);

impl PageToken {
    /// `pid.start_ticks.host`: opaque to clients, and the host comes last since it is
    /// the only part that may hold a `.`.
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.0.pid, self.0.start_ticks, self.0.host)
    }

    pub fn decode(text: &str) -> Option<PageToken> {
        let mut parts = text.splitn(3, '.');
        let pid = parts.next()?.parse().ok()?;
        let start_ticks = parts.next()?.parse().ok()?;
        let host = parts.next()?.to_owned();
        Some(PageToken(TargetKey {
            host,
            pid,
            start_ticks,
        }))
    }
}

impl Storage {
    /// A page of the targets matching `selector` seen at or after `seen_since_ms`, in
    /// (host, pid, start) order, starting after `after`; and the token of the next page
    /// if there is one.
    pub fn list_targets(
        &self,
        selector: &Selector,
        seen_since_ms: i64,
        page_size: usize,
        after: Option<&PageToken>,
    ) -> (Vec<TargetView>, Option<PageToken>) {
        use std::ops::Bound;
        let page_size = page_size.max(1);
        let mut picked: Vec<(Arc<TargetRecord>, i64, Vec<Picked>)> = Vec::new();
        let mut more = false;
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let from = match after {
            Some(t) => Bound::Excluded(&t.0),
            None => Bound::Unbounded,
        };
        for (_, entry) in index
            .targets
            .range::<TargetKey, _>((from, Bound::Unbounded))
        {
            if entry.last_seen_ms < seen_since_ms || !selector.matches(&entry.record) {
                continue;
            }
            if picked.len() == page_size {
                more = true;
                break;
            }
            let series = entry
                .series
                .iter()
                .map(|((metric, labels), id)| (*id, metric.clone(), labels.clone()))
                .collect();
            picked.push((entry.record.clone(), entry.last_seen_ms, series));
        }
        let latest: Vec<Vec<LatestValue>> = picked
            .iter_mut()
            .map(|(_, _, series)| {
                std::mem::take(series)
                    .into_iter()
                    .filter_map(|(id, metric, labels)| {
                        index.latest.get(&id).map(|&(ts, v)| LatestValue {
                            metric,
                            labels,
                            timestamp_ms: ts,
                            value: v,
                        })
                    })
                    .collect()
            })
            .collect();
        drop(index);
        let next = more
            .then(|| picked.last().map(|(r, _, _)| PageToken(r.key.clone())))
            .flatten();
        let views = picked
            .into_iter()
            .zip(latest)
            .map(|((record, last_seen_ms, _), latest)| TargetView {
                record,
                last_seen_ms,
                latest,
            })
            .collect();
        (views, next)
    }

    /// Samples of `metric` in `[start_ms, end_ms]` for every target matching `selector`.
    /// Blocking: call it off the async threads. Stops with [`StorageError::Cancelled`]
    /// once `cancel` is set.
    pub fn query_range(
        &self,
        metric: &str,
        selector: &Selector,
        start_ms: i64,
        end_ms: i64,
        cancel: &Cancel,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let mut matchers = vec![LabelMatcher::equal("__name__", metric)];
        matchers.extend(
            selector
                .matchers
                .iter()
                .map(|(n, v)| LabelMatcher::equal(n, v)),
        );
        let wanted: Vec<(u64, Arc<TargetRecord>, SeriesLabels)> = self
            .matching(&matchers, i64::MIN)
            .into_iter()
            .map(|m| (m.id, m.target, m.series.labels.clone()))
            .collect();
        let mut total = 0usize;
        let mut out = Vec::with_capacity(wanted.len());
        for (id, target, labels) in wanted {
            if cancel.is_cancelled() {
                return Err(StorageError::Cancelled);
            }
            let points = self.read_series(id, start_ms, end_ms, cancel)?;
            total += points.len();
            if total > self.options.max_query_samples {
                return Err(StorageError::TooManySamples {
                    limit: self.options.max_query_samples,
                });
            }
            out.push(SeriesData {
                target,
                metric: metric.to_owned(),
                labels,
                points,
            });
        }
        Ok(out)
    }

    /// The points of series `id` in `[start_ms, end_ms]`: the head's, then those of the
    /// chunks in the partitions the range touches, merged in time order (a point read
    /// from both while a flush completes is kept once). The head is read first: a flush
    /// writes its chunks before it lets the head go.
    pub(super) fn read_series(
        &self,
        id: u64,
        start_ms: i64,
        end_ms: i64,
        cancel: &Cancel,
    ) -> Result<Vec<(i64, f64)>, StorageError> {
        if start_ms > end_ms {
            return Ok(Vec::new());
        }
        let head = self.head.read(id, start_ms, end_ms);
        let partitions: Vec<i64> = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(self.parts.of(start_ms)..=self.parts.of(end_ms))
            .map(|(p, _)| *p)
            .collect();
        let mut points: Vec<(i64, f64)> = Vec::new();
        let mut sorted = true;
        for p in partitions {
            if cancel.is_cancelled() {
                return Err(StorageError::Cancelled);
            }
            let prefix = keys::chunk_prefix(p, id);
            self.engine.scan_prefix(CF_CHUNKS, &prefix, |key, value| {
                let decoded = chunk::decode(value).map_err(|reason| StorageError::Corrupt {
                    cf: CF_CHUNKS,
                    reason: format!("chunk {key:02x?}: {reason}"),
                })?;
                if decoded.len() > self.options.max_query_samples {
                    return Err(StorageError::TooManySamples {
                        limit: self.options.max_query_samples,
                    });
                }
                let from = decoded.partition_point(|q| q.0 < start_ms);
                let to = decoded.partition_point(|q| q.0 <= end_ms);
                if let (Some(last), Some(first)) = (points.last(), decoded.get(from))
                    && first.0 <= last.0
                {
                    sorted = false;
                }
                points.extend_from_slice(&decoded[from..to.max(from)]);
                Ok(())
            })?;
        }
        if !head.is_empty() {
            if points.last().is_some_and(|l| l.0 >= head[0].0) {
                sorted = false;
            }
            points.extend_from_slice(&head);
        }
        if !sorted {
            // Late samples: chunks that overlap, or head samples older than a chunk's.
            points.sort_by_key(|q| q.0);
            points.dedup_by_key(|q| q.0);
        }
        Ok(points)
    }

    /// The one target `selector` picks (live or not); an error naming how many match
    /// when it is not exactly one.
    pub fn one_target(&self, selector: &Selector) -> Result<TargetView, OneTarget> {
        let (mut views, next) = self.list_targets(selector, 0, 2, None);
        match (views.len(), next) {
            (0, _) => Err(OneTarget::None),
            (1, None) => Ok(views.remove(0)),
            _ => Err(OneTarget::Many(
                views.into_iter().map(|v| v.record.key.clone()).collect(),
            )),
        }
    }

    /// A target's stored build information.
    pub fn build(&self, target: &TargetRecord) -> Result<Option<v1::BuildInfo>, StorageError> {
        let Some(id) = target.build else {
            return Ok(None);
        };
        match self.engine.get(CF_BUILDS, &id)? {
            None => Ok(None),
            Some(bytes) => {
                records::decode_build(&bytes)
                    .map(Some)
                    .map_err(|e| StorageError::Corrupt {
                        cf: CF_BUILDS,
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// A target's newest stack summary at or before `at_ms` (`None`: the newest) whose
    /// source `pick` accepts, with the time it was taken. Summaries that did not read
    /// the profile (skipped) are passed over, but the newest skip reason is returned
    /// when nothing was read.
    pub fn stacks_at(
        &self,
        target: &TargetKey,
        at_ms: Option<i64>,
        pick: impl Fn(&str) -> bool,
    ) -> Result<StacksAt, StorageError> {
        let (from, end) = keys::stacks_range(target);
        let to = match at_ms.and_then(|at| at.checked_add(1)) {
            Some(after) => keys::stacks_key(target, after, 0),
            None => end,
        };
        let mut found = StacksAt::default();
        self.engine
            .scan_range_rev(CF_STACKS, &from, &to, STACKS_LOOKBACK, |key, value| {
                let Ok(summary) = records::decode_stacks(value) else {
                    tracing::warn!(ts = ?keys::stacks_key_ts(key), "skipping a stack summary that cannot be decoded");
                    return Ok(true);
                };
                if !pick(&summary.source) {
                    return Ok(true);
                }
                if !summary.skipped.is_empty() {
                    if found.last_skip.is_none() {
                        found.last_skip = Some((summary.timestamp_ms, summary.skipped));
                    }
                    return Ok(true);
                }
                found.summary = Some(summary);
                Ok(false)
            })?;
        Ok(found)
    }
}

/// A series picked by label matchers, with every label and its rollups.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupSeries {
    pub labels: Vec<(String, String)>,
    pub rollups: Vec<Rollup>,
}

impl Storage {
    /// The rollups of series `id` at `resolution` (one of [`ROLLUP_RESOLUTIONS`]) whose
    /// bucket ends in `[start_ms, end_ms]`: those stored by compaction, and those of the
    /// head's samples, folded together per bucket.
    pub(super) fn read_rollups(
        &self,
        id: u64,
        resolution: i64,
        start_ms: i64,
        end_ms: i64,
        cancel: &Cancel,
    ) -> Result<Vec<Rollup>, StorageError> {
        let Some(&(res, _)) = keys::ROLLUPS.iter().find(|(_, r)| *r == resolution) else {
            return Ok(Vec::new());
        };
        if start_ms > end_ms {
            return Ok(Vec::new());
        }
        let first_sample = start_ms.saturating_sub(resolution).saturating_add(1);
        let in_range = |r: &Rollup| r.end_ms >= start_ms && r.end_ms <= end_ms;
        // Stored chunks in partition order, each sorted; then the head's.
        let mut rows: Vec<Rollup> = Vec::new();
        let partitions: Vec<i64> = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(self.parts.of(first_sample)..=self.parts.of(end_ms))
            .map(|(p, _)| *p)
            .collect();
        for p in partitions {
            if cancel.is_cancelled() {
                return Err(StorageError::Cancelled);
            }
            self.engine.scan_prefix(
                CF_ROLLUPS,
                &keys::rollup_prefix(res, p, id),
                |key, value| {
                    let decoded =
                        chunk::decode_rollups(value).map_err(|reason| StorageError::Corrupt {
                            cf: CF_ROLLUPS,
                            reason: format!("rollups {key:02x?}: {reason}"),
                        })?;
                    rows.extend(decoded.into_iter().filter(in_range));
                    Ok(())
                },
            )?;
        }
        rows.extend(
            chunk::rollups(&self.head.read(id, first_sample, end_ms), resolution)
                .into_iter()
                .filter(in_range),
        );
        Ok(merge_buckets(rows))
    }

    /// Whether reading rollups at `resolution` for `[start_ms, end_ms]` (bucket ends)
    /// beats reading the raw samples: the first matching series with buckets there
    /// holds at least [`MIN_SAMPLES_PER_BUCKET`] samples a bucket over the range's
    /// newest 24 buckets. A bucket costs seven
    /// decoded columns and a raw sample two, and each chunk read has a fixed cost, so
    /// 1-minute rollups of a series sampled every 10 s (6 a bucket) read slower than
    /// its samples; those of one sampled every second (60) are much faster.
    pub fn rollups_pay(
        &self,
        matchers: &[LabelMatcher],
        resolution: i64,
        start_ms: i64,
        end_ms: i64,
        cancel: &Cancel,
    ) -> Result<bool, StorageError> {
        // The newest 24 buckets of the range tell, at a small cost.
        let start_ms = start_ms.max(end_ms.saturating_sub(24 * resolution));
        for Matched { id, .. } in self.matching(matchers, start_ms - resolution) {
            let buckets = self.read_rollups(id, resolution, start_ms, end_ms, cancel)?;
            if buckets.is_empty() {
                continue;
            }
            let first = start_ms.saturating_sub(resolution).saturating_add(1);
            let samples = self.read_series(id, first, end_ms, cancel)?.len();
            return Ok(samples >= MIN_SAMPLES_PER_BUCKET * buckets.len());
        }
        Ok(false)
    }

    /// The rollups at `resolution` of the series every matcher holds on, whose bucket
    /// ends in `[start_ms, end_ms]`.
    pub fn select_rollups(
        &self,
        matchers: &[LabelMatcher],
        resolution: i64,
        start_ms: i64,
        end_ms: i64,
        cancel: &Cancel,
    ) -> Result<Vec<RollupSeries>, StorageError> {
        let mut by_labels: BTreeMap<LabelSet, (Vec<Rollup>, usize)> = BTreeMap::new();
        let mut total = 0usize;
        for Matched { id, labels, .. } in self.matching(matchers, start_ms - resolution) {
            let rows = self.read_rollups(id, resolution, start_ms, end_ms, cancel)?;
            if rows.is_empty() {
                continue;
            }
            total += rows.len();
            if total > self.options.max_query_samples {
                return Err(StorageError::TooManySamples {
                    limit: self.options.max_query_samples,
                });
            }
            let (merged, parts) = by_labels.entry(labels).or_default();
            merged.extend(rows);
            *parts += 1;
        }
        Ok(by_labels
            .into_iter()
            .map(|(labels, (rows, parts))| RollupSeries {
                labels,
                // Series of the same labels (rare) fold bucket by bucket.
                rollups: if parts > 1 { merge_buckets(rows) } else { rows },
            })
            .collect())
    }
}

/// Sorts buckets by their end and folds those of the same end together.
fn merge_buckets(mut rows: Vec<Rollup>) -> Vec<Rollup> {
    if !rows.is_sorted_by_key(|r| r.end_ms) {
        rows.sort_by_key(|r| r.end_ms);
    }
    let mut out: Vec<Rollup> = Vec::with_capacity(rows.len());
    for r in rows {
        match out.last_mut() {
            Some(last) if last.end_ms == r.end_ms => chunk::merge(last, &r),
            _ => out.push(r),
        }
    }
    out
}

/// A series' points in time order.
type Points = Vec<(i64, f64)>;
/// A series' label pairs, sorted by name.
type LabelSet = Vec<(String, String)>;

/// Threads that read the series of one query: one per core (at most 4), and one alone
/// below 64 series, where starting threads costs more than it saves.
fn query_threads(series: usize) -> usize {
    if series < 64 {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Samples a rollup bucket must stand for, on average, for rollups to be read instead
/// of raw samples ([`Storage::rollups_pay`]).
pub const MIN_SAMPLES_PER_BUCKET: usize = 20;

/// The resolutions rollups are kept at, milliseconds: 1 minute and 1 hour.
pub const ROLLUP_RESOLUTIONS: [i64; 2] = [keys::ROLLUPS[0].1, keys::ROLLUPS[1].1];

/// A series label matchers picked.
struct Matched {
    id: u64,
    series: Arc<super::SeriesKey>,
    target: Arc<TargetRecord>,
    labels: Vec<(String, String)>,
}

/// A series picked by label matchers, with every label and its points.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledSeries {
    /// Sorted by name; `__name__` is the metric.
    pub labels: Vec<(String, String)>,
    pub points: Vec<(i64, f64)>,
}

impl Storage {
    /// The ids and labels of the series every matcher holds on (a missing label has
    /// the empty value), whose target's newest sample is at or after `start_ms`.
    fn matching(&self, matchers: &[LabelMatcher], start_ms: i64) -> Vec<Matched> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for id in index.postings.candidates(matchers) {
            let Some(key) = index.by_id.get(&id) else {
                continue;
            };
            let Some(target) = index.targets.get(&key.target) else {
                continue;
            };
            // Only the newest sample bounds a series: a target's first batch may carry
            // samples older than when it was first seen (a collector's spool).
            if target.last_seen_ms < start_ms {
                continue;
            }
            let labels = label_set(key, &target.record);
            let holds = matchers.iter().all(|m| {
                let value = labels
                    .iter()
                    .find(|(n, _)| *n == m.name)
                    .map_or("", |(_, v)| v.as_str());
                m.matches(value)
            });
            if holds {
                out.push(Matched {
                    id,
                    series: key.clone(),
                    target: target.record.clone(),
                    labels,
                });
            }
        }
        out
    }

    /// The series every matcher holds on, with their points in `[start_ms, end_ms]`.
    /// Series whose labels are the same (a pid reused by a later process) come as one.
    /// Blocking: call it off the async threads.
    pub fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
        cancel: &Cancel,
    ) -> Result<Vec<LabeledSeries>, StorageError> {
        let picked = self.matching(matchers, start_ms);
        // Reading and decoding the series is most of a large query: it is split over
        // the cores, each thread taking a contiguous part of the series.
        let total = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let read = |part: &[Matched]| -> Result<Vec<Points>, StorageError> {
            let mut out = Vec::with_capacity(part.len());
            for m in part {
                if cancel.is_cancelled() || failed.load(Ordering::Relaxed) {
                    return Err(StorageError::Cancelled);
                }
                let points = self
                    .read_series(m.id, start_ms, end_ms, cancel)
                    .inspect_err(|_| failed.store(true, Ordering::Relaxed))?;
                let n = points.len();
                if total.fetch_add(n, Ordering::Relaxed) + n > self.options.max_query_samples {
                    failed.store(true, Ordering::Relaxed);
                    return Err(StorageError::TooManySamples {
                        limit: self.options.max_query_samples,
                    });
                }
                out.push(points);
            }
            Ok(out)
        };
        let threads = query_threads(picked.len());
        let parts: Vec<Result<Vec<Points>, StorageError>> = if threads <= 1 {
            vec![read(&picked)]
        } else {
            let size = picked.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = picked
                    .chunks(size)
                    .map(|part| scope.spawn(|| read(part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(StorageError::Engine("a query thread panicked".into()))
                        })
                    })
                    .collect()
            })
        };
        // The first error that is not another thread's stop.
        let mut read_points = Vec::with_capacity(picked.len());
        let mut error = None;
        for part in parts {
            match part {
                Ok(points) => read_points.extend(points),
                Err(StorageError::Cancelled) if !cancel.is_cancelled() => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        if read_points.len() != picked.len() {
            return Err(StorageError::Cancelled);
        }
        let mut by_labels: BTreeMap<LabelSet, Points> = BTreeMap::new();
        for (Matched { labels, .. }, points) in picked.into_iter().zip(read_points) {
            if points.is_empty() {
                continue;
            }
            let merged = by_labels.entry(labels).or_default();
            let sorted = merged.last().is_none_or(|l| l.0 < points[0].0);
            merged.extend(points);
            if !sorted {
                merged.sort_by_key(|p| p.0);
                merged.dedup_by_key(|p| p.0);
            }
        }
        Ok(by_labels
            .into_iter()
            .map(|(labels, points)| LabeledSeries { labels, points })
            .collect())
    }

    /// The label sets of the series every matcher holds on whose target has a sample at
    /// or after `start_ms`, at most `limit`.
    pub fn series_labels(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        limit: usize,
    ) -> Vec<Vec<(String, String)>> {
        let mut sets: Vec<Vec<(String, String)>> = self
            .matching(matchers, start_ms)
            .into_iter()
            .map(|m| m.labels)
            .collect();
        sets.sort();
        sets.dedup();
        sets.truncate(limit);
        sets
    }

    /// Every label name, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.postings.names()
    }

    /// Every value of a label, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.postings.values(name)
    }
}

/// Targets counted for a status report.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Census {
    pub targets: usize,
    pub live: usize,
    /// By the target label `service`: (targets, live).
    pub services: BTreeMap<String, (usize, usize)>,
    /// Live targets per source.
    pub coverage: BTreeMap<&'static str, usize>,
    /// Live targets per host.
    pub hosts: BTreeMap<String, usize>,
}

impl Storage {
    /// Counts targets: live ones have not exited and were seen at or after `live_since`.
    pub fn census(&self, live_since_ms: i64) -> Census {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut c = Census::default();
        for entry in index.targets.values() {
            let r = &entry.record;
            let live = !r.exited && entry.last_seen_ms >= live_since_ms;
            c.targets += 1;
            let service = r.labels.get("service").cloned().unwrap_or_default();
            let s = c.services.entry(service).or_default();
            s.0 += 1;
            if !live {
                continue;
            }
            s.1 += 1;
            c.live += 1;
            *c.hosts.entry(r.key.host.clone()).or_default() += 1;
            let cov = &r.coverage;
            for (name, on) in [
                ("proc", cov.proc),
                ("buildinfo", cov.buildinfo),
                ("expvar", cov.expvar),
                ("pprof", cov.pprof),
                ("metrics", cov.metrics),
                ("cgroup", cov.cgroup),
                ("goroutineleak", cov.goroutineleak),
            ] {
                if on {
                    *c.coverage.entry(name).or_default() += 1;
                }
            }
        }
        c
    }
}

/// Why a selector did not pick exactly one target.
#[derive(Debug)]
pub enum OneTarget {
    None,
    Many(Vec<TargetKey>),
}

/// What [`Storage::stacks_at`] found.
#[derive(Debug, Default)]
pub struct StacksAt {
    pub summary: Option<v1::StackSummary>,
    /// The newest skipped summary newer than `summary`: (time, why).
    pub last_skip: Option<(i64, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        let t = PageToken(TargetKey {
            host: "node-a.example".into(),
            pid: 42,
            start_ticks: 7,
        });
        assert_eq!(PageToken::decode(&t.encode()), Some(t));
        assert_eq!(PageToken::decode("x.1.h"), None);
        assert_eq!(PageToken::decode("1"), None);
    }
}
