//! A Prometheus exposition at `/metrics`: the text format (0.0.4) and OpenMetrics 1.0,
//! as client_golang, Prometheus and node_exporter serve them.
//!
//! One lenient line parser reads both formats (what differs between them — `# EOF`,
//! `# UNIT`, exemplars, timestamps in seconds, `_created` samples — is either skipped or
//! recognised by its family's type). It borrows from the body; each target keeps a
//! [`SeriesCache`] from the raw text of a series (`name{labels}`) to its interned
//! [`SeriesId`], so that a series already seen costs one hash lookup and no allocation.
//!
//! Lines that do not parse are skipped and counted, never fatal: a body with no sample
//! at all and a malformed line is not an exposition (an HTML page at `/metrics`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use goroscope_proto::rules;

use crate::model::{LABELS_TRIMMED, Labeled, SeriesId};

pub const PATH: &str = "/metrics";
/// OpenMetrics first, the text format as the fallback (what Prometheus itself asks).
pub const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// Series left out because their target exposed more than `limits.max_series_per_target`.
pub static SERIES_CAPPED: AtomicU64 = AtomicU64::new(0);
/// Exposition lines that did not parse.
pub static LINES_MALFORMED: AtomicU64 = AtomicU64::new(0);
/// Series left out because their metric name breaks the rules, or they carry more labels
/// than a series may.
pub static SERIES_INVALID: AtomicU64 = AtomicU64::new(0);
/// Labels left out of their series because their name breaks the rules (or repeats).
pub static LABELS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// How often at most a target's series cap is logged.
const CAP_LOG_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpositionError {
    #[error("/metrics is not a Prometheus exposition: {0}")]
    NotAnExposition(String),
}

/// What one exposition gave.
#[derive(Debug, Default)]
pub struct Parsed {
    pub series: Vec<Labeled>,
    /// Series left out over the cap, in this exposition.
    pub capped: usize,
    pub malformed: usize,
}

/// A target's interned series, kept from one scrape to the next.
#[derive(Debug)]
pub struct SeriesCache {
    /// The target's own label names (a series label by one of these names is renamed
    /// `exported_<name>`); the cache is emptied when they change.
    target_labels: Vec<String>,
    /// By the raw text of the series; `None` for a series that is left out (a
    /// `_created` sample, an invalid name).
    by_text: HashMap<Box<str>, Entry>,
    strings: HashSet<Arc<str>>,
    generation: u64,
    last_cap_log: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    id: Option<Arc<SeriesId>>,
    seen: u64,
}

/// The family a sample belongs to, from the latest `# TYPE` line.
struct Family<'a> {
    name: &'a str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Histogram,
    Summary,
    Other,
}

impl SeriesCache {
    /// An empty cache for a target with these labels (name, value).
    pub fn new(target_labels: &[(String, String)]) -> SeriesCache {
        SeriesCache {
            target_labels: target_labels.iter().map(|(k, _)| k.clone()).collect(),
            by_text: HashMap::new(),
            strings: HashSet::new(),
            generation: 0,
            last_cap_log: None,
        }
    }

    /// Forgets everything if the target's label names are not those the cache was
    /// built with.
    pub fn retarget(&mut self, target_labels: &[(String, String)]) {
        let same = self.target_labels.len() == target_labels.len()
            && self
                .target_labels
                .iter()
                .zip(target_labels)
                .all(|(a, (b, _))| a == b);
        if !same {
            *self = SeriesCache::new(target_labels);
        }
    }

    /// Series interned now.
    pub fn len(&self) -> usize {
        self.by_text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_text.is_empty()
    }

    /// True (and remembers now) if the cap may be logged for this target again.
    pub fn cap_log_due(&mut self) -> bool {
        let due = self
            .last_cap_log
            .is_none_or(|at| at.elapsed() >= CAP_LOG_EVERY);
        if due {
            self.last_cap_log = Some(Instant::now());
        }
        due
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// Forgets the series not seen in the latest exposition, once the cache holds more
    /// than twice `cap` of them: a target whose series churn (a label with a request
    /// id, say) costs bounded memory.
    fn forget_unseen(&mut self, cap: usize) {
        if self.by_text.len() <= cap.saturating_mul(2) {
            return;
        }
        let generation = self.generation;
        self.by_text.retain(|_, e| e.seen == generation);
        self.strings.retain(|s| Arc::strong_count(s) > 1);
    }
}

/// Parses an exposition (either format), keeping at most `cap` series, interning them
/// in `cache`.
pub fn parse(body: &[u8], cache: &mut SeriesCache, cap: usize) -> Result<Parsed, ExpositionError> {
    // Invalid UTF-8 is replaced rather than refused: one bad byte in a help text must
    // not cost the whole exposition.
    let text = String::from_utf8_lossy(body);
    cache.generation = cache.generation.wrapping_add(1);
    let generation = cache.generation;
    let mut out = Parsed::default();
    let mut family: Option<Family<'_>> = None;
    let mut first_error: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_ascii_whitespace();
            match words.next() {
                Some("EOF") => break,
                Some("TYPE") => {
                    if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                        family = Some(Family {
                            name,
                            kind: match kind {
                                "counter" => Kind::Counter,
                                "histogram" | "gaugehistogram" => Kind::Histogram,
                                "summary" => Kind::Summary,
                                _ => Kind::Other,
                            },
                        });
                    }
                }
                _ => {}
            }
            continue;
        }
        let (series_text, rest) = match split_series(line) {
            Ok(split) => split,
            Err(why) => {
                out.malformed += 1;
                first_error.get_or_insert_with(|| format!("{why}: {}", shorten(line)));
                continue;
            }
        };
        let Some(value) = parse_value(rest) else {
            out.malformed += 1;
            first_error.get_or_insert_with(|| format!("bad value: {}", shorten(line)));
            continue;
        };
        if let Some(entry) = cache.by_text.get_mut(series_text) {
            if entry.seen == generation {
                // The same series twice in one exposition: one value per instant.
                out.malformed += 1;
                first_error.get_or_insert_with(|| format!("repeated series: {}", shorten(line)));
                continue;
            }
            entry.seen = generation;
            if let Some(id) = &entry.id {
                if out.series.len() >= cap {
                    out.capped += 1;
                } else {
                    out.series.push((id.clone(), value));
                }
            }
            continue;
        }
        if out.series.len() >= cap {
            // Not interned: the series may get in once others leave.
            out.capped += 1;
            continue;
        }
        let id = match map_series(series_text, family.as_ref(), cache) {
            Ok(id) => id,
            Err(why) => {
                out.malformed += 1;
                first_error.get_or_insert_with(|| format!("{why}: {}", shorten(line)));
                continue;
            }
        };
        if let Some(id) = &id {
            out.series.push((id.clone(), value));
        }
        cache.by_text.insert(
            series_text.into(),
            Entry {
                id,
                seen: generation,
            },
        );
    }
    cache.forget_unseen(cap);
    // What is not an exposition at all (a web page at /metrics) is not counted as
    // malformed lines of one.
    if out.series.is_empty()
        && out.capped == 0
        && let Some(e) = first_error
    {
        return Err(ExpositionError::NotAnExposition(e));
    }
    LINES_MALFORMED.fetch_add(out.malformed as u64, Ordering::Relaxed);
    SERIES_CAPPED.fetch_add(out.capped as u64, Ordering::Relaxed);
    Ok(out)
}

/// At most 80 bytes of a line, for an error message.
fn shorten(line: &str) -> String {
    let mut end = line.len().min(80);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

/// Splits a sample line into the series (`name` or `name{...}`) and what follows it.
fn split_series(line: &str) -> Result<(&str, &str), &'static str> {
    let line = line.trim_start();
    let bytes = line.as_bytes();
    let name_end = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b':'))
        .unwrap_or(bytes.len());
    if name_end == 0 {
        return Err("no metric name");
    }
    let mut i = name_end;
    while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
        i += 1;
    }
    if i < bytes.len() && bytes[i] == b'{' {
        let end = labels_end(&bytes[i..]).ok_or("unterminated labels")?;
        let series_end = i + end;
        return Ok((&line[..series_end], &line[series_end..]));
    }
    if name_end == bytes.len() {
        return Err("no value");
    }
    Ok((&line[..name_end], &line[name_end..]))
}

/// The end (past `}`) of the label block that `block` starts with (at its `{`),
/// skipping over quoted values and their escapes.
fn labels_end(block: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut i = 1;
    while i < block.len() {
        match (quoted, block[i]) {
            (true, b'\\') => i += 1,
            (true, b'"') | (false, b'"') => quoted = !quoted,
            (false, b'}') => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The value after the series: the first word; a timestamp and an OpenMetrics exemplar
/// (`# {labels} value [timestamp]`) may follow and are not used (every series of a
/// target is sampled at the collector's time).
fn parse_value(rest: &str) -> Option<f64> {
    let rest = rest.trim_start();
    let word = rest.split([' ', '\t']).next()?;
    if word.is_empty() {
        return None;
    }
    // Rust reads "NaN", "+Inf", "-Inf" and "Inf" in any case, as Go's ParseFloat does.
    word.parse::<f64>().ok()
}

/// The series a sample's text stands for: `None` for one that is left out on purpose,
/// an error for one that breaks the syntax.
fn map_series(
    text: &str,
    family: Option<&Family<'_>>,
    cache: &mut SeriesCache,
) -> Result<Option<Arc<SeriesId>>, &'static str> {
    let (name, labels_text) = match text.find(['{', ' ', '\t']) {
        Some(i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    };
    // OpenMetrics' creation time of a counter, histogram or summary is not a sample of
    // it: a series for it would only grow the store.
    if let Some(f) = family
        && f.kind != Kind::Other
        && name.strip_prefix(f.name) == Some("_created")
    {
        return Ok(None);
    }
    let mut labels = parse_labels(labels_text)?;
    if rules::check_metric_name(name).is_err() {
        SERIES_INVALID.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    }
    let own: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
    let mut kept: Vec<(String, String)> = Vec::with_capacity(labels.len());
    for (label, value) in labels.drain(..) {
        // Prometheus takes an empty value for an absent label.
        if value.is_empty() {
            continue;
        }
        // As Prometheus renames a label that collides with a target label: prefixed
        // until it collides with nothing, the series' own labels included.
        let mut label = label.to_owned();
        let collides = |l: &str| {
            cache.target_labels.iter().any(|t| t == l) || rules::RESERVED_LABELS.contains(&l)
        };
        if collides(&label) {
            label.insert_str(0, "exported_");
            while collides(&label) || own.contains(&label.as_str()) {
                label.insert_str(0, "exported_");
            }
        }
        if rules::check_label_name(&label).is_err() || kept.iter().any(|(k, _)| *k == label) {
            LABELS_DROPPED.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let value = if label == "le" || label == "quantile" {
            canonical_float(&value).unwrap_or(value)
        } else {
            value
        };
        let value = match rules::trim_label_value(&value) {
            std::borrow::Cow::Borrowed(_) => value,
            std::borrow::Cow::Owned(cut) => {
                LABELS_TRIMMED.fetch_add(1, Ordering::Relaxed);
                cut
            }
        };
        kept.push((label, value));
    }
    if rules::check_label_count(kept.len()).is_err() {
        SERIES_INVALID.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    }
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let name = cache.intern(name);
    let labels: Box<[(Arc<str>, Arc<str>)]> = kept
        .iter()
        .map(|(k, v)| (cache.intern(k), cache.intern(v)))
        .collect();
    Ok(Some(Arc::new(SeriesId::new(name, labels))))
}

/// The labels of `{a="x",b="y"}` (a trailing comma allowed), values unescaped.
fn parse_labels(text: &str) -> Result<Vec<(&str, String)>, &'static str> {
    let mut out = Vec::new();
    let Some(inner) = text.strip_prefix('{') else {
        return if text.is_empty() {
            Ok(out)
        } else {
            Err("junk after the metric name")
        };
    };
    let mut rest = inner;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return if after.trim().is_empty() {
                Ok(out)
            } else {
                Err("junk after the labels")
            };
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated labels")?;
        if name_end == 0 {
            return Err("bad label name");
        }
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_start_matches([' ', '\t']);
        rest = rest.strip_prefix('=').ok_or("label without '='")?;
        rest = rest.trim_start_matches([' ', '\t']);
        rest = rest.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    // Other escapes are not defined: kept as they are, as Prometheus does.
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err("unterminated label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        out.push((name, value));
        rest = rest[end + 1..].trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by ','");
        }
    }
}

/// `le` and `quantile` as the text format writes them (Go's shortest `%g`), so that a
/// bucket is one series whether it came as OpenMetrics (`1.0`) or as text (`1`).
fn canonical_float(value: &str) -> Option<String> {
    let v: f64 = value.parse().ok()?;
    if v.is_nan() {
        return Some("NaN".into());
    }
    if v.is_infinite() {
        return Some(if v > 0.0 { "+Inf" } else { "-Inf" }.into());
    }
    if v == 0.0 {
        return Some("0".into());
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e')?;
    let exp: i32 = exp.parse().ok()?;
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return Some(format!("{mantissa}e{sign}{:02}", exp.abs()));
    }
    Some(format!("{v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_GOLANG_OM: &str = include_str!("testdata/client_golang.om.txt");
    const CLIENT_GOLANG_TEXT: &str = include_str!("testdata/client_golang.prom.txt");
    const NODE_EXPORTER: &str = include_str!("testdata/node_exporter.txt");
    const PROMETHEUS: &str = include_str!("testdata/prometheus.txt");

    fn target() -> Vec<(String, String)> {
        ["service", "version", "go_version", "module", "path"]
            .iter()
            .map(|k| (k.to_string(), "x".to_string()))
            .collect()
    }

    fn parse_all(body: &str) -> Parsed {
        let mut cache = SeriesCache::new(&target());
        parse(body.as_bytes(), &mut cache, 100_000).unwrap()
    }

    /// The value of the series `name` with exactly `labels`.
    fn find(p: &Parsed, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        p.series
            .iter()
            .find(|(id, _)| {
                &*id.name == name
                    && id.labels.len() == labels.len()
                    && id
                        .labels
                        .iter()
                        .zip(labels)
                        .all(|((k, v), (k2, v2))| &**k == *k2 && &**v == *v2)
            })
            .map(|(_, v)| *v)
    }

    #[test]
    fn reads_client_golang_in_both_formats_alike() {
        let om = parse_all(CLIENT_GOLANG_OM);
        let text = parse_all(CLIENT_GOLANG_TEXT);
        assert_eq!(om.malformed, 0);
        assert_eq!(text.malformed, 0);
        for p in [&om, &text] {
            assert!(find(p, "go_goroutines", &[]).unwrap() >= 1.0);
            assert!(find(p, "go_gc_duration_seconds", &[("quantile", "0.5")]).is_some());
            assert!(find(p, "go_gc_duration_seconds", &[("quantile", "1")]).is_some());
            assert!(find(p, "go_gc_duration_seconds_count", &[]).is_some());
            assert!(find(p, "go_sched_latencies_seconds_bucket", &[("le", "+Inf")]).is_some());
            assert!(
                find(
                    p,
                    "app_request_duration_seconds_bucket",
                    &[("code", "200"), ("le", "0.005"), ("route", "/api")]
                )
                .is_some()
            );
            assert!(
                find(
                    p,
                    "app_response_size_bytes",
                    &[("quantile", "0.99"), ("route", "/health")]
                )
                .is_some()
            );
            // Escaped values come unescaped; a label named like a target label renamed.
            assert_eq!(
                find(
                    p,
                    "app_odd_labels_total",
                    &[
                        ("exported_path", "C:\\dir \"quoted\"\nnext"),
                        ("exported_service", "inner")
                    ]
                ),
                Some(3.0)
            );
            assert!(find(p, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
        }
        // Every series of one format is a series of the other, the _created samples of
        // OpenMetrics aside.
        assert!(
            !om.series
                .iter()
                .any(|(id, _)| id.name.ends_with("_created"))
        );
        let names = |p: &Parsed| {
            let mut v: Vec<String> = p
                .series
                .iter()
                .map(|(id, _)| format!("{}{:?}", id.name, id.labels))
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&om), names(&text));
    }

    #[test]
    fn reads_prometheus_and_node_exporter() {
        let prom = parse_all(PROMETHEUS);
        assert_eq!(prom.malformed, 0);
        assert!(find(&prom, "go_goroutines", &[]).is_some());
        assert!(find(&prom, "prometheus_tsdb_head_series", &[]).is_some());
        assert!(prom.series.iter().any(|(id, _)| {
            &*id.name == "prometheus_tsdb_compaction_chunk_range_seconds_bucket"
                && id
                    .labels
                    .iter()
                    .any(|(k, v)| &**k == "le" && &**v == "1600")
        }));
        let node = parse_all(NODE_EXPORTER);
        assert_eq!(node.malformed, 0);
        assert!(find(&node, "go_gc_duration_seconds", &[("quantile", "0.75")]).is_some());
        assert!(
            node.series
                .iter()
                .any(|(id, _)| &*id.name == "node_cpu_seconds_total" && id.labels.len() == 2)
        );
        let lines = NODE_EXPORTER
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        assert_eq!(node.series.len(), lines);
    }

    #[test]
    fn labels_are_sorted_unique_and_follow_the_rules() {
        let body = "# TYPE x gauge\n\
            x{zeta=\"1\",alpha=\"2\",host=\"h\",pid=\"3\",__meta=\"m\",empty=\"\",alpha=\"dup\"} 1\n\
            x{exported_service=\"a\",service=\"b\"} 2\n\
            9bad 3\n";
        let mut cache = SeriesCache::new(&target());
        let invalid = SERIES_INVALID.load(Ordering::Relaxed);
        let p = parse(body.as_bytes(), &mut cache, 100).unwrap();
        // A name that breaks the rules is a series left out, not a malformed line.
        assert_eq!((p.malformed, p.series.len()), (0, 2));
        assert!(SERIES_INVALID.load(Ordering::Relaxed) > invalid);
        let first = &p.series[0].0;
        let labels: Vec<(&str, &str)> = first.labels.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            labels,
            [
                ("alpha", "2"),
                ("exported_host", "h"),
                ("exported_pid", "3"),
                ("zeta", "1")
            ]
        );
        // exported_service taken by the series itself: the renamed one goes further.
        assert_eq!(
            find(
                &p,
                "x",
                &[
                    ("exported_exported_service", "b"),
                    ("exported_service", "a")
                ]
            ),
            Some(2.0)
        );

        let long = format!("y{{v=\"{}\"}} 1\n", "é".repeat(600));
        let p = parse(long.as_bytes(), &mut cache, 100).unwrap();
        assert!(p.series[0].0.labels[0].1.len() <= rules::MAX_LABEL_VALUE);
    }

    #[test]
    fn values_keep_nan_and_infinities() {
        let body = "a NaN\nb +Inf\nc -Inf\nd 1e+06\ne 0x10\nf -0\n";
        let p = parse_all(body);
        assert!(find(&p, "a", &[]).unwrap().is_nan());
        assert_eq!(find(&p, "b", &[]), Some(f64::INFINITY));
        assert_eq!(find(&p, "c", &[]), Some(f64::NEG_INFINITY));
        assert_eq!(find(&p, "d", &[]), Some(1e6));
        assert_eq!(p.malformed, 1, "hex is not a value of the format");
    }

    #[test]
    fn openmetrics_exemplars_timestamps_and_eof() {
        let body = "# TYPE foo histogram\n# UNIT foo seconds\n\
            foo_bucket{le=\"1.0\"} 3 # {trace_id=\"abc\"} 0.5 1700000000.123\n\
            foo_bucket{le=\"+Inf\"} 4\nfoo_count 4 1700000000.5\nfoo_sum 2.0\n\
            foo_created 1700000000.0\n\
            # TYPE bar_created gauge\nbar_created 7\n\
            # TYPE baz counter\nbaz_total 5\nbaz_created 1.7e9\n\
            # EOF\nafter_eof 1\n";
        let p = parse_all(body);
        assert_eq!(p.malformed, 0);
        assert_eq!(find(&p, "foo_bucket", &[("le", "1")]), Some(3.0));
        assert_eq!(find(&p, "foo_count", &[]), Some(4.0));
        assert_eq!(find(&p, "bar_created", &[]), Some(7.0));
        assert_eq!(find(&p, "baz_total", &[]), Some(5.0));
        assert_eq!(find(&p, "foo_created", &[]), None);
        assert_eq!(find(&p, "baz_created", &[]), None);
        assert_eq!(find(&p, "after_eof", &[]), None);
        assert_eq!(p.series.len(), 6);
    }

    #[test]
    fn series_are_interned_once_and_capped() {
        let mut cache = SeriesCache::new(&target());
        let body = "a{x=\"1\"} 1\na{x=\"2\"} 2\nb 3\n";
        let first = parse(body.as_bytes(), &mut cache, 2).unwrap();
        assert_eq!((first.series.len(), first.capped), (2, 1));
        let second = parse(body.as_bytes(), &mut cache, 2).unwrap();
        for (a, b) in first.series.iter().zip(&second.series) {
            assert!(Arc::ptr_eq(&a.0, &b.0), "the same series is the same Arc");
        }
        assert_eq!(second.capped, 1);
        assert_eq!(cache.len(), 2);

        // New label names for the target: everything is interned again.
        let mut other = target();
        other.push(("x".into(), "v".into()));
        cache.retarget(&other);
        let third = parse(body.as_bytes(), &mut cache, 10).unwrap();
        assert_eq!(&*third.series[0].0.labels[0].0, "exported_x");

        // Churning series are forgotten once the cache is well past the cap.
        let mut cache = SeriesCache::new(&target());
        for round in 0..10 {
            let body: String = (0..5)
                .map(|i| format!("r{{id=\"{round}-{i}\"}} 1\n"))
                .collect();
            parse(body.as_bytes(), &mut cache, 5).unwrap();
            assert!(cache.len() <= 10, "{}", cache.len());
        }
    }

    #[test]
    fn what_is_not_an_exposition_is_an_error() {
        let mut cache = SeriesCache::new(&target());
        for body in [
            "<html><body>hello</body></html>\n",
            "{\"memstats\": {}}",
            "404 page not found\n",
        ] {
            assert!(parse(body.as_bytes(), &mut cache, 10).is_err(), "{body:?}");
        }
        // Empty, or comments only: an exposition with nothing in it.
        assert!(parse(b"", &mut cache, 10).unwrap().series.is_empty());
        assert!(
            parse(b"# HELP x y\n", &mut cache, 10)
                .unwrap()
                .series
                .is_empty()
        );
        // A series repeated: its first value only.
        let p = parse(b"r 1\nr 2\nq{a=\"1\"} 3\nq{a=\"1\"} 4\n", &mut cache, 10).unwrap();
        assert_eq!((p.series.len(), p.malformed), (2, 2));
        assert_eq!((p.series[0].1, p.series[1].1), (1.0, 3.0));
        // One bad line among good ones costs itself only.
        let p = parse(b"a 1\nb{x=\"1} 2\nc 3\nd{x=1} 4\ne\n", &mut cache, 10).unwrap();
        assert_eq!((p.series.len(), p.malformed), (2, 3));
    }

    #[test]
    fn le_and_quantile_are_written_as_the_text_format_does() {
        for (given, want) in [
            ("1.0", "1"),
            ("0.0", "0"),
            ("0.005", "0.005"),
            ("+Inf", "+Inf"),
            ("1e-05", "1e-05"),
            ("0.00001", "1e-05"),
            ("2.5e+06", "2.5e+06"),
            ("2500000", "2.5e+06"),
            ("123456", "123456"),
            ("1e+21", "1e+21"),
            ("-0.25", "-0.25"),
        ] {
            assert_eq!(canonical_float(given).as_deref(), Some(want), "{given}");
        }
        assert_eq!(canonical_float("lots"), None);
    }
}
