//! Reads: range queries over the `head` family and paged target listings.
//!
//! The index lock is held only to pick what to read (series ids, record handles, a
//! page of latest values); scans and copies happen outside it. Long scans poll a
//! [`Cancel`] flag, so a query whose caller gave up (its deadline passed, the client
//! went away) stops instead of running to the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::rocks::CF_HEAD;
use super::{
    Selector, SeriesData, Storage, StorageError, TargetKey, TargetRecord, TargetView, corrupt, keys,
};

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

/// Samples scanned between two looks at the cancel flag.
const CANCEL_EVERY: usize = 4096;

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
        let mut picked: Vec<(Arc<TargetRecord>, i64, Vec<(u64, String)>)> = Vec::new();
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
                .map(|(metric, id)| (*id, metric.clone()))
                .collect();
            picked.push((entry.record.clone(), entry.last_seen_ms, series));
        }
        let latest: Vec<Vec<(String, i64, f64)>> = picked
            .iter_mut()
            .map(|(_, _, series)| {
                std::mem::take(series)
                    .into_iter()
                    .filter_map(|(id, metric)| {
                        index.latest.get(&id).map(|&(ts, v)| (metric, ts, v))
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
        let wanted: Vec<(u64, Arc<TargetRecord>)> = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            index
                .targets
                .values()
                .filter(|e| selector.matches(&e.record))
                .filter_map(|e| Some((*e.series.get(metric)?, e.record.clone())))
                .collect()
        };
        let mut total = 0usize;
        let mut out = Vec::with_capacity(wanted.len());
        for (id, target) in wanted {
            if cancel.is_cancelled() {
                return Err(StorageError::Cancelled);
            }
            let mut points = Vec::new();
            let from = keys::head_key(id, start_ms);
            let to = match end_ms.checked_add(1) {
                Some(end) => keys::head_key(id, end),
                None => keys::head_key(id.saturating_add(1), i64::MIN),
            };
            self.engine.scan_range(CF_HEAD, &from, &to, |key, value| {
                let (_, ts) = keys::split_head_key(key).ok_or_else(|| corrupt(CF_HEAD, "key"))?;
                let v = keys::decode_head_value(value).ok_or_else(|| corrupt(CF_HEAD, "value"))?;
                total += 1;
                if total > self.options.max_query_samples {
                    return Err(StorageError::TooManySamples {
                        limit: self.options.max_query_samples,
                    });
                }
                if total % CANCEL_EVERY == 0 && cancel.is_cancelled() {
                    return Err(StorageError::Cancelled);
                }
                points.push((ts, v));
                Ok(())
            })?;
            out.push(SeriesData {
                target,
                metric: metric.to_owned(),
                points,
            });
        }
        Ok(out)
    }
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
