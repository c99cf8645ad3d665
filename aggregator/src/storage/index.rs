//! The in-memory index readers see: series ids, target records, the latest value of
//! every series, a target's last-seen time and the ingest marks. The writer is its only
//! mutator, through a [`Delta`] applied after the delta's write succeeded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::postings::Postings;
use super::rocks::{CF_LATEST, CF_META, CF_SERIES, CF_TARGETS, Engine};
use super::{
    Coverage, OpenReport, SeriesKey, SeriesLabels, StorageError, TargetKey, TargetRecord, keys,
    records,
};

/// When each stack signature (by [`signature_hash`]) was first seen in a target.
pub(super) type FirstSeen = HashMap<u64, i64>;

/// One target and what the index keeps for it.
pub(super) struct TargetEntry {
    pub record: Arc<TargetRecord>,
    /// The newest sample timestamp of any of its series (or the record's last-seen time).
    pub last_seen_ms: i64,
    /// Its series, by metric and series labels.
    pub series: BTreeMap<(String, SeriesLabels), u64>,
}

/// Every label of a series, sorted by name: `__name__`, `host`, `pid`, its target's
/// labels and its own (a name given twice keeps the first of that order). A label with
/// an empty value is no label, as in Prometheus.
pub(super) fn label_set(key: &SeriesKey, target: &TargetRecord) -> Vec<(String, String)> {
    let mut labels = Vec::with_capacity(3 + target.labels.len() + key.labels.len());
    labels.push(("__name__".to_owned(), key.metric.clone()));
    labels.push(("host".to_owned(), key.target.host.clone()));
    labels.push(("pid".to_owned(), key.target.pid.to_string()));
    labels.extend(target.labels.iter().map(|(n, v)| (n.clone(), v.clone())));
    labels.extend(key.labels.iter().cloned());
    labels.retain(|(_, v)| !v.is_empty());
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    labels.dedup_by(|b, a| a.0 == b.0);
    labels
}

#[derive(Default)]
pub(super) struct Index {
    series: HashMap<Arc<SeriesKey>, u64>,
    /// Every series by id.
    pub by_id: HashMap<u64, Arc<SeriesKey>>,
    pub postings: Postings,
    pub targets: BTreeMap<TargetKey, TargetEntry>,
    pub latest: HashMap<u64, (i64, f64)>,
    marks: HashMap<String, (u64, u64)>,
    pub hosts: HashMap<String, super::HostStats>,
    pub next_series_id: u64,
    /// The stack signatures of each target's newest stored summary (of every goroutine:
    /// debug=1 or debug=2), with their first-seen times; loaded from the database the
    /// first time a target's summary arrives after open.
    pub stack_sigs: HashMap<TargetKey, Arc<FirstSeen>>,
}

/// What one group commit adds to the index; applied only once its write succeeded, so
/// readers never see what is not durable.
#[derive(Default)]
pub(super) struct Delta {
    /// New series and their ids.
    pub series: HashMap<Arc<SeriesKey>, u64>,
    /// Target records written by this commit.
    pub targets: HashMap<TargetKey, TargetRecord>,
    /// Newer latest values, by series id.
    pub latest: HashMap<u64, (i64, f64)>,
    /// Newer last-seen times.
    pub last_seen: HashMap<TargetKey, i64>,
    /// New ingest marks.
    pub marks: HashMap<String, (u64, u64)>,
    /// Host statistics written by this commit.
    pub hosts: HashMap<String, super::HostStats>,
    pub next_series_id: u64,
    pub stack_sigs: HashMap<TargetKey, Arc<FirstSeen>>,
}

impl Index {
    pub fn last_seq(&self, host: &str, epoch: u64) -> u64 {
        match self.marks.get(host) {
            Some(&(e, seq)) if e == epoch => seq,
            _ => 0,
        }
    }

    pub fn mark(&self, host: &str) -> Option<(u64, u64)> {
        self.marks.get(host).copied()
    }

    pub fn series_id(&self, key: &SeriesKey) -> Option<u64> {
        self.series.get(key).copied()
    }

    pub fn target_count(&self) -> usize {
        self.targets.len()
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Takes a sample read back from the headlog at open: the series' latest value and
    /// its target's last-seen time move forward.
    pub fn observe(&mut self, id: u64, ts: i64, v: f64) {
        let newer = self.latest.get(&id).is_none_or(|&(t, _)| ts >= t);
        if newer {
            self.latest.insert(id, (ts, v));
        }
        if let Some(key) = self.by_id.get(&id)
            && let Some(entry) = self.targets.get_mut(&key.target)
        {
            entry.last_seen_ms = entry.last_seen_ms.max(ts);
        }
    }

    pub fn apply(&mut self, delta: Delta) {
        for (key, record) in delta.targets {
            let entry = self
                .targets
                .entry(key)
                .or_insert_with_key(|k| placeholder(k, record.last_seen_ms));
            entry.last_seen_ms = entry.last_seen_ms.max(record.last_seen_ms);
            if entry.record.labels != record.labels {
                // Relabelled: its series move to the postings of the new labels.
                for &id in entry.series.values() {
                    self.postings.remove(
                        id,
                        entry
                            .record
                            .labels
                            .iter()
                            .map(|(n, v)| (n.as_str(), v.as_str())),
                        false,
                    );
                    self.postings.add(
                        id,
                        record.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                    );
                }
            }
            entry.record = Arc::new(record);
        }
        for (key, id) in delta.series {
            let entry = self
                .targets
                .entry(key.target.clone())
                .or_insert_with_key(|k| placeholder(k, 0));
            entry
                .series
                .insert((key.metric.clone(), key.labels.clone()), id);
            let labels = label_set(&key, &entry.record);
            self.postings
                .add(id, labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            self.by_id.insert(id, key.clone());
            self.series.insert(key, id);
        }
        self.stack_sigs.extend(delta.stack_sigs);
        for (id, value) in delta.latest {
            self.latest.insert(id, value);
        }
        for (key, seen) in delta.last_seen {
            if let Some(entry) = self.targets.get_mut(&key) {
                entry.last_seen_ms = entry.last_seen_ms.max(seen);
            }
        }
        self.marks.extend(delta.marks);
        self.hosts.extend(delta.hosts);
        self.next_series_id = self.next_series_id.max(delta.next_series_id);
    }

    /// Drops targets and their series (already deleted from the database).
    pub fn forget(&mut self, targets: &[TargetKey]) {
        let gone: std::collections::HashSet<&TargetKey> = targets.iter().collect();
        self.stack_sigs.retain(|key, _| !gone.contains(key));
        for key in targets {
            if let Some(entry) = self.targets.remove(key) {
                for ((metric, labels), id) in entry.series {
                    if let Some(series) = self.by_id.get(&id) {
                        let all = label_set(series, &entry.record);
                        self.postings.remove(
                            id,
                            all.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                            true,
                        );
                    }
                    self.latest.remove(&id);
                    self.by_id.remove(&id);
                    self.series.remove(&SeriesKey {
                        target: key.clone(),
                        metric,
                        labels,
                    });
                }
            }
        }
    }
}

/// A target known only from its series (its record was lost or is not written yet).
fn placeholder(key: &TargetKey, seen: i64) -> TargetEntry {
    TargetEntry {
        record: Arc::new(TargetRecord {
            key: key.clone(),
            labels: BTreeMap::new(),
            coverage: Coverage::default(),
            start_time_ms: 0,
            first_seen_ms: seen,
            last_seen_ms: seen,
            exited: false,
            runtime_env: BTreeMap::new(),
            build: None,
        }),
        last_seen_ms: seen,
        series: BTreeMap::new(),
    }
}

fn hex(key: &[u8]) -> String {
    key.iter().take(64).map(|b| format!("{b:02x}")).collect()
}

/// Rebuilds the index from the `series`, `targets`, `meta` and `latest` families. A record
/// that cannot be decoded is skipped, counted and logged with its key.
pub(super) fn load(engine: &Engine) -> Result<(Index, OpenReport), StorageError> {
    let mut index = Index {
        next_series_id: 1,
        ..Index::default()
    };
    let mut report = OpenReport::default();
    let mut skip = |cf: &str, key: &[u8], reason: &dyn std::fmt::Display| {
        tracing::warn!(cf, key = %hex(key), %reason, "skipping a record that cannot be decoded");
        report.skipped += 1;
    };

    engine.scan_prefix(CF_TARGETS, &[], |key, value| {
        match records::decode_target(value) {
            Ok(record) if record.key.encode() == key => {
                let seen = record.last_seen_ms;
                index.targets.insert(
                    record.key.clone(),
                    TargetEntry {
                        record: Arc::new(record),
                        last_seen_ms: seen,
                        series: BTreeMap::new(),
                    },
                );
            }
            Ok(_) => skip(
                CF_TARGETS,
                key,
                &"the record names another target than its key",
            ),
            Err(e) => skip(CF_TARGETS, key, &e),
        }
        Ok(())
    })?;
    engine.scan_prefix(CF_SERIES, &[], |key, value| {
        let Some(id) = keys::decode_series_key(key) else {
            skip(CF_SERIES, key, &"malformed key");
            return Ok(());
        };
        match records::decode_series(value) {
            Ok(series) => {
                let series = Arc::new(series);
                let entry = index
                    .targets
                    .entry(series.target.clone())
                    .or_insert_with_key(|k| placeholder(k, 0));
                entry
                    .series
                    .insert((series.metric.clone(), series.labels.clone()), id);
                index.by_id.insert(id, series.clone());
                index.series.insert(series, id);
                index.next_series_id = index.next_series_id.max(id.saturating_add(1));
            }
            Err(e) => {
                // The id stays taken: its samples must not be adopted by a new series.
                index.next_series_id = index.next_series_id.max(id.saturating_add(1));
                skip(CF_SERIES, key, &e);
            }
        }
        Ok(())
    })?;
    engine.scan_prefix(CF_META, keys::INGEST_MARK_PREFIX, |key, value| {
        let host = std::str::from_utf8(&key[keys::INGEST_MARK_PREFIX.len()..]);
        match (host, keys::decode_ingest_mark(value)) {
            (Ok(host), Some(mark)) => {
                index.marks.insert(host.to_owned(), mark);
            }
            _ => skip(CF_META, key, &"malformed ingest mark"),
        }
        Ok(())
    })?;
    for entry in index.targets.values() {
        for &id in entry.series.values() {
            if let Some(series) = index.by_id.get(&id) {
                let labels = label_set(series, &entry.record);
                index
                    .postings
                    .add(id, labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            }
        }
    }
    engine.scan_prefix(CF_META, keys::HOST_STATS_PREFIX, |key, value| {
        let host = std::str::from_utf8(&key[keys::HOST_STATS_PREFIX.len()..]);
        match (host, records::decode_host_stats(value)) {
            (Ok(host), Ok(stats)) => {
                index.hosts.insert(host.to_owned(), stats);
            }
            _ => skip(CF_META, key, &"malformed host statistics"),
        }
        Ok(())
    })?;
    // The newest compacted sample of every series; the headlog, replayed after this,
    // moves it forward.
    engine.scan_prefix(CF_LATEST, &[], |key, value| {
        match (
            keys::decode_series_key(key),
            keys::decode_latest_value(value),
        ) {
            (Some(id), Some((ts, v))) => index.observe(id, ts, v),
            _ => skip(CF_LATEST, key, &"malformed latest value"),
        }
        Ok(())
    })?;
    report.series = index.series.len();
    report.targets = index.targets.len();
    Ok((index, report))
}

/// A stack signature's identity within a target: its frames (the wait reason changes as
/// a goroutine moves on, the code it waits in does not).
pub(super) fn signature_hash(frames: &[String]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    frames.hash(&mut h);
    h.finish()
}
