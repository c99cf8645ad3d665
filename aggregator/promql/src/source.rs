//! The data the evaluator reads: label sets, matchers, series, rollup buckets, and the
//! [`Source`] trait that storage implements. [`MemorySource`] holds series in memory.

use std::fmt;

use regex::Regex;

/// The metric name label.
pub const METRIC_NAME: &str = "__name__";

/// The value Prometheus writes when a series ends (a NaN with this exact bit pattern).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is the staleness marker (other NaNs are ordinary values).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A label set, sorted by name; includes `__name__` when the series has one.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(pub Vec<(String, String)>);

impl Labels {
    /// Builds a label set from pairs in any order; empty values are dropped, as in Prometheus.
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        v.sort();
        v.dedup_by(|a, b| a.0 == b.0);
        Labels(v)
    }

    /// The value of `name`, or "" when absent (Prometheus treats both the same).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .map(|i| self.0[i].1.as_str())
            .unwrap_or("")
    }

    /// The same set without `__name__`.
    pub fn without_name(&self) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| k != METRIC_NAME)
                .cloned()
                .collect(),
        )
    }

    pub(crate) fn only(&self, names: &[String]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| names.contains(k))
                .cloned()
                .collect(),
        )
    }

    pub(crate) fn without(&self, names: &[String]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|(k, _)| !names.contains(k))
                .cloned()
                .collect(),
        )
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// How a [`Matcher`] compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One label matcher of a selector. An absent label matches as the empty string.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// The compiled, fully anchored regex for `Regex` and `NotRegex`.
    regex: Option<Regex>,
}

impl Matcher {
    /// Builds a matcher; a regex is anchored at both ends and `.` matches a newline, as in
    /// Prometheus.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        let regex = match op {
            // The regex crate bounds what one compiled expression may take (10 MiB by
            // default): a selector cannot make the engine build a huge automaton.
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?s:{value})$"))
                    .map_err(|e| format!("invalid regex {value:?} for label {name:?}: {e}"))?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// A `name="value"` matcher (it cannot fail).
    pub fn equal(name: &str, value: &str) -> Matcher {
        Matcher {
            name: name.to_string(),
            op: MatchOp::Equal,
            value: value.to_string(),
            regex: None,
        }
    }

    /// Whether a label value (`""` when the label is absent) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            // `new` always compiles a regex for the regex ops.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether every matcher accepts the label set.
    pub fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
        matchers.iter().all(|m| m.matches(labels.get(&m.name)))
    }
}

/// A series with its raw samples: `(timestamp ms, value)`, sorted by time, no duplicate
/// timestamps. Staleness markers are included as they were stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// One pre-aggregated bucket, covering `(end_ms - resolution, end_ms]`.
///
/// `min`, `max`, `sum` and `count` cover the bucket's samples other than staleness markers
/// (NaN handled as Prometheus' `min_over_time`: a NaN is replaced by any number); `last` and
/// `last_ms` are the bucket's last sample, a staleness marker included. A bucket with no
/// sample at all is left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollupBucket {
    pub end_ms: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    pub last: f64,
    pub last_ms: i64,
}

/// A series' buckets at one resolution, sorted by `end_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupSeries {
    pub labels: Labels,
    pub buckets: Vec<RollupBucket>,
}

/// A storage failure, passed through as an execution error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The evaluator's view of storage.
pub trait Source: Send + Sync {
    /// Every series matching all matchers, with its samples in `[start_ms, end_ms]` (both
    /// inclusive). Series without a sample in the range may be left out.
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, SourceError>;

    /// The buckets at `resolution_ms` (60_000 or 3_600_000) of every matching series whose
    /// interval lies within `(start_ms, end_ms]` (both multiples of the resolution), if the
    /// source keeps them for the whole range; `None` means "use `select`".
    fn select_rollup(
        &self,
        _matchers: &[Matcher],
        _start_ms: i64,
        _end_ms: i64,
        _resolution_ms: i64,
    ) -> Result<Option<Vec<RollupSeries>>, SourceError> {
        Ok(None)
    }
}

/// Series held in memory; with `rollups` set it also answers `select_rollup` by bucketing
/// its samples, which is how the two read paths are compared.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    pub series: Vec<Series>,
    pub rollups: bool,
}

impl MemorySource {
    pub fn new(series: Vec<Series>) -> Self {
        MemorySource {
            series,
            rollups: false,
        }
    }
}

/// Folds one value into a running minimum the way `min_over_time` does.
pub(crate) fn fold_min(acc: f64, v: f64) -> f64 {
    if v < acc || acc.is_nan() { v } else { acc }
}

/// Folds one value into a running maximum the way `max_over_time` does.
pub(crate) fn fold_max(acc: f64, v: f64) -> f64 {
    if v > acc || acc.is_nan() { v } else { acc }
}

/// Buckets samples at `res`, for sources that keep raw samples only.
pub fn rollup_samples(samples: &[(i64, f64)], res: i64) -> Vec<RollupBucket> {
    let mut out: Vec<RollupBucket> = Vec::new();
    for &(t, v) in samples {
        // Bucket k covers (k*res, (k+1)*res]: its end is the smallest multiple of res >= t.
        let end = t.div_euclid(res) * res + if t.rem_euclid(res) == 0 { 0 } else { res };
        let stale = is_stale_nan(v);
        match out.last_mut() {
            Some(b) if b.end_ms == end => {
                if !stale {
                    if b.count == 0 {
                        (b.min, b.max, b.sum) = (v, v, v);
                    } else {
                        b.min = fold_min(b.min, v);
                        b.max = fold_max(b.max, v);
                        b.sum += v;
                    }
                    b.count += 1;
                }
                b.last = v;
                b.last_ms = t;
            }
            _ => out.push(RollupBucket {
                end_ms: end,
                min: if stale { 0.0 } else { v },
                max: if stale { 0.0 } else { v },
                sum: if stale { 0.0 } else { v },
                count: u64::from(!stale),
                last: v,
                last_ms: t,
            }),
        }
    }
    out
}

impl Source for MemorySource {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, SourceError> {
        Ok(self
            .series
            .iter()
            .filter(|s| Matcher::matches_all(matchers, &s.labels))
            .map(|s| Series {
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .filter(|(t, _)| *t >= start_ms && *t <= end_ms)
                    .copied()
                    .collect(),
            })
            .filter(|s| !s.samples.is_empty())
            .collect())
    }

    fn select_rollup(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution_ms: i64,
    ) -> Result<Option<Vec<RollupSeries>>, SourceError> {
        if !self.rollups {
            return Ok(None);
        }
        Ok(Some(
            self.series
                .iter()
                .filter(|s| Matcher::matches_all(matchers, &s.labels))
                .map(|s| {
                    let inside: Vec<(i64, f64)> = s
                        .samples
                        .iter()
                        .filter(|(t, _)| *t > start_ms && *t <= end_ms)
                        .copied()
                        .collect();
                    RollupSeries {
                        labels: s.labels.clone(),
                        buckets: rollup_samples(&inside, resolution_ms),
                    }
                })
                .filter(|s| !s.buckets.is_empty())
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(op: MatchOp, v: &str) -> Matcher {
        Matcher::new("job", op, v).unwrap()
    }

    #[test]
    fn regex_matchers_are_fully_anchored() {
        assert!(m(MatchOp::Regex, "api").matches("api"));
        assert!(!m(MatchOp::Regex, "api").matches("api-2"));
        assert!(!m(MatchOp::Regex, "api").matches("my-api"));
        assert!(m(MatchOp::Regex, "api|web").matches("web"));
        assert!(!m(MatchOp::Regex, "api|web").matches("webx"));
        assert!(m(MatchOp::NotRegex, "api.*").matches("web"));
        assert!(!m(MatchOp::NotRegex, "api.*").matches("api-1"));
        // An absent label is the empty string.
        assert!(m(MatchOp::Regex, ".*").matches(""));
        assert!(!m(MatchOp::Regex, ".+").matches(""));
        // `.` matches a newline, as in Prometheus.
        assert!(m(MatchOp::Regex, "a.b").matches("a\nb"));
    }

    #[test]
    fn invalid_regex_is_an_error_naming_it() {
        let err = Matcher::new("job", MatchOp::Regex, "(").unwrap_err();
        assert!(err.contains("invalid regex \"(\""), "{err}");
    }

    #[test]
    fn equality_matchers_treat_absent_as_empty() {
        let l = Labels::new([("__name__", "up"), ("job", "api")]);
        assert!(Matcher::matches_all(
            &[Matcher::new("zone", MatchOp::Equal, "").unwrap()],
            &l
        ));
        assert!(!Matcher::matches_all(
            &[Matcher::new("zone", MatchOp::NotEqual, "").unwrap()],
            &l
        ));
        assert!(Matcher::matches_all(
            &[Matcher::new("job", MatchOp::NotEqual, "web").unwrap()],
            &l
        ));
    }

    #[test]
    fn rollup_buckets_are_left_open() {
        let b = rollup_samples(
            &[(0, 1.0), (1, 2.0), (60_000, 3.0), (60_001, f64::NAN)],
            60_000,
        );
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].end_ms, b[0].count, b[0].sum), (0, 1, 1.0));
        assert_eq!(
            (b[1].end_ms, b[1].count, b[1].sum, b[1].last),
            (60_000, 2, 5.0, 3.0)
        );
        assert_eq!(b[2].end_ms, 120_000);
        assert!(b[2].min.is_nan());
        let stale = f64::from_bits(STALE_NAN_BITS);
        let b = rollup_samples(&[(1, 4.0), (2, stale)], 60_000);
        assert_eq!((b[0].count, b[0].sum, b[0].last_ms), (1, 4.0, 2));
        assert!(is_stale_nan(b[0].last));
    }
}
