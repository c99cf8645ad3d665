//! Rendering for people: aligned tables, byte sizes, ages, times.
//!
//! Most table cells come from the network (hosts, labels, metric names); [`Table`]
//! escapes every cell, so a control character in one reaches the terminal as text.

use std::borrow::Cow;

use comfy_table::{CellAlignment, presets::NOTHING};
use goroscope_daemon::escape::escape;

/// A table with a header row, columns two spaces apart, left-aligned except those marked
/// numeric, no borders and no trailing spaces.
pub struct Table {
    inner: comfy_table::Table,
    columns: usize,
}

impl Table {
    pub fn new(columns: &[(&'static str, bool)]) -> Table {
        let mut inner = comfy_table::Table::new();
        inner
            .load_style(NOTHING)
            .set_header(columns.iter().map(|(h, _)| *h).collect::<Vec<_>>());
        for (i, column) in inner.column_iter_mut().enumerate() {
            // The gap goes before every column but the first and none after, so that a
            // line neither starts nor ends in padding.
            column.set_padding((if i == 0 { 0 } else { 2 }, 0));
            if columns.get(i).is_some_and(|(_, numeric)| *numeric) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        Table {
            inner,
            columns: columns.len(),
        }
    }

    /// Adds a row of cells, each escaped ([`escape`]), so that widths count what is
    /// printed; cells past the header's count are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let cells = cells
            .into_iter()
            .take(self.columns)
            .map(|cell| match escape(&cell) {
                Cow::Borrowed(_) => cell,
                Cow::Owned(escaped) => escaped,
            });
        self.inner.add_row(cells.collect::<Vec<_>>());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in self.inner.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// 1536 -> "1.5 KiB".
pub fn bytes(v: f64) -> String {
    if !v.is_finite() {
        return non_finite(v).to_owned();
    }
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = v;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Milliseconds ago -> "3s ago", "5m ago", "2h ago", "4d ago".
pub fn ago(ms: i64) -> String {
    let s = (ms.max(0) / 1000) as u64;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A value for a table cell: integers without a fraction, others with up to 4 digits.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return non_finite(v).to_owned();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// NaN and the infinities as Prometheus writes them.
pub fn non_finite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

/// A sample value for JSON: a number, or (JSON has none for them) the string Prometheus
/// uses for NaN, +Inf and -Inf.
pub fn json_value(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::json!(non_finite(v))
    }
}

/// Unix milliseconds -> "2026-11-23T19:04:05Z" (UTC); a time outside the years
/// -9999..=9999 shows as its number ("@253402300800000ms").
pub fn timestamp(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{ms}ms"),
    }
}

/// A series as Prometheus writes it: `metric{name="value",...}`, values quoted and
/// escaped; just the metric when it has no labels of its own.
pub fn series_name(metric: &str, labels: &[goroscope_proto::v1::Label]) -> String {
    if labels.is_empty() {
        return metric.to_owned();
    }
    let pairs: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{metric}{{{}}}", pairs.join(","))
}

/// Seconds -> "45s", "17m", "3h 5m", "2d 4h": how long a goroutine has waited.
pub fn duration_s(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_print_as_prometheus_writes_them() {
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(bytes(f64::NEG_INFINITY), "-Inf");
        assert_eq!(json_value(f64::NAN), serde_json::json!("NaN"));
        assert_eq!(json_value(1.5), serde_json::json!(1.5));
    }

    #[test]
    fn formats() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(10.0 * 1024.0 * 1024.0), "10.0 MiB");
        assert_eq!(ago(61_000), "1m ago");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(0.01250), "0.0125");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_795_000_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn timestamps_of_any_value() {
        assert_eq!(timestamp(-1), "1969-12-31T23:59:59Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(253_402_300_799_999), "9999-12-31T23:59:59Z");
        // Past what a calendar date can show: the number itself, never a panic.
        assert_eq!(timestamp(253_402_300_800_000), "@253402300800000ms");
        assert_eq!(timestamp(i64::MIN), format!("@{}ms", i64::MIN));
        assert_eq!(timestamp(i64::MAX), format!("@{}ms", i64::MAX));
    }

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&[("NAME", false), ("N", true)]);
        t.row(vec!["a".into(), "100".into()]);
        t.row(vec!["long".into(), "2".into()]);
        assert_eq!(t.render(), "NAME    N\na     100\nlong    2\n");
    }

    #[test]
    fn keeps_the_look_of_the_readme() {
        let mut t = Table::new(&[
            ("HOST", false),
            ("PID", true),
            ("SERVICE", false),
            ("RSS", true),
        ]);
        t.row(vec![
            "vm".into(),
            "29740".into(),
            "steady".into(),
            "10.2 MiB".into(),
        ]);
        t.row(vec!["vm".into(), "7".into(), "".into(), "-".into()]);
        assert_eq!(
            t.render(),
            "HOST    PID  SERVICE       RSS\n\
             vm    29740  steady   10.2 MiB\n\
             vm        7                  -\n"
        );
        // A header alone when there are no rows; missing cells are blank, extra ones dropped.
        let mut t = Table::new(&[("A", false), ("LONG", false)]);
        assert_eq!(t.render(), "A  LONG\n");
        t.row(vec!["x".into()]);
        t.row(vec!["y".into(), "z".into(), "dropped".into()]);
        assert_eq!(t.render(), "A  LONG\nx\ny  z\n");
    }

    #[test]
    fn control_characters_print_escaped_and_count_as_printed() {
        let evil = "\u{1b}]0;PWNED\u{7}\u{1b}[31mred\u{202e}\nx";
        let shown = "\\e]0;PWNED\\x07\\e[31mred\\u{202e}\\nx";
        let mut t = Table::new(&[("NAME", false), ("N", true)]);
        t.row(vec![evil.into(), "1".into()]);
        t.row(vec!["a".into(), "22".into()]);
        let out = t.render();
        assert!(
            !out.chars()
                .any(|c| c != '\n' && goroscope_daemon::escape::is_unsafe(c)),
            "{out:?}"
        );
        let w = shown.chars().count();
        assert_eq!(
            out,
            format!("{:<w$}   N\n{shown}   1\n{:<w$}  22\n", "NAME", "a")
        );
    }
}
