//! PromQL over the storage: the engine (`goroscope_promql`) reads series through
//! [`StorageSource`], which picks them with the postings and reads the head, the chunks
//! and, for long ranges, the rollups.
//!
//! Both the gRPC `Evaluate` call (what `goroscope query EXPR` uses) and the Prometheus
//! HTTP API run queries through [`evaluate`], off the async threads, bounded by the
//! query limits and cancelled when the caller gives up.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use goroscope_promql::{
    Error, Labels, Limits, Matcher, QueryOptions, QueryValue, RollupSeries, Series, Source,
    SourceError,
};

use crate::storage::{Cancel, ROLLUP_RESOLUTIONS, Storage, StorageError};

/// The storage as the engine's source of series.
pub struct StorageSource<'a> {
    pub storage: &'a Storage,
    pub cancel: &'a Cancel,
}

fn source_error(e: StorageError) -> SourceError {
    SourceError(e.to_string())
}

impl Source for StorageSource<'_> {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, SourceError> {
        Ok(self
            .storage
            .select(matchers, start_ms, end_ms, self.cancel)
            .map_err(source_error)?
            .into_iter()
            .map(|s| Series {
                labels: Labels(s.labels),
                samples: s.points,
            })
            .collect())
    }

    fn select_rollup(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution_ms: i64,
    ) -> Result<Option<Vec<RollupSeries>>, SourceError> {
        if !ROLLUP_RESOLUTIONS.contains(&resolution_ms) {
            return Ok(None);
        }
        // Buckets whose interval lies within (start, end]: their ends are in
        // (start, end].
        let start_ms = start_ms.saturating_add(1);
        if !self
            .storage
            .rollups_pay(matchers, resolution_ms, start_ms, end_ms, self.cancel)
            .map_err(source_error)?
        {
            return Ok(None);
        }
        let rows = self
            .storage
            .select_rollups(matchers, resolution_ms, start_ms, end_ms, self.cancel)
            .map_err(source_error)?;
        Ok(Some(
            rows.into_iter()
                .map(|s| RollupSeries {
                    labels: Labels(s.labels),
                    buckets: s.rollups,
                })
                .collect(),
        ))
    }
}

/// The engine's bounds for a query on this storage: it loads at most as many samples
/// as one storage read may return.
pub fn limits(storage: &Storage) -> Limits {
    Limits {
        max_samples: storage.max_query_samples(),
        ..Limits::default()
    }
}

/// What to evaluate: at one time, or over a range at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Instant(i64),
    Range {
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    },
}

/// Evaluates a PromQL expression. Blocking: call it off the async threads. The storage's
/// cancel flag and the engine's are the same: whoever gives up stops both.
pub fn evaluate(
    storage: &Storage,
    cancel: &Cancel,
    query: &str,
    when: When,
    limits: Limits,
) -> Result<QueryValue, Error> {
    let flag: Arc<AtomicBool> = cancel.flag();
    let options = QueryOptions {
        limits,
        cancel: Some(flag),
    };
    let source = StorageSource { storage, cancel };
    match when {
        When::Instant(t) => goroscope_promql::instant_query(&source, query, t, &options),
        When::Range {
            start_ms,
            end_ms,
            step_ms,
        } => goroscope_promql::range_query(&source, query, start_ms, end_ms, step_ms, &options),
    }
}
