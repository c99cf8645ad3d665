//! Encoding scrapes into batches for one stream.
//!
//! A stream interns its targets and series: the encoder declares each the first time
//! the stream carries it (and a target again when its labels or coverage change), then
//! sends only refs. Refs are never reused within a stream.
//!
//! A scrape is a list of items: for each target sample, the target itself, then one
//! item per metric; then one item per target that exited. [`Encoder::encode_part`]
//! packs items from a given position until the next would make the batch exceed the
//! byte limit the aggregator advertised, declaring what the items need on the way; the
//! end position goes into the batch's sequence number (see `outbox`). An item too large
//! for any batch on its own (a target whose labels alone exceed the limit) is left out
//! and counted, never retried forever.

use std::collections::HashMap;
use std::sync::Arc;

use goroscope_proto::v1;
use prost::Message;
use prost::encoding::encoded_len_varint;

use crate::model::{Scrape, SeriesId, TargetMeta};
use crate::outbox::{COMPLETE, seq};

/// What wrapping a Batch in a CollectorMessage, and its seq field, add at most.
const BATCH_OVERHEAD: usize = 32;

/// One batch of a scrape, and where it ends.
#[derive(Debug)]
pub struct Part {
    pub batch: v1::Batch,
    /// The item after the last one carried; `None` when the scrape is complete.
    pub end: Option<u32>,
    /// Items left out because they do not fit in any batch on their own.
    pub oversized: u32,
}

pub struct Encoder {
    host: String,
    targets: HashMap<(u32, u64), (u32, Arc<TargetMeta>)>,
    series: HashMap<(u32, &'static str), u32>,
    /// Series with labels (from `/metrics`), by target ref and identity.
    labeled: HashMap<(u32, Arc<SeriesId>), u32>,
    /// Series refs of each target ref, to forget them with the target.
    target_series: HashMap<u32, Vec<u32>>,
    next_target_ref: u32,
    next_series_ref: u32,
    /// Targets whose build does not fit in a batch with their declaration: declared
    /// without it on this stream (the build is optional; the target is not).
    no_build: std::collections::HashSet<(u32, u64)>,
}

/// One length-delimited field's cost in a message.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The encoded length of a `SeriesDecl` of `metric` with the largest refs and labels
/// that take `labels_len` bytes, computed without building one: this runs for every
/// sample.
fn series_decl_len(metric: &str, labels_len: usize) -> usize {
    use prost::encoding::uint32;
    field_len(2 * uint32::encoded_len(1, &u32::MAX) + field_len(metric.len()) + labels_len)
}

/// The encoded length of a one-sample `SeriesSamples` at `ts` with the largest ref.
fn series_samples_len(ts: i64) -> usize {
    use prost::encoding::{double, sint64, uint32};
    uint32::encoded_len(1, &u32::MAX)
        + sint64::encoded_len_packed(2, &[ts])
        + double::encoded_len_packed(3, &[0.0])
}

enum Item<'a> {
    Target(&'a Arc<TargetMeta>),
    Metric(&'a Arc<TargetMeta>, &'static str, f64),
    Stacks(&'a Arc<TargetMeta>, &'a v1::StackSummary),
    Labeled(&'a Arc<TargetMeta>, &'a Arc<SeriesId>, f64),
    Gone(&'a Arc<TargetMeta>),
}

impl<'a> Item<'a> {
    /// The target the item belongs to.
    fn meta(&self) -> &'a Arc<TargetMeta> {
        match self {
            Item::Target(m)
            | Item::Metric(m, _, _)
            | Item::Labeled(m, _, _)
            | Item::Stacks(m, _)
            | Item::Gone(m) => m,
        }
    }
}

impl Encoder {
    pub fn new(host: &str) -> Encoder {
        Encoder {
            host: host.to_owned(),
            targets: HashMap::new(),
            series: HashMap::new(),
            labeled: HashMap::new(),
            target_series: HashMap::new(),
            next_target_ref: 0,
            next_series_ref: 0,
            no_build: Default::default(),
        }
    }

    /// Items of `scrape`.
    pub fn item_count(scrape: &Scrape) -> usize {
        scrape
            .samples
            .iter()
            .map(|s| 1 + s.metrics.len() + s.series.len() + s.stacks.len())
            .sum::<usize>()
            + scrape.gone.len()
    }

    /// The batch carrying the items of scrape `number` from `from` on, as many as fit in
    /// `max_bytes` (0: no limit).
    pub fn encode_part(
        &mut self,
        number: u32,
        scrape: &Scrape,
        from: u32,
        max_bytes: usize,
    ) -> Part {
        let budget = if max_bytes == 0 {
            usize::MAX
        } else {
            max_bytes.saturating_sub(BATCH_OVERHEAD)
        };
        let mut batch = v1::Batch::default();
        let mut size = 0usize;
        let mut oversized = 0u32;
        let mut end = None;
        let items = scrape
            .samples
            .iter()
            .flat_map(|s| {
                std::iter::once(Item::Target(&s.meta))
                    .chain(
                        s.metrics
                            .iter()
                            .map(move |&(name, value)| Item::Metric(&s.meta, name, value)),
                    )
                    .chain(s.stacks.iter().map(move |st| Item::Stacks(&s.meta, st)))
                    .chain(
                        s.series
                            .iter()
                            .map(move |(id, value)| Item::Labeled(&s.meta, id, *value)),
                    )
            })
            .chain(scrape.gone.iter().map(Item::Gone));
        for (here, item) in (0u32..).zip(items) {
            if here < from {
                continue;
            }
            let mut cost = self.cost(&item, scrape.timestamp_ms);
            if cost > budget
                && let Some(meta) = self.undeclared_with_build(&item)
            {
                // Too big with its build for any batch: the target goes without it.
                tracing::warn!(
                    pid = meta.pid,
                    budget,
                    "a target's build information does not fit in a batch; declaring it without"
                );
                self.no_build.insert((meta.pid, meta.start_ticks));
                cost = self.cost(&item, scrape.timestamp_ms);
            }
            if size + cost > budget {
                if size == 0 {
                    // A stack summary too big for any batch goes with its smallest
                    // groups left out (and counted as omitted).
                    if let Item::Stacks(meta, summary) = &item
                        && let Some(cut) = self.cut_to_fit(meta, summary, budget)
                    {
                        let target_ref = self.declare_target(meta, &mut batch);
                        let mut cut = cut;
                        cut.target_ref = target_ref;
                        size += field_len(cut.encoded_len());
                        batch.stacks.push(cut);
                        continue;
                    }
                    oversized += 1;
                    continue;
                }
                end = Some(here);
                break;
            }
            size += cost;
            self.add(&item, scrape.timestamp_ms, &mut batch);
        }
        let last = end.unwrap_or(COMPLETE);
        batch.seq = seq(number, last);
        Part {
            batch,
            end,
            oversized,
        }
    }

    fn target_ref(&self, meta: &Arc<TargetMeta>) -> Option<u32> {
        match self.targets.get(&(meta.pid, meta.start_ticks)) {
            Some((r, known)) if Arc::ptr_eq(known, meta) || known == meta => Some(*r),
            _ => None,
        }
    }

    /// The target's declaration; with its build information when `new` on the stream.
    fn upsert(&self, r: u32, meta: &TargetMeta, new: bool) -> v1::TargetUpsert {
        v1::TargetUpsert {
            r#ref: r,
            id: Some(v1::TargetId {
                host: self.host.clone(),
                pid: meta.pid,
                start_ticks: meta.start_ticks,
            }),
            labels: meta
                .labels
                .iter()
                .map(|(name, value)| v1::Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            coverage: Some(meta.coverage.clone()),
            start_time_ms: meta.start_time_ms,
            build: if new && !self.no_build.contains(&(meta.pid, meta.start_ticks)) {
                meta.build.as_deref().cloned()
            } else {
                None
            },
            runtime_env: meta
                .runtime_env
                .iter()
                .map(|(name, value)| v1::Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        }
    }

    /// What adding `item` costs in bytes, declarations included; changes nothing.
    fn cost(&self, item: &Item<'_>, ts: i64) -> usize {
        let meta = item.meta();
        let target_ref = self.target_ref(meta);
        let target_cost = match target_ref {
            Some(_) => 0,
            // The ref's value does not change the size by more than a few bytes.
            None => field_len(self.upsert(u32::MAX, meta, self.is_new(meta)).encoded_len()),
        };
        match item {
            Item::Target(_) => target_cost,
            Item::Metric(_, name, _) => {
                let known = target_ref.is_some_and(|t| self.series.contains_key(&(t, *name)));
                let decl = if known { 0 } else { series_decl_len(name, 0) };
                target_cost + decl + field_len(series_samples_len(ts))
            }
            Item::Labeled(_, id, _) => {
                let known =
                    target_ref.is_some_and(|t| self.labeled.contains_key(&(t, (*id).clone())));
                let decl = if known {
                    0
                } else {
                    series_decl_len(&id.name, id.labels_encoded_len())
                };
                target_cost + decl + field_len(series_samples_len(ts))
            }
            // The target ref takes at most 5 bytes more than the summary's own 0.
            Item::Stacks(_, st) => target_cost + field_len(st.encoded_len() + 6),
            Item::Gone(_) => target_cost + 6,
        }
    }

    /// `summary` with as many of its largest groups as fit in `budget` with its
    /// target's declaration, if at least the summary itself does.
    fn cut_to_fit(
        &self,
        meta: &Arc<TargetMeta>,
        summary: &v1::StackSummary,
        budget: usize,
    ) -> Option<v1::StackSummary> {
        let target_cost = self.cost(&Item::Target(meta), 0);
        let mut cut = summary.clone();
        // The groups come largest first.
        while target_cost + field_len(cut.encoded_len() + 6) > budget {
            let dropped = cut.groups.pop()?;
            cut.omitted = cut.omitted.saturating_add(dropped.count);
        }
        Some(cut)
    }

    /// The target of `item` if it is not declared on this stream yet and would be
    /// declared with its build.
    fn undeclared_with_build<'a>(&self, item: &Item<'a>) -> Option<&'a TargetMeta> {
        let meta = item.meta();
        let key = (meta.pid, meta.start_ticks);
        (self.target_ref(meta).is_none()
            && self.is_new(meta)
            && meta.build.is_some()
            && !self.no_build.contains(&key))
        .then_some(&**meta)
    }

    /// Whether the target was never declared on this stream (its build goes with it).
    fn is_new(&self, meta: &TargetMeta) -> bool {
        !self.targets.contains_key(&(meta.pid, meta.start_ticks))
    }

    fn add(&mut self, item: &Item<'_>, ts: i64, batch: &mut v1::Batch) {
        match item {
            Item::Target(meta) => {
                self.declare_target(meta, batch);
            }
            Item::Metric(meta, name, value) => {
                let target_ref = self.declare_target(meta, batch);
                let series_ref = match self.series.get(&(target_ref, *name)) {
                    Some(r) => *r,
                    None => {
                        let r = self.next_series_ref;
                        self.next_series_ref = self.next_series_ref.wrapping_add(1);
                        self.series.insert((target_ref, name), r);
                        self.target_series.entry(target_ref).or_default().push(r);
                        batch.series.push(v1::SeriesDecl {
                            r#ref: r,
                            target_ref,
                            metric: (*name).to_owned(),
                            labels: Vec::new(),
                        });
                        r
                    }
                };
                batch.samples.push(v1::SeriesSamples {
                    series_ref,
                    timestamp_deltas: vec![ts],
                    values: vec![*value],
                });
            }
            Item::Stacks(meta, summary) => {
                let target_ref = self.declare_target(meta, batch);
                let mut summary = (*summary).clone();
                summary.target_ref = target_ref;
                batch.stacks.push(summary);
            }
            Item::Labeled(meta, id, value) => {
                let target_ref = self.declare_target(meta, batch);
                let key = (target_ref, (*id).clone());
                let series_ref = match self.labeled.get(&key) {
                    Some(r) => *r,
                    None => {
                        let r = self.next_series_ref;
                        self.next_series_ref = self.next_series_ref.wrapping_add(1);
                        self.labeled.insert(key, r);
                        self.target_series.entry(target_ref).or_default().push(r);
                        batch.series.push(v1::SeriesDecl {
                            r#ref: r,
                            target_ref,
                            metric: id.name.to_string(),
                            labels: id.wire_labels(),
                        });
                        r
                    }
                };
                batch.samples.push(v1::SeriesSamples {
                    series_ref,
                    timestamp_deltas: vec![ts],
                    values: vec![*value],
                });
            }
            Item::Gone(meta) => {
                let target_ref = self.declare_target(meta, batch);
                batch.gone_targets.push(target_ref);
                self.targets.remove(&(meta.pid, meta.start_ticks));
                self.no_build.remove(&(meta.pid, meta.start_ticks));
                if self.target_series.remove(&target_ref).is_some() {
                    self.series.retain(|(t, _), _| *t != target_ref);
                    self.labeled.retain(|(t, _), _| *t != target_ref);
                }
            }
        }
    }

    fn declare_target(&mut self, meta: &Arc<TargetMeta>, batch: &mut v1::Batch) -> u32 {
        if let Some(r) = self.target_ref(meta) {
            return r;
        }
        let key = (meta.pid, meta.start_ticks);
        let target_ref = match self.targets.get(&key) {
            Some((r, _)) => *r,
            None => {
                let r = self.next_target_ref;
                self.next_target_ref = self.next_target_ref.wrapping_add(1);
                r
            }
        };
        let new = self.is_new(meta);
        self.targets.insert(key, (target_ref, meta.clone()));
        batch.targets.push(self.upsert(target_ref, meta, new));
        target_ref
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Coverage, TargetSample};
    use crate::outbox::split_seq;

    fn meta(pid: u32, expvar: bool) -> Arc<TargetMeta> {
        Arc::new(TargetMeta {
            pid,
            start_ticks: 7,
            start_time_ms: 1,
            labels: vec![("service".into(), "billing".into())],
            coverage: Coverage {
                expvar,
                ..Coverage::default()
            },
            build: Some(Arc::new(v1::BuildInfo {
                go_version: "go1.26.8".into(),
                deps: vec![
                    v1::Module {
                        path: "golang.org/x/sys".into(),
                        version: "v0.30.0".into(),
                        ..Default::default()
                    };
                    3
                ],
                ..Default::default()
            })),
            runtime_env: vec![("GOGC".into(), "50".into())],
        })
    }

    fn scrape(ts: i64, metas: &[Arc<TargetMeta>]) -> Scrape {
        Scrape {
            timestamp_ms: ts,
            samples: metas
                .iter()
                .map(|m| TargetSample {
                    meta: m.clone(),
                    metrics: vec![("go_goroutines", 3.0), ("process_threads", 5.0)],
                    stacks: vec![v1::StackSummary {
                        timestamp_ms: ts,
                        source: "debug=1".into(),
                        total: 3,
                        groups: vec![v1::StackGroup {
                            frames: vec!["main.worker".into()],
                            count: 3,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    series: vec![],
                })
                .collect(),
            gone: vec![],
        }
    }

    fn whole(enc: &mut Encoder, number: u32, s: &Scrape) -> v1::Batch {
        let part = enc.encode_part(number, s, 0, 0);
        assert_eq!(part.end, None);
        part.batch
    }

    #[test]
    fn builds_go_with_a_targets_first_declaration_and_stacks_with_its_ref() {
        let m = meta(1, true);
        let mut enc = Encoder::new("node-a");
        let first = whole(&mut enc, 1, &scrape(1_000, std::slice::from_ref(&m)));
        assert_eq!(first.targets[0].build.as_ref().unwrap().deps.len(), 3);
        assert_eq!(first.stacks.len(), 1);
        assert_eq!(first.stacks[0].target_ref, first.targets[0].r#ref);
        // Declared again for a change of coverage: without the build.
        let mut changed = (*m).clone();
        changed.coverage.pprof = true;
        let second = whole(&mut enc, 2, &scrape(2_000, &[Arc::new(changed)]));
        assert_eq!(second.targets.len(), 1);
        assert!(second.targets[0].build.is_none());
        // A new stream declares it anew, build included.
        let mut enc = Encoder::new("node-a");
        let again = whole(&mut enc, 3, &scrape(3_000, &[m]));
        assert!(again.targets[0].build.is_some());
    }

    #[test]
    fn a_build_too_big_for_any_batch_is_left_out_not_the_target() {
        let mut big = (*meta(1, false)).clone();
        let mut build = (**big.build.as_ref().unwrap()).clone();
        build.deps = vec![
            v1::Module {
                path: "example.com/a-long-module-path".into(),
                version: "v1.2.3".into(),
                ..Default::default()
            };
            40
        ];
        big.build = Some(Arc::new(build));
        let s = scrape(1, &[Arc::new(big)]);
        let mut enc = Encoder::new("node-a");
        let part = enc.encode_part(1, &s, 0, 1024);
        assert_eq!(part.oversized, 0);
        assert!(part.batch.encoded_len() + BATCH_OVERHEAD <= 1024);
        assert_eq!(part.batch.targets.len(), 1);
        assert!(part.batch.targets[0].build.is_none());
    }

    #[test]
    fn a_stack_summary_too_big_for_any_batch_goes_with_its_largest_groups() {
        let mut s = scrape(1, &[meta(1, false)]);
        s.samples[0].stacks[0].groups = (0..40)
            .map(|i| v1::StackGroup {
                frames: vec![format!("example.com/pkg.function{i}"); 4],
                count: 100 - i,
                ..Default::default()
            })
            .collect();
        let mut enc = Encoder::new("node-a");
        let mut stacks = Vec::new();
        let mut from = 0;
        loop {
            let part = enc.encode_part(1, &s, from, 1024);
            assert_eq!(part.oversized, 0);
            assert!(part.batch.encoded_len() + BATCH_OVERHEAD <= 1024);
            stacks.extend(part.batch.stacks);
            match part.end {
                Some(e) => from = e,
                None => break,
            }
        }
        assert_eq!(stacks.len(), 1);
        let kept = &stacks[0].groups;
        assert!(!kept.is_empty() && kept.len() < 40);
        assert_eq!(kept[0].count, 100);
        let all: u64 = (0..40).map(|i| 100 - i).sum();
        let kept_count: u64 = kept.iter().map(|g| g.count).sum();
        assert_eq!(stacks[0].omitted, all - kept_count);
    }

    #[test]
    fn declares_targets_and_series_once_per_stream() {
        let a = meta(1, false);
        let mut enc = Encoder::new("node-a");
        let first = whole(&mut enc, 1, &scrape(1000, std::slice::from_ref(&a)));
        assert_eq!(first.targets.len(), 1);
        assert_eq!(first.targets[0].id.as_ref().unwrap().host, "node-a");
        assert_eq!(
            first.targets[0].runtime_env,
            [v1::Label {
                name: "GOGC".into(),
                value: "50".into()
            }]
        );
        assert_eq!(first.series.len(), 2);
        assert_eq!(first.samples.len(), 2);
        assert_eq!(first.samples[0].timestamp_deltas, vec![1000]);
        assert_eq!(split_seq(first.seq), (1, COMPLETE));

        let second = whole(&mut enc, 2, &scrape(2000, std::slice::from_ref(&a)));
        assert!(second.targets.is_empty() && second.series.is_empty());
        assert_eq!(second.samples.len(), 2);

        // Changed coverage: the same ref is declared again, its series are not.
        let a2 = meta(1, true);
        let third = whole(&mut enc, 3, &scrape(3000, std::slice::from_ref(&a2)));
        assert_eq!(third.targets.len(), 1);
        assert_eq!(third.targets[0].r#ref, first.targets[0].r#ref);
        assert!(third.series.is_empty());

        // A new stream (a new encoder) declares everything again.
        let mut fresh = Encoder::new("node-a");
        let again = whole(&mut fresh, 3, &scrape(3000, &[a2]));
        assert_eq!((again.targets.len(), again.series.len()), (1, 2));
    }

    #[test]
    fn gone_targets_are_declared_if_needed_and_forgotten() {
        let a = meta(1, false);
        let mut enc = Encoder::new("node-a");
        let gone = Scrape {
            timestamp_ms: 1,
            samples: vec![],
            gone: vec![a.clone()],
        };
        let batch = whole(&mut enc, 1, &gone);
        assert_eq!(batch.targets.len(), 1);
        assert_eq!(batch.gone_targets, vec![batch.targets[0].r#ref]);
        assert!(enc.targets.is_empty() && enc.series.is_empty());
    }

    /// Parts never exceed the limit, cover every item once, and a new stream that
    /// resumes from an acknowledged part declares what the rest needs.
    #[test]
    fn a_scrape_splits_into_parts_within_the_limit() {
        let metas: Vec<_> = (1..=20).map(|p| meta(p, true)).collect();
        let s = scrape(5000, &metas);
        let total = Encoder::item_count(&s) as u32;
        for limit in [200usize, 333, 1024, 4096] {
            let mut enc = Encoder::new("node-a");
            let mut from = 0;
            let mut samples = 0;
            let mut parts = 0;
            loop {
                let part = enc.encode_part(9, &s, from, limit);
                assert!(
                    part.batch.encoded_len() + BATCH_OVERHEAD <= limit,
                    "limit {limit}"
                );
                assert_eq!(part.oversized, 0);
                samples += part.batch.samples.len();
                parts += 1;
                let (number, end) = split_seq(part.batch.seq);
                assert_eq!(number, 9);
                match part.end {
                    Some(e) => {
                        assert!(e > from && e < total);
                        assert_eq!(end, e);
                        from = e;
                        // Every other part starts on a new stream.
                        if parts % 2 == 0 {
                            enc = Encoder::new("node-a");
                        }
                    }
                    None => {
                        assert_eq!(end, COMPLETE);
                        break;
                    }
                }
            }
            assert_eq!(samples, 40, "limit {limit}");
            assert!(limit >= 4096 || parts > 1);
        }
    }

    #[test]
    fn computed_lengths_are_those_of_the_messages() {
        for ts in [0, 1, -1, 1_800_000_000_000, i64::MIN, i64::MAX] {
            let m = v1::SeriesSamples {
                series_ref: u32::MAX,
                timestamp_deltas: vec![ts],
                values: vec![f64::NAN],
            };
            assert_eq!(series_samples_len(ts), m.encoded_len(), "{ts}");
        }
        for name in ["g", "go_goroutines", &"x".repeat(300)] {
            let d = v1::SeriesDecl {
                r#ref: u32::MAX,
                target_ref: u32::MAX,
                metric: name.to_owned(),
                labels: Vec::new(),
            };
            assert_eq!(
                series_decl_len(name, 0),
                field_len(d.encoded_len()),
                "{name}"
            );
        }
        let long = "v".repeat(1024);
        for labels in [
            vec![("le", "+Inf")],
            vec![("quantile", "0.99"), ("route", "/api")],
            vec![("a", ""), ("", "b"), ("", "")],
            vec![("path", long.as_str()), ("x", "é\n\"")],
            (0..64).map(|_| ("k", "v")).collect(),
        ] {
            let id = series_id("go_gc_duration_seconds", &labels);
            let d = v1::SeriesDecl {
                r#ref: u32::MAX,
                target_ref: u32::MAX,
                metric: id.name.to_string(),
                labels: labels
                    .iter()
                    .map(|(k, v)| v1::Label {
                        name: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
            };
            assert_eq!(
                series_decl_len(&id.name, id.labels_encoded_len()),
                field_len(d.encoded_len()),
                "{labels:?}"
            );
        }
    }

    #[test]
    fn an_item_larger_than_any_batch_is_left_out_and_counted() {
        let mut big = (*meta(1, false)).clone();
        big.labels.push(("note".into(), "x".repeat(900)));
        let s = scrape(1, &[Arc::new(big), meta(2, false)]);
        let mut enc = Encoder::new("node-a");
        let part = enc.encode_part(1, &s, 0, 512);
        // The big target, its two metrics and its stack summary cannot go; the other
        // target can.
        assert_eq!(part.oversized, 4);
        assert_eq!(part.batch.targets.len(), 1);
        assert_eq!(part.batch.targets[0].id.as_ref().unwrap().pid, 2);
    }

    fn series_id(name: &str, labels: &[(&str, &str)]) -> Arc<SeriesId> {
        Arc::new(SeriesId::new(
            name.into(),
            labels
                .iter()
                .map(|(k, v)| (Arc::from(*k), Arc::from(*v)))
                .collect(),
        ))
    }

    /// A scrape whose targets each have, beside two plain metrics, the buckets of a
    /// histogram with a label of its own.
    fn labeled_scrape(ts: i64, metas: &[Arc<TargetMeta>]) -> Scrape {
        let mut s = scrape(ts, metas);
        for sample in &mut s.samples {
            sample.series = ["0.005", "0.05", "0.5", "5", "+Inf"]
                .iter()
                .enumerate()
                .map(|(i, le)| {
                    (
                        series_id(
                            "app_request_duration_seconds_bucket",
                            &[("le", le), ("route", "/api/v1/orders")],
                        ),
                        i as f64,
                    )
                })
                .collect();
        }
        s
    }

    #[test]
    fn labeled_series_are_declared_once_with_their_labels() {
        let a = meta(1, false);
        let mut enc = Encoder::new("node-a");
        let s = labeled_scrape(1000, std::slice::from_ref(&a));
        let first = whole(&mut enc, 1, &s);
        assert_eq!(first.series.len(), 7);
        assert_eq!(first.samples.len(), 7);
        let bucket = &first.series[2];
        assert_eq!(bucket.metric, "app_request_duration_seconds_bucket");
        assert_eq!(
            bucket.labels,
            vec![
                v1::Label {
                    name: "le".into(),
                    value: "0.005".into()
                },
                v1::Label {
                    name: "route".into(),
                    value: "/api/v1/orders".into()
                },
            ]
        );
        // Equal series from a new interning (other Arcs) are the same series.
        let again = labeled_scrape(2000, std::slice::from_ref(&a));
        let second = whole(&mut enc, 2, &again);
        assert!(second.series.is_empty());
        assert_eq!(second.samples.len(), 7);
        let refs = |b: &v1::Batch| b.samples.iter().map(|x| x.series_ref).collect::<Vec<_>>();
        assert_eq!(refs(&first), refs(&second));

        // Gone: its labeled series are forgotten with it.
        let gone = Scrape {
            timestamp_ms: 3000,
            samples: vec![],
            gone: vec![a],
        };
        whole(&mut enc, 3, &gone);
        assert!(enc.labeled.is_empty() && enc.series.is_empty());
    }

    /// The size accounting holds with labels: parts never exceed the limit and carry
    /// every sample once.
    #[test]
    fn a_scrape_with_labeled_series_splits_within_the_limit() {
        // Without builds: a stream carries a build once per target, and the outbox's
        // estimate leaves it out.
        let metas: Vec<_> = (1..=12)
            .map(|p| {
                let mut m = (*meta(p, true)).clone();
                m.build = None;
                Arc::new(m)
            })
            .collect();
        let s = labeled_scrape(5000, &metas);
        for limit in [256usize, 300, 777, 2048, 1 << 20] {
            let mut enc = Encoder::new("node-a");
            let mut from = 0;
            let mut samples = 0;
            loop {
                let part = enc.encode_part(4, &s, from, limit);
                assert!(
                    part.batch.encoded_len() + BATCH_OVERHEAD <= limit,
                    "limit {limit}: {}",
                    part.batch.encoded_len()
                );
                assert_eq!(part.oversized, 0);
                samples += part.batch.samples.len();
                match part.end {
                    Some(e) => from = e,
                    None => break,
                }
            }
            assert_eq!(samples, 12 * 7, "limit {limit}");
        }
        // The outbox's estimate is at least what the scrape takes with everything
        // declared.
        let mut enc = Encoder::new("node-a");
        let all = enc.encode_part(1, &s, 0, 0).batch.encoded_len();
        assert!(
            s.estimated_bytes() >= all,
            "{} < {all}",
            s.estimated_bytes()
        );
        assert!(
            s.estimated_bytes() < all * 2,
            "{} vs {all}",
            s.estimated_bytes()
        );
    }
}
