//! `goroscope query EXPR`: PromQL results as a table, JSON or CSV.

use std::io::Write;

use goroscope_daemon::escape::escape;
use goroscope_proto::v1;
use serde_json::{Value, json};

use crate::Output;
use crate::render::{self, Table};

/// Whether a query is a bare metric name (the plain selector form).
pub fn is_metric_name(q: &str) -> bool {
    let mut chars = q.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A step for a range of `range_ms`: about 250 points, at least a second, in whole
/// seconds; from a minute up, in whole minutes.
pub fn auto_step_ms(range_ms: i64) -> i64 {
    let step = ((range_ms / 250).max(1000) / 1000) * 1000;
    if step >= 60_000 {
        (step + 59_999) / 60_000 * 60_000
    } else {
        step
    }
}

/// The range and step of a range query over `[start_ms, end_ms]` given no step. A step
/// of whole minutes also moves both ends back to a multiple of the step, as Grafana does:
/// every evaluation then falls on a minute (or hour) boundary, and the aggregator
/// answers from its rollups instead of reading every sample.
pub fn auto_range(start_ms: i64, end_ms: i64) -> (i64, i64, i64) {
    let step = auto_step_ms(end_ms - start_ms);
    if step % 60_000 == 0 {
        (
            start_ms.div_euclid(step) * step,
            end_ms.div_euclid(step) * step,
            step,
        )
    } else {
        (start_ms, end_ms, step)
    }
}

/// A label set as PromQL writes it: `name{a="b", ...}`.
pub fn series_name(labels: &[v1::Label]) -> String {
    let name = labels
        .iter()
        .find(|l| l.name == "__name__")
        .map_or("", |l| l.value.as_str());
    let rest: Vec<String> = labels
        .iter()
        .filter(|l| l.name != "__name__")
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    if rest.is_empty() && !name.is_empty() {
        return name.to_owned();
    }
    format!("{name}{{{}}}", rest.join(", "))
}

pub fn to_json(r: &v1::EvaluateResponse) -> Value {
    let mut out = json!({ "result_type": r.result_type });
    match r.result_type.as_str() {
        "scalar" => {
            out["time_ms"] = json!(r.time_ms);
            out["value"] = render::json_value(r.scalar());
        }
        "string" => {
            out["time_ms"] = json!(r.time_ms);
            out["value"] = json!(r.string);
        }
        _ => {
            out["series"] = r
                .series
                .iter()
                .map(|s| {
                    json!({
                        "labels": s.labels.iter().map(|l| (l.name.clone(), json!(l.value))).collect::<serde_json::Map<_, _>>(),
                        "samples": s.samples.iter().map(|p| json!([p.timestamp_ms, render::json_value(p.value())])).collect::<Vec<_>>(),
                    })
                })
                .collect();
        }
    }
    out
}

/// A CSV field, quoted when it must be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One row per sample: `series,timestamp_ms,value` (values as Prometheus writes them).
pub fn to_csv(r: &v1::EvaluateResponse) -> String {
    let mut out = String::from("series,timestamp_ms,value\n");
    match r.result_type.as_str() {
        "scalar" => out.push_str(&format!(",{},{}\n", r.time_ms, number(r.scalar()))),
        "string" => out.push_str(&format!(",{},{}\n", r.time_ms, csv_field(&r.string))),
        _ => {
            for s in &r.series {
                let name = csv_field(&series_name(&s.labels));
                for p in &s.samples {
                    out.push_str(&format!(
                        "{name},{},{}\n",
                        p.timestamp_ms,
                        number(p.value())
                    ));
                }
            }
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        render::non_finite(v).to_owned()
    }
}

pub fn print(r: &v1::EvaluateResponse, output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&to_json(r))?)?,
        Output::Csv => write!(out, "{}", to_csv(r))?,
        Output::Table => match r.result_type.as_str() {
            "scalar" => writeln!(out, "{}", render::number(r.scalar()))?,
            "string" => writeln!(out, "{}", escape(&r.string))?,
            _ if r.series.is_empty() => writeln!(out, "no series")?,
            _ => {
                let mut table = Table::new(&[("TIME", false), ("SERIES", false), ("VALUE", true)]);
                for s in &r.series {
                    let name = escape(&series_name(&s.labels)).into_owned();
                    for p in &s.samples {
                        table.row(vec![
                            render::timestamp(p.timestamp_ms),
                            name.clone(),
                            render::number(p.value()),
                        ]);
                    }
                }
                write!(out, "{}", table.render())?;
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> v1::Label {
        v1::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn bare_metric_names_keep_the_plain_form() {
        assert!(is_metric_name("go_goroutines"));
        assert!(is_metric_name("ns:rate5m"));
        assert!(!is_metric_name("rate(x[5m])"));
        assert!(!is_metric_name("a - b"));
        assert!(!is_metric_name("9lives"));
        assert!(!is_metric_name(""));
    }

    #[test]
    fn steps_aim_at_a_readable_number_of_points() {
        assert_eq!(auto_step_ms(600_000), 2_000);
        assert_eq!(auto_step_ms(10_000), 1_000);
        assert_eq!(auto_step_ms(7 * 86_400_000), 2_460_000);
        assert_eq!(auto_step_ms(3 * 3_600_000), 43_000);
        assert_eq!(auto_step_ms(5 * 3_600_000), 120_000);
    }

    #[test]
    fn long_ranges_fall_on_whole_steps_and_short_ones_stay() {
        let now = 1_795_000_123_456;
        let (start, end, step) = auto_range(now - 7 * 86_400_000, now);
        assert_eq!(step, 2_460_000);
        assert_eq!((start % step, end % step), (0, 0));
        assert!(end <= now && now - end < step);
        assert!(start <= now - 7 * 86_400_000);
        assert_eq!(auto_range(now - 600_000, now), (now - 600_000, now, 2_000));
    }

    #[test]
    fn results_print_as_json_and_csv() {
        let r = v1::EvaluateResponse {
            result_type: "matrix".into(),
            series: vec![v1::ResultSeries {
                labels: vec![label("__name__", "up"), label("service", "a,b")],
                samples: vec![
                    v1::Sample {
                        timestamp_ms: 1000,
                        value: Some(1.5),
                    },
                    v1::Sample {
                        timestamp_ms: 2000,
                        value: Some(f64::NAN),
                    },
                ],
            }],
            ..Default::default()
        };
        let j = to_json(&r);
        assert_eq!(j["series"][0]["labels"]["service"], "a,b");
        assert_eq!(j["series"][0]["samples"][1][1], "NaN");
        assert_eq!(
            to_csv(&r),
            "series,timestamp_ms,value\n\"up{service=\"\"a,b\"\"}\",1000,1.5\n\"up{service=\"\"a,b\"\"}\",2000,NaN\n"
        );
        let s = v1::EvaluateResponse {
            result_type: "scalar".into(),
            scalar: Some(2.0),
            time_ms: 5,
            ..Default::default()
        };
        assert_eq!(to_json(&s)["value"], 2.0);
        assert_eq!(to_csv(&s), "series,timestamp_ms,value\n,5,2\n");
    }
}
