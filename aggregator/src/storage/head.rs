//! The head: samples not yet compacted into chunks.
//!
//! Each writer shard has its own part of the head, in memory, and its own records in
//! the `headlog` family (one per group commit, written before the commit's batches are
//! acknowledged). A flush freezes a shard's part (new samples go to a fresh one),
//! writes the frozen samples as chunks, deletes the shard's headlog records up to the
//! frozen point in the same write, then drops them from memory. Readers see the active
//! and the frozen samples until that write is done, and the chunks from then on: a
//! sample is never out of sight, and one read twice is merged away by its timestamp.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Points of one series, in time order, one per timestamp.
pub(super) type Points = Vec<(i64, f64)>;

/// Memory a point takes in the head, for the budget.
const POINT_BYTES: usize = 16;
/// Memory a series takes in the head beyond its points.
const SERIES_BYTES: usize = 64;

#[derive(Default)]
struct Part {
    active: HashMap<u64, Points>,
    frozen: Option<Arc<HashMap<u64, Points>>>,
    /// The last group commit applied.
    applied: u64,
    bytes: usize,
    frozen_bytes: usize,
    /// Points in `active` and in `frozen`.
    points: usize,
    frozen_points: usize,
    /// The oldest timestamp in `active` (i64::MAX when empty).
    oldest: i64,
}

/// What a flush takes from a shard.
pub(super) struct Frozen {
    pub series: Arc<HashMap<u64, Points>>,
    /// Headlog records up to this commit are in `series`.
    pub through: u64,
}

pub(super) struct Head {
    parts: Vec<Mutex<Part>>,
}

impl Head {
    pub fn new(shards: usize) -> Head {
        Head {
            parts: (0..shards.max(1))
                .map(|_| {
                    Mutex::new(Part {
                        oldest: i64::MAX,
                        ..Part::default()
                    })
                })
                .collect(),
        }
    }

    fn part(&self, shard: usize) -> MutexGuard<'_, Part> {
        // Every operation leaves a part consistent (single inserts and swaps).
        self.parts[shard % self.parts.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn shards(&self) -> usize {
        self.parts.len()
    }

    /// Adds the samples of group commit `commit` of `shard`.
    pub fn append<'a>(
        &self,
        shard: usize,
        commit: u64,
        samples: impl Iterator<Item = (u64, &'a [(i64, f64)])>,
    ) {
        let mut part = self.part(shard);
        let part = &mut *part;
        for (id, points) in samples {
            if points.is_empty() {
                continue;
            }
            let series = part.active.entry(id).or_insert_with(|| {
                part.bytes += SERIES_BYTES;
                Vec::new()
            });
            for &(ts, v) in points {
                if insert(series, ts, v) {
                    part.bytes += POINT_BYTES;
                    part.points += 1;
                }
                part.oldest = part.oldest.min(ts);
            }
        }
        part.applied = part.applied.max(commit);
    }

    /// The last commit applied to `shard`.
    #[cfg(test)]
    pub fn applied(&self, shard: usize) -> u64 {
        self.part(shard).applied
    }

    /// The points of series `id` in `[start, end]`, from every shard, active and frozen.
    pub fn read(&self, id: u64, start: i64, end: i64) -> Points {
        let mut out = Points::new();
        for shard in 0..self.parts.len() {
            let part = self.part(shard);
            let frozen = part.frozen.as_ref().and_then(|f| f.get(&id));
            for points in frozen.into_iter().chain(part.active.get(&id)) {
                let from = points.partition_point(|p| p.0 < start);
                let to = points.partition_point(|p| p.0 <= end);
                out.extend_from_slice(&points[from..to.max(from)]);
            }
        }
        out.sort_by_key(|p| p.0);
        out.dedup_by_key(|p| p.0);
        out
    }

    /// Memory the head holds, estimated.
    pub fn bytes(&self) -> usize {
        (0..self.parts.len())
            .map(|s| {
                let p = self.part(s);
                p.bytes + p.frozen_bytes
            })
            .sum()
    }

    /// Points the head holds.
    pub fn points(&self) -> usize {
        (0..self.parts.len())
            .map(|s| {
                let p = self.part(s);
                p.points + p.frozen_points
            })
            .sum()
    }

    /// (oldest timestamp, bytes) of a shard's active samples.
    pub fn state(&self, shard: usize) -> (i64, usize) {
        let p = self.part(shard);
        (p.oldest, p.bytes)
    }

    /// Freezes a shard's samples for a flush; none if it holds none or a flush of it is
    /// under way.
    pub fn freeze(&self, shard: usize) -> Option<Frozen> {
        let mut part = self.part(shard);
        if part.frozen.is_some() || part.active.is_empty() {
            return None;
        }
        let series = Arc::new(std::mem::take(&mut part.active));
        part.frozen = Some(series.clone());
        part.frozen_bytes = std::mem::take(&mut part.bytes);
        part.frozen_points = std::mem::take(&mut part.points);
        part.oldest = i64::MAX;
        Some(Frozen {
            series,
            through: part.applied,
        })
    }

    /// Ends a flush: the frozen samples are in chunks, except `carried`, which go back
    /// to the active samples (they were written to the headlog again).
    pub fn thaw(&self, shard: usize, carried: HashMap<u64, Points>) {
        let mut part = self.part(shard);
        let part = &mut *part;
        part.frozen = None;
        part.frozen_bytes = 0;
        part.frozen_points = 0;
        for (id, points) in carried {
            let series = part.active.entry(id).or_insert_with(|| {
                part.bytes += SERIES_BYTES;
                Vec::new()
            });
            for (ts, v) in points {
                // A newer sample of the same time (written meanwhile) wins.
                if series.binary_search_by_key(&ts, |p| p.0).is_err() {
                    insert(series, ts, v);
                    part.bytes += POINT_BYTES;
                    part.points += 1;
                }
                part.oldest = part.oldest.min(ts);
            }
        }
    }

    /// Drops forgotten series.
    pub fn forget(&self, ids: &HashSet<u64>) {
        for shard in 0..self.parts.len() {
            let mut part = self.part(shard);
            let before = part.active.len();
            part.active.retain(|id, _| !ids.contains(id));
            let removed = before - part.active.len();
            if removed > 0 {
                part.points = part.active.values().map(Vec::len).sum();
                part.bytes = part.active.len() * SERIES_BYTES + part.points * POINT_BYTES;
            }
        }
    }
}

/// Inserts a point in time order; a point of the same time replaces the old value.
/// Returns whether the series grew.
fn insert(series: &mut Points, ts: i64, v: f64) -> bool {
    match series.last() {
        Some(&(last, _)) if last < ts => {
            series.push((ts, v));
            true
        }
        None => {
            series.push((ts, v));
            true
        }
        _ => match series.binary_search_by_key(&ts, |p| p.0) {
            Ok(i) => {
                series[i].1 = v;
                false
            }
            Err(i) => {
                series.insert(i, (ts, v));
                true
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_stay_in_time_order_and_a_repeat_replaces() {
        let head = Head::new(2);
        head.append(0, 1, [(7u64, &[(10, 1.0), (30, 3.0)][..])].into_iter());
        head.append(0, 2, [(7u64, &[(20, 2.0), (30, 4.0)][..])].into_iter());
        assert_eq!(
            head.read(7, i64::MIN, i64::MAX),
            vec![(10, 1.0), (20, 2.0), (30, 4.0)]
        );
        assert_eq!(head.read(7, 15, 25), vec![(20, 2.0)]);
        assert_eq!(head.read(8, i64::MIN, i64::MAX), vec![]);
        assert_eq!(head.applied(0), 2);
        assert_eq!(head.state(0).0, 10);
    }

    #[test]
    fn frozen_samples_stay_readable_until_thawed_and_carried_ones_come_back() {
        let head = Head::new(1);
        head.append(0, 1, [(1u64, &[(10, 1.0), (20, 2.0)][..])].into_iter());
        let frozen = head.freeze(0).unwrap();
        assert_eq!(frozen.through, 1);
        assert!(head.freeze(0).is_none(), "one flush at a time");
        head.append(0, 2, [(1u64, &[(30, 3.0)][..])].into_iter());
        assert_eq!(head.read(1, 0, 100).len(), 3);
        head.thaw(0, HashMap::from([(1, vec![(20, 2.0)])]));
        assert_eq!(head.read(1, 0, 100), vec![(20, 2.0), (30, 3.0)]);
        assert_eq!(head.state(0).0, 20);
    }
}
