//! A PromQL engine over a storage trait, with Prometheus 3 semantics for the subset it
//! evaluates and a refusal naming anything else.
//!
//! - `source`: label sets, matchers, series, rollup buckets, the [`Source`] trait.
//! - `eval`: [`instant_query`] and [`range_query`], bounded by [`Limits`] and a cancel flag.
//! - `functions`: the numeric kernels, step for step as Prometheus computes them.
//! - `api`: the Prometheus HTTP API's JSON and parameter parsing.
#![forbid(unsafe_code)]

pub mod api;
mod error;
mod eval;
mod functions;
pub mod source;

pub use error::Error;
pub use eval::{
    Limits, MAX_STEPS, QueryOptions, QueryValue, Sample, instant_query, parse_selector, range_query,
};
pub use source::{
    Labels, MatchOp, Matcher, MemorySource, RollupBucket, RollupSeries, STALE_NAN_BITS, Series,
    Source, SourceError, is_stale_nan,
};
