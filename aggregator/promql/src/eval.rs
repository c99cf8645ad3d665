//! The evaluator: plans one read per selector for the whole query (raw samples, or rollup
//! buckets where they give the same answer), then evaluates the expression at each step.
//!
//! Evaluated, with Prometheus 3 semantics: selectors with `=`, `!=`, `=~`, `!~` and
//! `offset`; range functions `rate`, `irate`, `increase`, `delta`, `idelta`, `deriv`,
//! `predict_linear`, `resets`, `changes` and `{avg,min,max,sum,count,last,quantile,stddev,
//! stdvar,present}_over_time`; `histogram_quantile` (classic buckets), `abs`, `ceil`,
//! `floor`, `exp`, `sqrt`, `ln`, `log2`, `log10`, `clamp`, `clamp_min`, `clamp_max`,
//! `time`, `vector`, `scalar`, `timestamp`; `sum`, `avg`, `min`, `max`, `count`, `group`,
//! `stddev`, `stdvar`, `topk`, `bottomk`, `quantile` with `by`/`without`; arithmetic,
//! comparisons (with `bool`), `and`/`or`/`unless` with `on`/`ignoring` one-to-one matching.
//! Refused by name: every other function and aggregation, `group_left`/`group_right`,
//! `fill`, subqueries, `@`, `or` inside a selector. Samples are floats (no native histograms).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, MatrixSelector, Offset,
    VectorMatchCardinality, VectorSelector,
};

use crate::error::Error;
use crate::functions as f;
use crate::source::{
    Labels, METRIC_NAME, MatchOp, Matcher, RollupBucket, Series, Source, is_stale_nan,
};

/// Bounds on one query's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Points loaded from the source (samples or buckets) plus points in the result.
    pub max_samples: usize,
    /// Series loaded from the source, and series in the result.
    pub max_series: usize,
    /// How far back an instant selector looks for a sample, in milliseconds.
    pub lookback_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_samples: 50_000_000,
            max_series: 500_000,
            lookback_ms: 5 * 60 * 1000,
        }
    }
}

/// Limits plus a flag the caller sets to stop the query; it is polled at every step and
/// every series.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    pub limits: Limits,
    pub cancel: Option<Arc<AtomicBool>>,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub t_ms: i64,
    pub value: f64,
}

/// A query result, shaped as in the Prometheus HTTP API.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    Scalar {
        t_ms: i64,
        value: f64,
    },
    String {
        t_ms: i64,
        value: String,
    },
    /// Sorted by labels.
    Vector(Vec<Sample>),
    /// Sorted by labels; each series' samples sorted by time.
    Matrix(Vec<Series>),
}

/// The largest number of steps a range query may have, as in Prometheus.
pub const MAX_STEPS: i64 = 11_000;

/// The rollup resolutions a source may keep, coarsest first.
const RESOLUTIONS: [i64; 2] = [3_600_000, 60_000];

/// The longest query text accepted.
pub const MAX_QUERY_BYTES: usize = 1 << 20;
/// The longest query text outside string literals: it bounds how deep the parsed tree can
/// be, and so the stack that parsing and dropping it need.
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;
/// The deepest expression evaluated (the evaluator recurses once per level).
pub const MAX_DEPTH: usize = 128;

/// Parses a query within the size and depth bounds.
fn parse_query(query: &str) -> Result<Expr, Error> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(Error::bad_param(
            "query",
            format!(
                "{} bytes, more than the limit of {MAX_QUERY_BYTES}",
                query.len()
            ),
        ));
    }
    let mut outside = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in query.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q != '`' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if matches!(c, '"' | '\'' | '`') {
                    quote = Some(c);
                }
                outside += c.len_utf8();
            }
        }
    }
    if outside > MAX_EXPRESSION_BYTES {
        return Err(Error::bad_param(
            "query",
            format!(
                "{outside} bytes outside string literals, more than the limit of {MAX_EXPRESSION_BYTES}"
            ),
        ));
    }
    let expr = promql_parser::parser::parse(query).map_err(Error::Parse)?;
    // Measured without recursion, so that a deep tree is refused rather than overflowing.
    let mut stack = vec![(&expr, 1usize)];
    while let Some((e, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(Error::Unsupported(format!(
                "expression nested deeper than {MAX_DEPTH} levels"
            )));
        }
        match e {
            Expr::Aggregate(a) => {
                stack.push((&a.expr, depth + 1));
                if let Some(p) = &a.param {
                    stack.push((p, depth + 1));
                }
            }
            Expr::Unary(u) => stack.push((&u.expr, depth + 1)),
            Expr::Binary(b) => {
                stack.push((&b.lhs, depth + 1));
                stack.push((&b.rhs, depth + 1));
            }
            Expr::Paren(p) => stack.push((&p.expr, depth + 1)),
            Expr::Subquery(q) => stack.push((&q.expr, depth + 1)),
            Expr::Call(c) => stack.extend(c.args.args.iter().map(|a| (a.as_ref(), depth + 1))),
            _ => {}
        }
    }
    Ok(expr)
}

/// Evaluates `query` at `time_ms`.
pub fn instant_query(
    source: &dyn Source,
    query: &str,
    time_ms: i64,
    opts: &QueryOptions,
) -> Result<QueryValue, Error> {
    let expr = parse_query(query)?;
    let mut ev = Evaluator::new(source, opts, time_ms, time_ms, 1)?;
    ev.plan(&expr, None)?;
    if let Expr::MatrixSelector(ms) = unwrap_parens(&expr) {
        return ev.top_level_matrix(ms, time_ms);
    }
    let out = match ev.eval(&expr, time_ms)? {
        Val::Scalar(v) => QueryValue::Scalar {
            t_ms: time_ms,
            value: v,
        },
        Val::String(s) => QueryValue::String {
            t_ms: time_ms,
            value: s,
        },
        Val::Vector(mut v) => {
            ev.add_result_points(v.len())?;
            if v.len() > ev.limits.max_series {
                return Err(Error::TooManySeries(ev.limits.max_series));
            }
            v.sort_by(|a, b| a.labels.cmp(&b.labels));
            QueryValue::Vector(
                v.into_iter()
                    .map(|e| Sample {
                        labels: (*e.labels).clone(),
                        t_ms: time_ms,
                        value: e.v,
                    })
                    .collect(),
            )
        }
    };
    Ok(out)
}

/// Evaluates `query` at `start_ms`, `start_ms + step_ms`, ... up to `end_ms`; the result is
/// always a matrix (a scalar becomes one series without labels).
pub fn range_query(
    source: &dyn Source,
    query: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    opts: &QueryOptions,
) -> Result<QueryValue, Error> {
    if step_ms <= 0 {
        return Err(Error::bad_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if end_ms < start_ms {
        return Err(Error::bad_param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let span = i128::from(end_ms) - i128::from(start_ms);
    if span / i128::from(step_ms) >= i128::from(MAX_STEPS) {
        return Err(Error::bad_param(
            "step",
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let expr = parse_query(query)?;
    match expr.value_type() {
        promql_parser::parser::value::ValueType::Vector
        | promql_parser::parser::value::ValueType::Scalar => {}
        other => {
            let kind = match other {
                promql_parser::parser::value::ValueType::Matrix => "range vector".to_string(),
                t => t.to_string(),
            };
            return Err(Error::bad_param(
                "query",
                format!(
                    "invalid expression type \"{kind}\" for range query, must be Scalar or instant Vector"
                ),
            ));
        }
    }
    let mut ev = Evaluator::new(source, opts, start_ms, end_ms, step_ms)?;
    ev.plan(&expr, None)?;
    let mut out: BTreeMap<Rc<Labels>, Vec<(i64, f64)>> = BTreeMap::new();
    let mut t = start_ms;
    loop {
        ev.check_cancel()?;
        match ev.eval(&expr, t)? {
            Val::Scalar(v) => {
                ev.add_result_points(1)?;
                out.entry(Rc::new(Labels::default()))
                    .or_default()
                    .push((t, v));
            }
            Val::Vector(v) => {
                ev.add_result_points(v.len())?;
                for e in v {
                    out.entry(e.labels).or_default().push((t, e.v));
                }
                if out.len() > ev.limits.max_series {
                    return Err(Error::TooManySeries(ev.limits.max_series));
                }
            }
            Val::String(_) => {
                return Err(Error::Unsupported("string result in a range query".into()));
            }
        }
        match t.checked_add(step_ms) {
            Some(next) if next <= end_ms => t = next,
            _ => break,
        }
    }
    Ok(QueryValue::Matrix(
        out.into_iter()
            .map(|(labels, samples)| Series {
                labels: (*labels).clone(),
                samples,
            })
            .collect(),
    ))
}

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

/// A value during evaluation.
#[derive(Debug, Clone)]
enum Val {
    Scalar(f64),
    Vector(Vec<Elem>),
    String(String),
}

#[derive(Debug, Clone)]
struct Elem {
    labels: Rc<Labels>,
    v: f64,
    /// The sample's own timestamp when the element comes straight from a selector (for
    /// `timestamp()`), else the evaluation time.
    ts: i64,
}

/// One loaded series: its labels and its samples or buckets.
type Loaded<T> = Vec<(Rc<Labels>, Vec<T>)>;

/// What one selector loaded for the whole query.
enum NodeData {
    Raw(Loaded<(i64, f64)>),
    Rollup(Loaded<RollupBucket>),
}

/// A window of a range vector: raw samples, or whole rollup buckets.
enum Window<'a> {
    Raw(&'a [(i64, f64)]),
    Rollup(&'a [RollupBucket]),
}

/// Range functions whose result rollup buckets reproduce exactly.
const ROLLUP_FUNCTIONS: [&str; 5] = [
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "avg_over_time",
];

const RANGE_FUNCTIONS: [&str; 19] = [
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "predict_linear",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "present_over_time",
    "resets",
    "changes",
];

const MATH_FUNCTIONS: [&str; 8] = ["abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10"];

const OTHER_FUNCTIONS: [&str; 8] = [
    "histogram_quantile",
    "clamp",
    "clamp_min",
    "clamp_max",
    "time",
    "vector",
    "scalar",
    "timestamp",
];

struct Evaluator<'a> {
    source: &'a dyn Source,
    limits: Limits,
    cancel: Option<Arc<AtomicBool>>,
    start: i64,
    end: i64,
    step: i64,
    samples: usize,
    series: usize,
    instant: HashMap<usize, NodeData>,
    matrix: HashMap<usize, NodeData>,
}

fn node_key<T>(node: &T) -> usize {
    std::ptr::from_ref(node) as usize
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Some(Offset::Neg(d)) => -i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
    }
}

fn duration_ms(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The matchers of a series selector (`metric{label="value"}`, as the HTTP API's
/// `match[]` takes it); anything else is refused.
pub fn parse_selector(selector: &str) -> Result<Vec<Matcher>, Error> {
    match unwrap_parens(&parse_query(selector)?) {
        Expr::VectorSelector(vs) => convert_matchers(vs),
        _ => Err(Error::bad_param(
            "match[]",
            format!("{selector:?} is not a series selector"),
        )),
    }
}

fn convert_matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, Error> {
    if vs.at.is_some() {
        return Err(Error::Unsupported("@ modifier".into()));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(Error::Unsupported("'or' inside a selector".into()));
    }
    let mut out = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    if let Some(name) = &vs.name {
        out.push(Matcher::new(METRIC_NAME, MatchOp::Equal, name).map_err(Error::Parse)?);
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(Matcher::new(&m.name, op, &m.value).map_err(Error::Parse)?);
    }
    Ok(out)
}

impl<'a> Evaluator<'a> {
    fn new(
        source: &'a dyn Source,
        opts: &QueryOptions,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Self, Error> {
        if opts.limits.lookback_ms <= 0 {
            return Err(Error::bad_param("lookback_delta", "must be positive"));
        }
        Ok(Evaluator {
            source,
            limits: opts.limits,
            cancel: opts.cancel.clone(),
            start,
            end,
            step,
            samples: 0,
            series: 0,
            instant: HashMap::new(),
            matrix: HashMap::new(),
        })
    }

    fn check_cancel(&self) -> Result<(), Error> {
        match &self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(Error::Canceled),
            _ => Ok(()),
        }
    }

    fn add_loaded(&mut self, series: usize, points: usize) -> Result<(), Error> {
        self.series = self.series.saturating_add(series);
        if self.series > self.limits.max_series {
            return Err(Error::TooManySeries(self.limits.max_series));
        }
        self.samples = self.samples.saturating_add(points);
        if self.samples > self.limits.max_samples {
            return Err(Error::TooManySamples(self.limits.max_samples));
        }
        Ok(())
    }

    fn add_result_points(&mut self, points: usize) -> Result<(), Error> {
        self.add_loaded(0, points)
    }

    /// Whether evaluation times shifted by `offset` fall on multiples of `res` and so do
    /// the steps between them.
    fn aligned(&self, res: i64, offset: i64) -> bool {
        let single = self.start == self.end;
        self.start.saturating_sub(offset).rem_euclid(res) == 0 && (single || self.step % res == 0)
    }

    /// Checks the expression for what is refused, and loads every selector's data once.
    fn plan(&mut self, e: &Expr, parent_fn: Option<&str>) -> Result<(), Error> {
        self.check_cancel()?;
        match e {
            Expr::Aggregate(a) => {
                aggregation_name(a.op)?;
                if let Some(p) = &a.param {
                    self.plan(p, None)?;
                }
                self.plan(&a.expr, None)
            }
            Expr::Unary(u) => self.plan(&u.expr, None),
            Expr::Binary(b) => {
                check_bin_modifier(b)?;
                self.plan(&b.lhs, None)?;
                self.plan(&b.rhs, None)
            }
            Expr::Paren(p) => self.plan(&p.expr, parent_fn),
            Expr::Subquery(_) => Err(Error::Unsupported("subquery".into())),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
            Expr::VectorSelector(vs) => self.load_instant(vs),
            Expr::MatrixSelector(ms) => self.load_matrix(ms, parent_fn),
            Expr::Call(c) => {
                let name = c.func.name;
                if !RANGE_FUNCTIONS.contains(&name)
                    && !MATH_FUNCTIONS.contains(&name)
                    && !OTHER_FUNCTIONS.contains(&name)
                {
                    return Err(Error::UnsupportedFunction(name.to_string()));
                }
                for a in &c.args.args {
                    self.plan(a, Some(name))?;
                }
                Ok(())
            }
            Expr::Extension(_) => Err(Error::Unsupported("extension expression".into())),
        }
    }

    fn load_instant(&mut self, vs: &VectorSelector) -> Result<(), Error> {
        let matchers = convert_matchers(vs)?;
        let off = offset_ms(&vs.offset);
        let lookback = self.limits.lookback_ms;
        let first = self.start.saturating_sub(off);
        let last = self.end.saturating_sub(off);
        // Bucket `last` and its timestamp give the same answer as raw samples when every
        // evaluation time is a bucket boundary; worth it only for range queries.
        if self.start < self.end {
            for res in RESOLUTIONS {
                if !self.aligned(res, off) {
                    continue;
                }
                let from = first.saturating_sub(lookback).div_euclid(res) * res;
                if let Some(rs) = self.source.select_rollup(&matchers, from, last, res)? {
                    let points = rs.iter().map(|s| s.buckets.len()).sum();
                    self.add_loaded(rs.len(), points)?;
                    let data = rs
                        .into_iter()
                        .map(|s| (Rc::new(s.labels), s.buckets))
                        .collect();
                    self.instant.insert(node_key(vs), NodeData::Rollup(data));
                    return Ok(());
                }
            }
        }
        // The lookback window is (t - lookback, t].
        let from = first.saturating_sub(lookback).saturating_add(1);
        let ss = self.source.select(&matchers, from, last)?;
        let points = ss.iter().map(|s| s.samples.len()).sum();
        self.add_loaded(ss.len(), points)?;
        let data = ss
            .into_iter()
            .map(|s| (Rc::new(s.labels), s.samples))
            .collect();
        self.instant.insert(node_key(vs), NodeData::Raw(data));
        Ok(())
    }

    fn load_matrix(&mut self, ms: &MatrixSelector, parent_fn: Option<&str>) -> Result<(), Error> {
        let matchers = convert_matchers(&ms.vs)?;
        let off = offset_ms(&ms.vs.offset);
        let range = duration_ms(&ms.range);
        let first = self.start.saturating_sub(off);
        let last = self.end.saturating_sub(off);
        if parent_fn.is_some_and(|p| ROLLUP_FUNCTIONS.contains(&p)) {
            for res in RESOLUTIONS {
                if range % res != 0 || !self.aligned(res, off) {
                    continue;
                }
                let from = first.saturating_sub(range);
                if let Some(rs) = self.source.select_rollup(&matchers, from, last, res)? {
                    let points = rs.iter().map(|s| s.buckets.len()).sum();
                    self.add_loaded(rs.len(), points)?;
                    let data = rs
                        .into_iter()
                        .map(|s| (Rc::new(s.labels), s.buckets))
                        .collect();
                    self.matrix.insert(node_key(ms), NodeData::Rollup(data));
                    return Ok(());
                }
            }
        }
        // Range windows are (t - range, t]; staleness markers are not part of a range.
        let from = first.saturating_sub(range).saturating_add(1);
        let ss = self.source.select(&matchers, from, last)?;
        let points = ss.iter().map(|s| s.samples.len()).sum();
        self.add_loaded(ss.len(), points)?;
        let data = ss
            .into_iter()
            .map(|s| {
                let samples = s
                    .samples
                    .into_iter()
                    .filter(|(_, v)| !is_stale_nan(*v))
                    .collect();
                (Rc::new(s.labels), samples)
            })
            .collect();
        self.matrix.insert(node_key(ms), NodeData::Raw(data));
        Ok(())
    }

    fn top_level_matrix(&mut self, ms: &MatrixSelector, t: i64) -> Result<QueryValue, Error> {
        let mut out = Vec::new();
        for (labels, w) in self.windows(ms, t)? {
            if let Window::Raw(s) = w
                && !s.is_empty()
            {
                out.push(Series {
                    labels: (*labels).clone(),
                    samples: s.to_vec(),
                });
            }
        }
        let points = out.iter().map(|s| s.samples.len()).sum();
        self.add_result_points(points)?;
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(QueryValue::Matrix(out))
    }

    fn windows(&self, ms: &MatrixSelector, t: i64) -> Result<Vec<(Rc<Labels>, Window<'_>)>, Error> {
        let data = self
            .matrix
            .get(&node_key(ms))
            .ok_or_else(|| Error::Execution("range selector was not planned".into()))?;
        let reference = t.saturating_sub(offset_ms(&ms.vs.offset));
        let lo = reference.saturating_sub(duration_ms(&ms.range));
        let mut out = Vec::new();
        match data {
            NodeData::Raw(series) => {
                for (labels, s) in series {
                    let a = s.partition_point(|(ts, _)| *ts <= lo);
                    let b = s.partition_point(|(ts, _)| *ts <= reference);
                    out.push((labels.clone(), Window::Raw(&s[a..b])));
                }
            }
            NodeData::Rollup(series) => {
                for (labels, s) in series {
                    let a = s.partition_point(|bk| bk.end_ms <= lo);
                    let b = s.partition_point(|bk| bk.end_ms <= reference);
                    out.push((labels.clone(), Window::Rollup(&s[a..b])));
                }
            }
        }
        Ok(out)
    }

    fn eval(&mut self, e: &Expr, t: i64) -> Result<Val, Error> {
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(v) => Ok(Val::Scalar(-v)),
                Val::Vector(v) => {
                    let out = v
                        .into_iter()
                        .map(|e| Elem {
                            labels: drop_name(&e.labels),
                            v: -e.v,
                            ts: t,
                        })
                        .collect();
                    unique(out)
                }
                Val::String(_) => Err(Error::Execution("unary minus on a string".into())),
            },
            Expr::VectorSelector(vs) => self.eval_selector(vs, t),
            Expr::MatrixSelector(_) => Err(Error::Unsupported(
                "range vector outside a function call".into(),
            )),
            Expr::Subquery(_) => Err(Error::Unsupported("subquery".into())),
            Expr::Extension(_) => Err(Error::Unsupported("extension expression".into())),
            Expr::Call(c) => self.eval_call(c, t),
            Expr::Aggregate(a) => self.eval_aggregate(a, t),
            Expr::Binary(b) => self.eval_binary(b, t),
        }
    }

    fn eval_selector(&mut self, vs: &VectorSelector, t: i64) -> Result<Val, Error> {
        self.check_cancel()?;
        let data = self
            .instant
            .get(&node_key(vs))
            .ok_or_else(|| Error::Execution("selector was not planned".into()))?;
        let reference = t.saturating_sub(offset_ms(&vs.offset));
        let lo = reference.saturating_sub(self.limits.lookback_ms);
        let mut out = Vec::new();
        match data {
            NodeData::Raw(series) => {
                for (labels, s) in series {
                    let i = s.partition_point(|(ts, _)| *ts <= reference);
                    if i > 0 {
                        let (ts, v) = s[i - 1];
                        if ts > lo && !is_stale_nan(v) {
                            out.push(Elem {
                                labels: labels.clone(),
                                v,
                                ts,
                            });
                        }
                    }
                }
            }
            NodeData::Rollup(series) => {
                for (labels, s) in series {
                    let i = s.partition_point(|b| b.end_ms <= reference);
                    if i > 0 {
                        let b = &s[i - 1];
                        if b.last_ms > lo && !is_stale_nan(b.last) {
                            out.push(Elem {
                                labels: labels.clone(),
                                v: b.last,
                                ts: b.last_ms,
                            });
                        }
                    }
                }
            }
        }
        Ok(Val::Vector(out))
    }

    fn scalar_arg(&mut self, e: &Expr, t: i64, what: &str) -> Result<f64, Error> {
        match self.eval(e, t)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(Error::Execution(format!(
                "{what}: expected a scalar argument"
            ))),
        }
    }

    fn vector_arg(&mut self, e: &Expr, t: i64, what: &str) -> Result<Vec<Elem>, Error> {
        match self.eval(e, t)? {
            Val::Vector(v) => Ok(v),
            _ => Err(Error::Execution(format!(
                "{what}: expected an instant vector argument"
            ))),
        }
    }

    fn eval_call(&mut self, c: &Call, t: i64) -> Result<Val, Error> {
        let name = c.func.name;
        let args = &c.args.args;
        let arg = |i: usize| -> Result<&Expr, Error> {
            args.get(i)
                .map(|b| b.as_ref())
                .ok_or_else(|| Error::Execution(format!("{name}: missing argument {}", i + 1)))
        };
        if RANGE_FUNCTIONS.contains(&name) {
            let (ms_arg, param) = match name {
                "quantile_over_time" => (arg(1)?, Some(self.scalar_arg(arg(0)?, t, name)?)),
                "predict_linear" => (arg(0)?, Some(self.scalar_arg(arg(1)?, t, name)?)),
                _ => (arg(0)?, None),
            };
            let ms = match unwrap_parens(ms_arg) {
                Expr::MatrixSelector(ms) => ms,
                Expr::Subquery(_) => return Err(Error::Unsupported("subquery".into())),
                _ => return Err(Error::Execution(format!("{name}: expected a range vector"))),
            };
            return self.eval_range_function(name, ms, param.unwrap_or(f64::NAN), t);
        }
        if MATH_FUNCTIONS.contains(&name) {
            let op: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                _ => f64::log10,
            };
            let v = self.vector_arg(arg(0)?, t, name)?;
            return unique(
                v.into_iter()
                    .map(|e| Elem {
                        labels: drop_name(&e.labels),
                        v: op(e.v),
                        ts: t,
                    })
                    .collect(),
            );
        }
        match name {
            "time" => Ok(Val::Scalar(t as f64 / 1000.0)),
            "vector" => {
                let v = self.scalar_arg(arg(0)?, t, name)?;
                Ok(Val::Vector(vec![Elem {
                    labels: Rc::new(Labels::default()),
                    v,
                    ts: t,
                }]))
            }
            "scalar" => {
                let v = self.vector_arg(arg(0)?, t, name)?;
                Ok(Val::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }))
            }
            "timestamp" => {
                let v = self.vector_arg(arg(0)?, t, name)?;
                unique(
                    v.into_iter()
                        .map(|e| Elem {
                            labels: drop_name(&e.labels),
                            v: e.ts as f64 / 1000.0,
                            ts: t,
                        })
                        .collect(),
                )
            }
            "clamp" | "clamp_min" | "clamp_max" => {
                let v = self.vector_arg(arg(0)?, t, name)?;
                let (lo, hi) = match name {
                    "clamp" => (
                        self.scalar_arg(arg(1)?, t, name)?,
                        self.scalar_arg(arg(2)?, t, name)?,
                    ),
                    "clamp_min" => (self.scalar_arg(arg(1)?, t, name)?, f64::NAN),
                    _ => (f64::NAN, self.scalar_arg(arg(1)?, t, name)?),
                };
                if name == "clamp" && lo > hi {
                    return Ok(Val::Vector(Vec::new()));
                }
                unique(
                    v.into_iter()
                        .map(|e| {
                            let x = match name {
                                "clamp_min" => go_max(lo, e.v),
                                "clamp_max" => go_min(hi, e.v),
                                _ => go_max(lo, go_min(hi, e.v)),
                            };
                            Elem {
                                labels: drop_name(&e.labels),
                                v: x,
                                ts: t,
                            }
                        })
                        .collect(),
                )
            }
            "histogram_quantile" => {
                let q = self.scalar_arg(arg(0)?, t, name)?;
                let v = self.vector_arg(arg(1)?, t, name)?;
                let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
                for e in v {
                    let Ok(le) = parse_go_float(e.labels.get("le")) else {
                        continue;
                    };
                    let key = e
                        .labels
                        .without(&["le".to_string(), METRIC_NAME.to_string()]);
                    groups.entry(key).or_default().push((le, e.v));
                }
                Ok(Val::Vector(
                    groups
                        .into_iter()
                        .map(|(labels, b)| Elem {
                            labels: Rc::new(labels),
                            v: f::bucket_quantile(q, b),
                            ts: t,
                        })
                        .collect(),
                ))
            }
            other => Err(Error::UnsupportedFunction(other.to_string())),
        }
    }

    fn eval_range_function(
        &mut self,
        name: &str,
        ms: &MatrixSelector,
        param: f64,
        t: i64,
    ) -> Result<Val, Error> {
        self.check_cancel()?;
        let reference = t.saturating_sub(offset_ms(&ms.vs.offset));
        let range = duration_ms(&ms.range);
        let range_start = reference.saturating_sub(range);
        let range_s = range as f64 / 1000.0;
        let mut out = Vec::new();
        for (labels, w) in self.windows(ms, t)? {
            let value = match w {
                Window::Rollup(bs) => {
                    let bs: Vec<&RollupBucket> = bs.iter().filter(|b| b.count > 0).collect();
                    if bs.is_empty() {
                        continue;
                    }
                    match name {
                        "min_over_time" => f::min(bs.iter().map(|b| b.min)),
                        "max_over_time" => f::max(bs.iter().map(|b| b.max)),
                        "sum_over_time" => f::sum(bs.iter().map(|b| b.sum)),
                        "count_over_time" => bs.iter().map(|b| b.count as f64).sum(),
                        "avg_over_time" => {
                            f::sum(bs.iter().map(|b| b.sum))
                                / bs.iter().map(|b| b.count as f64).sum::<f64>()
                        }
                        other => {
                            return Err(Error::Execution(format!(
                                "{other} cannot use rollup buckets"
                            )));
                        }
                    }
                }
                Window::Raw(s) => {
                    if s.is_empty() {
                        continue;
                    }
                    let vals = || s.iter().map(|(_, v)| *v);
                    let r = match name {
                        "rate" => {
                            f::extrapolated_rate(s, range_start, reference, range_s, true, true)
                        }
                        "increase" => {
                            f::extrapolated_rate(s, range_start, reference, range_s, true, false)
                        }
                        "delta" => {
                            f::extrapolated_rate(s, range_start, reference, range_s, false, false)
                        }
                        "irate" => f::instant_value(s, true),
                        "idelta" => f::instant_value(s, false),
                        "deriv" => f::deriv(s),
                        "predict_linear" => f::predict_linear(s, t, param),
                        "avg_over_time" => Some(f::mean(vals())),
                        "min_over_time" => Some(f::min(vals())),
                        "max_over_time" => Some(f::max(vals())),
                        "sum_over_time" => Some(f::sum(vals())),
                        "count_over_time" => Some(s.len() as f64),
                        "last_over_time" => Some(s[s.len() - 1].1),
                        "present_over_time" => Some(1.0),
                        "quantile_over_time" => Some(f::quantile(param, vals().collect())),
                        "stddev_over_time" => Some(f::stddev(vals())),
                        "stdvar_over_time" => Some(f::stddev(vals()).powi(2)),
                        "resets" => Some(s.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64),
                        "changes" => Some(
                            s.windows(2)
                                .filter(|w| {
                                    !(w[1].1 == w[0].1 || (w[1].1.is_nan() && w[0].1.is_nan()))
                                })
                                .count() as f64,
                        ),
                        other => return Err(Error::UnsupportedFunction(other.to_string())),
                    };
                    match r {
                        Some(v) => v,
                        None => continue,
                    }
                }
            };
            // last_over_time passes the series through, name and all.
            let labels = if name == "last_over_time" {
                labels
            } else {
                drop_name(&labels)
            };
            out.push(Elem {
                labels,
                v: value,
                ts: t,
            });
        }
        unique(out)
    }

    fn eval_aggregate(&mut self, a: &AggregateExpr, t: i64) -> Result<Val, Error> {
        let op = aggregation_name(a.op)?;
        let param = match &a.param {
            Some(p) if op != "count_values" => Some(self.scalar_arg(p, t, op)?),
            _ => None,
        };
        let v = self.vector_arg(&a.expr, t, op)?;
        self.check_cancel()?;
        let key = |l: &Labels| -> Labels {
            match &a.modifier {
                None => Labels::default(),
                Some(LabelModifier::Include(ls)) => l.only(&ls.labels),
                Some(LabelModifier::Exclude(ls)) => l.without(&ls.labels).without_name(),
            }
        };
        let mut groups: BTreeMap<Labels, Vec<Elem>> = BTreeMap::new();
        for e in v {
            groups.entry(key(&e.labels)).or_default().push(e);
        }
        let mut out = Vec::new();
        if op == "topk" || op == "bottomk" {
            let k = param.unwrap_or(f64::NAN);
            if k.is_nan() {
                return Err(Error::Execution(format!("parameter value is NaN for {op}")));
            }
            // Prometheus converts k to an integer; out-of-range values saturate.
            let k = if k >= 9.2e18 { i64::MAX } else { k as i64 };
            if k < 1 {
                return Ok(Val::Vector(Vec::new()));
            }
            for (_, mut g) in groups {
                // NaN always sorts last, so it is kept only when k covers it.
                g.sort_by(|x, y| {
                    let (a, b) = (x.v, y.v);
                    match (a.is_nan(), b.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if op == "topk" => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
                        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
                    }
                });
                let n = usize::try_from(k).unwrap_or(usize::MAX).min(g.len());
                out.extend(g.into_iter().take(n).map(|e| Elem { ts: t, ..e }));
            }
            return Ok(Val::Vector(out));
        }
        for (labels, g) in groups {
            let vals = || g.iter().map(|e| e.v);
            let v = match op {
                "sum" => f::sum(vals()),
                "avg" => f::mean(vals()),
                "min" => f::min(vals()),
                "max" => f::max(vals()),
                "count" => g.len() as f64,
                "group" => 1.0,
                "stddev" => f::stddev(vals()),
                "stdvar" => f::stddev(vals()).powi(2),
                "quantile" => f::quantile(param.unwrap_or(f64::NAN), vals().collect()),
                other => return Err(Error::Unsupported(format!("aggregation {other}"))),
            };
            out.push(Elem {
                labels: Rc::new(labels),
                v,
                ts: t,
            });
        }
        Ok(Val::Vector(out))
    }

    fn eval_binary(&mut self, b: &BinaryExpr, t: i64) -> Result<Val, Error> {
        check_bin_modifier(b)?;
        let op = b.op;
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        self.check_cancel()?;
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let (v, keep) = binop(op, l, r)?;
                if op.is_comparison_operator() {
                    return Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }));
                }
                Ok(Val::Scalar(v))
            }
            (Val::Vector(l), Val::Scalar(r)) => vector_scalar(op, l, r, false, return_bool, t),
            (Val::Scalar(l), Val::Vector(r)) => vector_scalar(op, r, l, true, return_bool, t),
            (Val::Vector(l), Val::Vector(r)) => {
                let (on, names) = match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                    Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
                    Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
                    None => (false, Vec::new()),
                };
                let sig = |l: &Labels| -> Labels {
                    if on {
                        l.only(&names)
                    } else {
                        l.without(&names).without_name()
                    }
                };
                if op.is_set_operator() {
                    return Ok(Val::Vector(set_op(op, l, r, sig)));
                }
                vector_vector(op, l, r, on, &names, sig, return_bool, t)
            }
            _ => Err(Error::Execution(format!(
                "operator {op} is not defined on strings"
            ))),
        }
    }
}

fn aggregation_name(op: TokenType) -> Result<&'static str, Error> {
    Ok(match op.id() {
        token::T_SUM => "sum",
        token::T_AVG => "avg",
        token::T_MIN => "min",
        token::T_MAX => "max",
        token::T_COUNT => "count",
        token::T_GROUP => "group",
        token::T_STDDEV => "stddev",
        token::T_STDVAR => "stdvar",
        token::T_TOPK => "topk",
        token::T_BOTTOMK => "bottomk",
        token::T_QUANTILE => "quantile",
        _ => return Err(Error::Unsupported(format!("aggregation {op}"))),
    })
}

fn check_bin_modifier(b: &BinaryExpr) -> Result<(), Error> {
    if let Some(m) = &b.modifier {
        match m.card {
            VectorMatchCardinality::ManyToOne(_) => {
                return Err(Error::Unsupported("group_left".into()));
            }
            VectorMatchCardinality::OneToMany(_) => {
                return Err(Error::Unsupported("group_right".into()));
            }
            _ => {}
        }
        if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
            return Err(Error::Unsupported("fill modifiers".into()));
        }
    }
    Ok(())
}

fn drop_name(l: &Rc<Labels>) -> Rc<Labels> {
    if l.get(METRIC_NAME).is_empty() {
        l.clone()
    } else {
        Rc::new(l.without_name())
    }
}

/// Refuses a vector in which two elements have the same label set, as Prometheus does.
fn unique(v: Vec<Elem>) -> Result<Val, Error> {
    let mut seen: Vec<&Labels> = v.iter().map(|e| e.labels.as_ref()).collect();
    seen.sort();
    if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Execution(format!(
            "vector cannot contain metrics with the same labelset: {}",
            w[0]
        )));
    }
    Ok(Val::Vector(v))
}

/// Go's `math.Max`: +Inf wins, then NaN.
fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: -Inf wins, then NaN.
fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Parses a float as Go's `strconv.ParseFloat` accepts it for `le` values.
pub(crate) fn parse_go_float(s: &str) -> Result<f64, ()> {
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Ok(f64::INFINITY),
        "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
        "nan" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| ()),
    }
}

/// One operation on two floats: the value and, for comparisons, whether it holds.
fn binop(op: TokenType, l: f64, r: f64) -> Result<(f64, bool), Error> {
    Ok(match op.id() {
        token::T_ADD => (l + r, true),
        token::T_SUB => (l - r, true),
        token::T_MUL => (l * r, true),
        token::T_DIV => (l / r, true),
        token::T_MOD => (l % r, true),
        token::T_POW => (l.powf(r), true),
        token::T_ATAN2 => (l.atan2(r), true),
        token::T_EQLC => (l, l == r),
        token::T_NEQ => (l, l != r),
        token::T_GTR => (l, l > r),
        token::T_LSS => (l, l < r),
        token::T_GTE => (l, l >= r),
        token::T_LTE => (l, l <= r),
        _ => return Err(Error::Unsupported(format!("operator {op}"))),
    })
}

fn vector_scalar(
    op: TokenType,
    v: Vec<Elem>,
    s: f64,
    scalar_on_left: bool,
    return_bool: bool,
    t: i64,
) -> Result<Val, Error> {
    let comparison = op.is_comparison_operator();
    let mut out = Vec::with_capacity(v.len());
    for e in v {
        let (l, r) = if scalar_on_left { (s, e.v) } else { (e.v, s) };
        let (mut value, mut keep) = binop(op, l, r)?;
        // A comparison keeps the vector's value, whichever side it is on.
        if comparison && scalar_on_left {
            value = e.v;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if !keep {
            continue;
        }
        let labels = if !comparison || return_bool {
            drop_name(&e.labels)
        } else {
            e.labels
        };
        out.push(Elem {
            labels,
            v: value,
            ts: t,
        });
    }
    if !comparison || return_bool {
        unique(out)
    } else {
        Ok(Val::Vector(out))
    }
}

fn set_op(op: TokenType, l: Vec<Elem>, r: Vec<Elem>, sig: impl Fn(&Labels) -> Labels) -> Vec<Elem> {
    let rsigs: std::collections::HashSet<Labels> = r.iter().map(|e| sig(&e.labels)).collect();
    match op.id() {
        token::T_LAND => l
            .into_iter()
            .filter(|e| rsigs.contains(&sig(&e.labels)))
            .collect(),
        token::T_LUNLESS => l
            .into_iter()
            .filter(|e| !rsigs.contains(&sig(&e.labels)))
            .collect(),
        _ => {
            let lsigs: std::collections::HashSet<Labels> =
                l.iter().map(|e| sig(&e.labels)).collect();
            let mut out = l;
            out.extend(r.into_iter().filter(|e| !lsigs.contains(&sig(&e.labels))));
            out
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn vector_vector(
    op: TokenType,
    l: Vec<Elem>,
    r: Vec<Elem>,
    on: bool,
    names: &[String],
    sig: impl Fn(&Labels) -> Labels,
    return_bool: bool,
    t: i64,
) -> Result<Val, Error> {
    let comparison = op.is_comparison_operator();
    let mut right: HashMap<Labels, Elem> = HashMap::with_capacity(r.len());
    for e in r {
        let s = sig(&e.labels);
        if let Some(prev) = right.get(&s) {
            return Err(Error::Execution(format!(
                "found duplicate series for the match group {s} on the right hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                prev.labels, e.labels
            )));
        }
        right.insert(s, e);
    }
    let mut matched: std::collections::HashSet<Labels> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for e in l {
        let s = sig(&e.labels);
        let Some(re) = right.get(&s) else { continue };
        let (mut value, keep) = binop(op, e.v, re.v)?;
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let mut labels = if !comparison || return_bool {
            e.labels.without_name()
        } else {
            (*e.labels).clone()
        };
        labels = if on {
            labels.only(names)
        } else {
            labels.without(names)
        };
        if !matched.insert(s) {
            return Err(Error::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
            ));
        }
        out.push(Elem {
            labels: Rc::new(labels),
            v: value,
            ts: t,
        });
    }
    unique(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{MemorySource, STALE_NAN_BITS};

    const STALE: f64 = f64::from_bits(STALE_NAN_BITS);

    fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
        Series {
            labels: Labels::new(pairs.iter().copied()),
            samples: samples.to_vec(),
        }
    }

    fn fleet() -> MemorySource {
        MemorySource::new(vec![
            series(
                &[("__name__", "up"), ("job", "api"), ("instance", "a")],
                &[(0, 1.0), (60_000, 1.0)],
            ),
            series(
                &[("__name__", "up"), ("job", "api"), ("instance", "b")],
                &[(0, 0.0), (60_000, 0.0)],
            ),
            series(
                &[("__name__", "up"), ("job", "web"), ("instance", "c")],
                &[(0, 1.0), (60_000, 1.0)],
            ),
            series(
                &[("__name__", "rss"), ("job", "api"), ("instance", "a")],
                &[(60_000, 300.0)],
            ),
            series(
                &[("__name__", "rss"), ("job", "api"), ("instance", "b")],
                &[(60_000, 500.0)],
            ),
            series(
                &[("__name__", "heap"), ("job", "api"), ("instance", "a")],
                &[(60_000, 100.0)],
            ),
            series(
                &[("__name__", "heap"), ("job", "api"), ("instance", "b")],
                &[(60_000, 400.0)],
            ),
            series(
                &[("__name__", "g"), ("job", "x"), ("instance", "n")],
                &[(60_000, f64::NAN)],
            ),
            series(
                &[("__name__", "g"), ("job", "x"), ("instance", "i")],
                &[(60_000, f64::INFINITY)],
            ),
            series(
                &[("__name__", "g"), ("job", "x"), ("instance", "m")],
                &[(60_000, 2.0)],
            ),
        ])
    }

    fn run(src: &dyn Source, q: &str, t: i64) -> Result<QueryValue, Error> {
        instant_query(src, q, t, &QueryOptions::default())
    }

    /// A vector result as `(labels, value)` text pairs, for compact assertions.
    fn vector(src: &dyn Source, q: &str, t: i64) -> Vec<(String, f64)> {
        match run(src, q, t).unwrap_or_else(|e| panic!("{q}: {e}")) {
            QueryValue::Vector(v) => v
                .into_iter()
                .map(|s| (s.labels.to_string(), s.value))
                .collect(),
            other => panic!("{q}: not a vector: {other:?}"),
        }
    }

    fn values(src: &dyn Source, q: &str, t: i64) -> Vec<f64> {
        vector(src, q, t).into_iter().map(|(_, v)| v).collect()
    }

    fn scalar(src: &dyn Source, q: &str, t: i64) -> f64 {
        match run(src, q, t).unwrap_or_else(|e| panic!("{q}: {e}")) {
            QueryValue::Scalar { value, .. } => value,
            other => panic!("{q}: not a scalar: {other:?}"),
        }
    }

    fn err(src: &dyn Source, q: &str) -> String {
        run(src, q, 60_000).expect_err(q).to_string()
    }

    #[test]
    fn all_four_matchers_and_name_matching() {
        let s = fleet();
        assert_eq!(values(&s, r#"up{job="api"}"#, 60_000).len(), 2);
        assert_eq!(values(&s, r#"up{job!="api"}"#, 60_000).len(), 1);
        assert_eq!(values(&s, r#"up{instance=~"a|c"}"#, 60_000).len(), 2);
        assert_eq!(values(&s, r#"up{instance!~"a|c"}"#, 60_000).len(), 1);
        // Regexes are anchored: "a" does not match "ab", ".*p.*" is needed for a substring.
        assert_eq!(values(&s, r#"up{job=~"ap"}"#, 60_000).len(), 0);
        assert_eq!(
            values(&s, r#"{__name__=~"r.*|h.*", instance="a"}"#, 60_000),
            vec![100.0, 300.0]
        );
        assert_eq!(values(&s, r#"{__name__="rss"}"#, 60_000).len(), 2);
        assert_eq!(
            values(&s, r#"{__name__!~"up|g", job="api"}"#, 60_000).len(),
            4
        );
        // A selector keeps the metric name.
        assert_eq!(
            vector(&s, r#"rss{instance="a"}"#, 60_000)[0].0,
            r#"{__name__="rss", instance="a", job="api"}"#
        );
    }

    #[test]
    fn lookback_window_is_left_open_and_configurable() {
        let s = MemorySource::new(vec![series(&[("__name__", "m")], &[(1_000, 7.0)])]);
        assert_eq!(values(&s, "m", 1_000), vec![7.0]);
        assert_eq!(values(&s, "m", 300_999), vec![7.0]);
        assert!(values(&s, "m", 301_000).is_empty());
        assert!(values(&s, "m", 999).is_empty());
        let opts = QueryOptions {
            limits: Limits {
                lookback_ms: 10_000,
                ..Limits::default()
            },
            cancel: None,
        };
        let QueryValue::Vector(v) = instant_query(&s, "m", 11_000, &opts).unwrap() else {
            panic!()
        };
        assert!(v.is_empty());
        let QueryValue::Vector(v) = instant_query(&s, "m", 10_999, &opts).unwrap() else {
            panic!()
        };
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn staleness_marker_ends_a_series() {
        let s = MemorySource::new(vec![series(
            &[("__name__", "m")],
            &[(0, 1.0), (10_000, 2.0), (20_000, STALE), (40_000, 5.0)],
        )]);
        assert_eq!(values(&s, "m", 15_000), vec![2.0]);
        assert!(values(&s, "m", 20_000).is_empty());
        assert!(values(&s, "m", 30_000).is_empty());
        assert_eq!(values(&s, "m", 40_000), vec![5.0]);
        // Range windows leave the marker out.
        assert_eq!(values(&s, "count_over_time(m[1m])", 40_000), vec![3.0]);
        assert_eq!(values(&s, "max_over_time(m[1m])", 40_000), vec![5.0]);
        // A plain NaN is a value, not a marker.
        let n = MemorySource::new(vec![series(&[("__name__", "m")], &[(0, f64::NAN)])]);
        assert!(values(&n, "m", 1_000)[0].is_nan());
    }

    #[test]
    fn range_windows_are_left_open() {
        let s = MemorySource::new(vec![series(
            &[("__name__", "m")],
            &[(0, 1.0), (30_000, 2.0), (60_000, 4.0)],
        )]);
        // (0, 60s]: the sample at 0 is out.
        assert_eq!(values(&s, "count_over_time(m[1m])", 60_000), vec![2.0]);
        assert_eq!(values(&s, "sum_over_time(m[1m])", 60_000), vec![6.0]);
        assert_eq!(values(&s, "count_over_time(m[1m])", 59_999), vec![2.0]);
        assert_eq!(values(&s, "count_over_time(m[1m])", 89_999), vec![2.0]);
        assert_eq!(values(&s, "count_over_time(m[1m])", 90_000), vec![1.0]);
        // Empty window: no element.
        assert!(values(&s, "count_over_time(m[10s])", 20_000).is_empty());
        // One sample: no rate, but an *_over_time value.
        assert!(values(&s, "rate(m[10s])", 30_000).is_empty());
        assert_eq!(values(&s, "avg_over_time(m[10s])", 30_000), vec![2.0]);
    }

    #[test]
    fn offset_shifts_the_windows_both_ways() {
        let s = MemorySource::new(vec![series(
            &[("__name__", "m")],
            &[(0, 1.0), (60_000, 2.0), (120_000, 3.0)],
        )]);
        assert_eq!(values(&s, "m offset 1m", 120_000), vec![2.0]);
        assert_eq!(values(&s, "m offset -1m", 0), vec![2.0]);
        assert_eq!(
            values(&s, "sum_over_time(m[1m] offset 1m)", 120_000),
            vec![2.0]
        );
        assert_eq!(values(&s, "timestamp(m offset 1m)", 130_000), vec![60.0]);
    }

    #[test]
    fn rate_family_on_a_counter_with_a_reset() {
        let s = MemorySource::new(vec![series(
            &[("__name__", "c_total"), ("job", "a")],
            &[
                (5_000, 10.0),
                (15_000, 20.0),
                (25_000, 5.0),
                (35_000, 15.0),
                (45_000, 25.0),
                (55_000, 35.0),
            ],
        )]);
        // increase: 35 - 10 + 20 = 45 over 50 s, extended 5 s each side: 54.
        let inc = values(&s, "increase(c_total[1m])", 60_000)[0];
        assert!((inc - 54.0).abs() < 1e-9, "{inc}");
        let rate = values(&s, "rate(c_total[1m])", 60_000)[0];
        assert!((rate - 0.9).abs() < 1e-12, "{rate}");
        assert_eq!(values(&s, "irate(c_total[1m])", 60_000), vec![1.0]);
        // delta ignores the reset: (35 - 10) * 60 / 50.
        assert!((values(&s, "delta(c_total[1m])", 60_000)[0] - 30.0).abs() < 1e-9);
        // The name goes; other labels stay.
        assert_eq!(vector(&s, "rate(c_total[1m])", 60_000)[0].0, r#"{job="a"}"#);
        assert_eq!(
            vector(&s, "last_over_time(c_total[1m])", 60_000)[0].0,
            r#"{__name__="c_total", job="a"}"#
        );
    }

    #[test]
    fn over_time_functions_by_hand() {
        let s = MemorySource::new(vec![series(
            &[("__name__", "m")],
            &[(10_000, 1.0), (20_000, 5.0), (30_000, 3.0)],
        )]);
        let at = |f: &str| values(&s, &format!("{f}(m[1m])"), 30_000)[0];
        assert_eq!(at("avg_over_time"), 3.0);
        assert_eq!(at("min_over_time"), 1.0);
        assert_eq!(at("max_over_time"), 5.0);
        assert_eq!(at("sum_over_time"), 9.0);
        assert_eq!(at("count_over_time"), 3.0);
        assert_eq!(at("last_over_time"), 3.0);
        assert_eq!(at("present_over_time"), 1.0);
        assert_eq!(at("changes"), 2.0);
        assert_eq!(at("resets"), 1.0);
        assert!((at("stddev_over_time") - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(
            values(&s, "quantile_over_time(0.5, m[1m])", 30_000),
            vec![3.0]
        );
        assert_eq!(
            values(&s, "quantile_over_time(0.25, m[1m])", 30_000),
            vec![2.0]
        );
        assert!((at("deriv") - 0.1).abs() < 1e-12);
        // The fitted line passes the mean (3 at 20 s) with slope 0.1: 4 at 30 s, 5 ten
        // seconds later.
        assert!((values(&s, "predict_linear(m[1m], 10)", 30_000)[0] - 5.0).abs() < 1e-9);
    }

    #[test]
    fn aggregations_with_by_and_without() {
        let s = fleet();
        assert_eq!(vector(&s, "sum(up)", 60_000), vec![("{}".to_string(), 2.0)]);
        assert_eq!(
            vector(&s, "sum by (job) (up)", 60_000),
            vec![
                (r#"{job="api"}"#.to_string(), 1.0),
                (r#"{job="web"}"#.to_string(), 1.0)
            ]
        );
        assert_eq!(
            vector(&s, "count without (instance) (up)", 60_000),
            vec![
                (r#"{job="api"}"#.to_string(), 2.0),
                (r#"{job="web"}"#.to_string(), 1.0)
            ]
        );
        assert_eq!(values(&s, "avg(rss)", 60_000), vec![400.0]);
        assert_eq!(values(&s, "min(rss)", 60_000), vec![300.0]);
        assert_eq!(values(&s, "max(rss)", 60_000), vec![500.0]);
        assert_eq!(values(&s, "quantile(0.5, rss)", 60_000), vec![400.0]);
        assert_eq!(values(&s, "stddev(rss)", 60_000), vec![100.0]);
        // by (__name__) keeps the name.
        assert_eq!(
            vector(&s, "count by (__name__) (rss)", 60_000)[0].0,
            r#"{__name__="rss"}"#
        );
        // NaN and +Inf: sum is NaN, max ignores NaN.
        assert!(values(&s, "sum(g)", 60_000)[0].is_nan());
        assert_eq!(values(&s, "max(g)", 60_000), vec![f64::INFINITY]);
        assert_eq!(values(&s, "min(g)", 60_000), vec![2.0]);
    }

    #[test]
    fn topk_and_bottomk_keep_labels_and_rank_nan_last() {
        let s = fleet();
        assert_eq!(
            vector(&s, "topk(1, rss)", 60_000)[0].0,
            r#"{__name__="rss", instance="b", job="api"}"#
        );
        assert_eq!(values(&s, "bottomk(1, rss)", 60_000), vec![300.0]);
        assert_eq!(values(&s, "topk(1, g)", 60_000), vec![f64::INFINITY]);
        assert_eq!(values(&s, "bottomk(1, g)", 60_000), vec![2.0]);
        assert_eq!(values(&s, "topk(3, g)", 60_000).len(), 3);
        assert_eq!(values(&s, "topk by (job) (1, up)", 60_000).len(), 2);
        assert!(values(&s, "topk(0, rss)", 60_000).is_empty());
        assert!(values(&s, "topk(-1, rss)", 60_000).is_empty());
        assert_eq!(values(&s, "topk(1e30, rss)", 60_000).len(), 2);
        assert!(err(&s, "topk(scalar(g), rss)").contains("NaN"));
    }

    #[test]
    fn binary_operators_match_one_to_one() {
        let s = fleet();
        // RSS minus heap per target; the name goes.
        assert_eq!(
            vector(&s, "rss - heap", 60_000),
            vec![
                (r#"{instance="a", job="api"}"#.to_string(), 200.0),
                (r#"{instance="b", job="api"}"#.to_string(), 100.0)
            ]
        );
        assert_eq!(
            values(&s, "rss - ignoring(job) heap", 60_000),
            vec![200.0, 100.0]
        );
        // on() keeps only the listed labels.
        assert_eq!(
            vector(&s, "rss - on(instance) heap", 60_000)[0].0,
            r#"{instance="a"}"#
        );
        // Comparisons filter and keep the left value and name; bool gives 0/1 without the name.
        assert_eq!(
            vector(&s, "rss > heap * 2", 60_000)[0],
            (
                r#"{__name__="rss", instance="a", job="api"}"#.to_string(),
                300.0
            )
        );
        assert_eq!(values(&s, "rss > bool heap * 2", 60_000), vec![1.0, 0.0]);
        assert_eq!(values(&s, "rss > 400", 60_000), vec![500.0]);
        assert_eq!(values(&s, "400 < rss", 60_000), vec![500.0]);
        assert_eq!(values(&s, "rss < bool 400", 60_000), vec![1.0, 0.0]);
        assert_eq!(
            vector(&s, "rss >= bool 400", 60_000)[0].0,
            r#"{instance="a", job="api"}"#
        );
        // Arithmetic with scalars, including the IEEE cases.
        assert_eq!(values(&s, "rss / 100", 60_000), vec![3.0, 5.0]);
        assert_eq!(values(&s, "2 ^ (rss / 100)", 60_000), vec![8.0, 32.0]);
        assert_eq!(values(&s, "rss % 7", 60_000), vec![6.0, 3.0]);
        assert_eq!(
            values(&s, "rss / 0", 60_000),
            vec![f64::INFINITY, f64::INFINITY]
        );
        assert_eq!(values(&s, "-rss", 60_000), vec![-300.0, -500.0]);
        // atan2 is arithmetic: the name goes (Prometheus 3; 2.x kept it).
        assert_eq!(
            vector(&s, r#"rss{instance="a"} atan2 rss{instance="a"}"#, 60_000),
            vec![(
                r#"{instance="a", job="api"}"#.to_string(),
                std::f64::consts::FRAC_PI_4
            )]
        );
        // NaN never compares equal, so `g == g` drops it.
        assert_eq!(values(&s, "g == g", 60_000).len(), 2);
        // One-to-one with nothing on the other side: no element.
        assert!(values(&s, "rss - up", 60_000).len() == 2);
        assert!(values(&s, r#"rss - heap{instance="a"}"#, 60_000).len() == 1);
    }

    #[test]
    fn scalar_arithmetic_and_comparisons() {
        let s = fleet();
        assert_eq!(scalar(&s, "2 * 3 + 4", 0), 10.0);
        assert_eq!(scalar(&s, "2 ^ 3 ^ 2", 0), 512.0);
        assert_eq!(scalar(&s, "7 % 4", 0), 3.0);
        assert_eq!(scalar(&s, "-7 % 4", 0), -3.0);
        assert_eq!(scalar(&s, "1 / 0", 0), f64::INFINITY);
        assert!(scalar(&s, "0 / 0", 0).is_nan());
        assert_eq!(scalar(&s, "1 < bool 2", 0), 1.0);
        assert_eq!(scalar(&s, "1 == bool 2", 0), 0.0);
        assert!(scalar(&s, "NaN", 0).is_nan());
        assert_eq!(scalar(&s, "time()", 90_500), 90.5);
        assert_eq!(scalar(&s, "scalar(sum(rss))", 60_000), 800.0);
        assert!(scalar(&s, "scalar(rss)", 60_000).is_nan());
        assert_eq!(vector(&s, "vector(3)", 0), vec![("{}".to_string(), 3.0)]);
    }

    #[test]
    fn set_operators() {
        let s = fleet();
        assert_eq!(values(&s, "rss and rss > 400", 60_000), vec![500.0]);
        assert_eq!(values(&s, "rss unless rss > 400", 60_000), vec![300.0]);
        assert_eq!(values(&s, "rss or heap", 60_000), vec![300.0, 500.0]);
        assert_eq!(
            values(&s, r#"rss or on(instance) up{job="web"}"#, 60_000).len(),
            3
        );
        assert_eq!(values(&s, r#"up and on(job) rss"#, 60_000).len(), 2);
    }

    #[test]
    fn instant_functions() {
        let s = fleet();
        assert_eq!(
            values(&s, "clamp_min(rss, 400)", 60_000),
            vec![400.0, 500.0]
        );
        assert_eq!(
            values(&s, "clamp_max(rss, 400)", 60_000),
            vec![300.0, 400.0]
        );
        assert_eq!(
            values(&s, "clamp(rss, 350, 450)", 60_000),
            vec![350.0, 450.0]
        );
        assert!(values(&s, "clamp(rss, 2, 1)", 60_000).is_empty());
        assert_eq!(values(&s, "abs(-rss)", 60_000), vec![300.0, 500.0]);
        assert_eq!(values(&s, "timestamp(rss)", 90_000), vec![60.0, 60.0]);
        assert_eq!(
            vector(&s, "abs(rss)", 60_000)[0].0,
            r#"{instance="a", job="api"}"#
        );
        // Functions that drop the name can make two series collide.
        assert!(err(&s, r#"abs({__name__=~"rss|heap"})"#).contains("same labelset"));
    }

    #[test]
    fn histogram_quantile_over_classic_buckets() {
        let b = |le: &str, v: f64| {
            series(
                &[("__name__", "h_bucket"), ("job", "a"), ("le", le)],
                &[(0, v)],
            )
        };
        let s = MemorySource::new(vec![
            b("0.1", 10.0),
            b("0.5", 60.0),
            b("1", 90.0),
            b("+Inf", 100.0),
            b("bogus", 5.0),
            series(
                &[("__name__", "h_bucket"), ("job", "b"), ("le", "1")],
                &[(0, 1.0)],
            ),
        ]);
        let v = vector(&s, "histogram_quantile(0.5, h_bucket)", 0);
        assert_eq!(v[0].0, r#"{job="a"}"#);
        assert!((v[0].1 - 0.42).abs() < 1e-12);
        // Job b has no +Inf bucket.
        assert!(v[1].1.is_nan());
        assert_eq!(
            values(&s, "histogram_quantile(2, h_bucket)", 0)[0],
            f64::INFINITY
        );
    }

    #[test]
    fn refusals_name_what_is_unsupported() {
        let s = fleet();
        assert_eq!(
            err(&s, r#"label_replace(up, "a", "b", "c", "d")"#),
            "unsupported function: label_replace"
        );
        assert_eq!(err(&s, "sort(up)"), "unsupported function: sort");
        assert_eq!(
            err(&s, "rss - on(instance) group_left heap"),
            "unsupported: group_left"
        );
        assert_eq!(
            err(&s, "rss - on(instance) group_right heap"),
            "unsupported: group_right"
        );
        assert_eq!(
            err(&s, "max_over_time(rate(up[1m])[5m:1m])"),
            "unsupported: subquery"
        );
        assert_eq!(err(&s, "up @ 100"), "unsupported: @ modifier");
        assert_eq!(
            err(&s, r#"count_values("v", up)"#),
            "unsupported: aggregation count_values"
        );
        assert!(err(&s, "sum(").starts_with("parse error"));
        assert!(err(&s, "1 > 2").starts_with("parse error"));
        assert!(err(&s, "rate(up)").starts_with("parse error"));
        assert!(err(&s, r#"{job=~".*"}"#).starts_with("parse error"));
        assert!(err(&s, r#"up{job=~"("}"#).starts_with("parse error"));
        // Many-to-one without group_left.
        assert!(
            err(&s, "up - on(job) sum by (job) (rss)")
                .contains("many-to-one matching must be explicit")
        );
        assert!(err(&s, "rss - on(job) up").contains("duplicate series for the match group"));
        let e = range_query(&s, "up[5m]", 0, 60_000, 15_000, &QueryOptions::default()).unwrap_err();
        assert!(e.to_string().contains("range vector"), "{e}");
        assert_eq!(e.error_type(), "bad_data");
        let e = range_query(&s, "up", 0, 60_000, 0, &QueryOptions::default()).unwrap_err();
        assert!(e.to_string().contains("step"), "{e}");
        let e = range_query(&s, "up", 0, 11_000_000, 1_000, &QueryOptions::default()).unwrap_err();
        assert!(e.to_string().contains("11,000"), "{e}");
        assert!(range_query(&s, "up", 10, 0, 1, &QueryOptions::default()).is_err());
    }

    #[test]
    fn rollup_path_handles_staleness_nan_and_gaps() {
        // Samples every 20 s for 30 minutes, with NaN, infinities, a staleness marker and a
        // ten-minute gap after it.
        let mut samples = Vec::new();
        for k in 0..90i64 {
            let t = 7 + k * 20_000;
            let v = match k {
                10 => f64::NAN,
                11 => f64::INFINITY,
                12 => f64::NEG_INFINITY,
                40 => STALE,
                41..=70 => continue,
                _ => (k % 9) as f64,
            };
            samples.push((t, v));
        }
        let raw = MemorySource::new(vec![series(&[("__name__", "m")], &samples)]);
        let rolled = MemorySource {
            series: raw.series.clone(),
            rollups: true,
        };
        let opts = QueryOptions::default();
        for q in [
            "m",
            "timestamp(m)",
            "min_over_time(m[2m])",
            "max_over_time(m[1m])",
            "sum_over_time(m[3m])",
            "count_over_time(m[5m])",
            "avg_over_time(m[2m])",
        ] {
            let a = range_query(&raw, q, 0, 1_800_000, 60_000, &opts).unwrap();
            let b = range_query(&rolled, q, 0, 1_800_000, 60_000, &opts).unwrap();
            // NaN != NaN, so compare the API text.
            assert_eq!(
                crate::api::success_json(&a),
                crate::api::success_json(&b),
                "{q}"
            );
        }
        // The staleness marker at 800 s ends the series at the next minute in both.
        let QueryValue::Matrix(m) =
            range_query(&rolled, "m", 780_000, 900_000, 60_000, &opts).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            m[0].samples.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![780_000]
        );
    }

    #[test]
    fn hostile_queries_return_errors_not_panics() {
        let s = fleet();
        for q in [
            "",
            " ",
            "\u{0}",
            "ü{ö=\"ä\"}",
            "up{job=~\"(a|\"}",
            "up{job=~\"a{1000000}\"}",
            "up[0s]",
            "up[-5m]",
            "rate(up[1y])",
            "up offset 10000y",
            "topk(1e400, up)",
            "quantile(NaN, up)",
            "histogram_quantile(NaN, up)",
            "histogram_quantile(0.5, up)",
            "predict_linear(up[5m], -1e308)",
            "quantile_over_time(-1, up[5m])",
            "clamp(up, NaN, NaN)",
            "1e309 * up",
            "-(-(-(-up)))",
            "up == bool on() group_left up",
            "sum without (__name__) (up)",
            "count_over_time({__name__=~\".+\"}[10y])",
        ] {
            let _ = run(&s, q, 60_000);
            let _ = range_query(&s, q, -60_000, 60_000, 7_000, &QueryOptions::default());
        }
    }

    #[test]
    fn deep_and_long_queries_are_refused_not_overflowed() {
        let s = fleet();
        let deep = format!("1{}", "+1".repeat(200));
        assert_eq!(
            err(&s, &deep),
            "unsupported: expression nested deeper than 128 levels"
        );
        let parens = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(err(&s, &parens).contains("nested deeper"));
        let long = format!("1{}", "+1".repeat(10_000));
        assert!(err(&s, &long).contains("outside string literals"));
        let huge = format!("1{}", "+1".repeat(MAX_QUERY_BYTES));
        assert!(err(&s, &huge).contains("more than the limit"));
        // Long string literals are fine.
        let alternatives: Vec<String> = (0..3000).map(|i| format!("host-{i}")).collect();
        let q = format!(r#"up{{instance=~"{}|a"}}"#, alternatives.join("|"));
        assert_eq!(values(&s, &q, 60_000), vec![1.0]);
        let nested = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(scalar(&s, &nested, 0), 1.0);
    }

    #[test]
    fn limits_and_cancellation_stop_the_query() {
        let s = fleet();
        let with = |limits: Limits| QueryOptions {
            limits,
            cancel: None,
        };
        let e = instant_query(
            &s,
            "up",
            60_000,
            &with(Limits {
                max_samples: 3,
                ..Limits::default()
            }),
        )
        .unwrap_err();
        assert!(matches!(e, Error::TooManySamples(3)), "{e}");
        assert!(e.to_string().contains("max_samples"));
        // Loaded points fit, result points do not.
        let e = range_query(
            &s,
            "up",
            0,
            60_000,
            1_000,
            &with(Limits {
                max_samples: 50,
                ..Limits::default()
            }),
        )
        .unwrap_err();
        assert!(matches!(e, Error::TooManySamples(50)), "{e}");
        let e = instant_query(
            &s,
            "up",
            60_000,
            &with(Limits {
                max_series: 2,
                ..Limits::default()
            }),
        )
        .unwrap_err();
        assert!(matches!(e, Error::TooManySeries(2)), "{e}");
        assert!(e.to_string().contains("max_series"));
        let cancel = Arc::new(AtomicBool::new(true));
        let opts = QueryOptions {
            limits: Limits::default(),
            cancel: Some(cancel),
        };
        let e = range_query(&s, "up", 0, 60_000, 1_000, &opts).unwrap_err();
        assert!(matches!(e, Error::Canceled));
        assert_eq!(e.error_type(), "canceled");
    }

    #[test]
    fn range_queries_have_the_prometheus_shape() {
        let s = fleet();
        let QueryValue::Matrix(m) =
            range_query(&s, "rss", 0, 120_000, 30_000, &QueryOptions::default()).unwrap()
        else {
            panic!()
        };
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].samples,
            vec![(60_000, 300.0), (90_000, 300.0), (120_000, 300.0)]
        );
        let QueryValue::Matrix(m) =
            range_query(&s, "1 + 1", 0, 60_000, 30_000, &QueryOptions::default()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            m,
            vec![Series {
                labels: Labels::default(),
                samples: vec![(0, 2.0), (30_000, 2.0), (60_000, 2.0)]
            }]
        );
        assert_eq!(
            run(&s, r#""hello""#, 5_000).unwrap(),
            QueryValue::String {
                t_ms: 5_000,
                value: "hello".into()
            }
        );
        assert!(range_query(&s, r#""hello""#, 0, 1, 1, &QueryOptions::default()).is_err());
        // A range selector in an instant query gives its raw samples.
        let QueryValue::Matrix(m) = run(&s, "up[2m]", 60_000).unwrap() else {
            panic!()
        };
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].labels.get("__name__"), "up");
        assert_eq!(m[0].samples, vec![(0, 1.0), (60_000, 1.0)]);
    }

    #[test]
    fn huge_and_negative_timestamps() {
        let s = MemorySource::new(vec![series(
            &[("__name__", "m")],
            &[(-120_000, 1.0), (-60_000, 2.0), (i64::MAX - 10, 3.0)],
        )]);
        assert_eq!(values(&s, "m", -30_000), vec![2.0]);
        assert_eq!(values(&s, "sum_over_time(m[2m])", -30_000), vec![3.0]);
        assert_eq!(values(&s, "timestamp(m)", -60_000), vec![-60.0]);
        assert_eq!(values(&s, "m", i64::MAX), vec![3.0]);
        assert_eq!(values(&s, "m offset 1h", i64::MIN + 5), Vec::<f64>::new());
        let QueryValue::Matrix(m) = range_query(
            &s,
            "m",
            i64::MAX - 100_000,
            i64::MAX,
            10_000,
            &QueryOptions::default(),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(m[0].samples.len(), 1);
        assert!(
            range_query(
                &s,
                "m",
                i64::MIN,
                i64::MAX,
                i64::MAX,
                &QueryOptions::default()
            )
            .is_ok()
        );
    }
}
