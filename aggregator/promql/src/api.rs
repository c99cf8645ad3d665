//! The Prometheus HTTP API's JSON (`/api/v1/query`, `/api/v1/query_range`) and its
//! parameters: times and durations, written and read exactly as Prometheus does.

use std::fmt::Write as _;

use crate::error::Error;
use crate::eval::QueryValue;
use crate::source::Labels;

/// A sample value as Prometheus writes it: shortest round-trip text, exponent form below
/// 1e-6 and from 1e21, and `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust writes "1e-7" and "1.5e21"; Go writes "1e-07" and "1.5e+21".
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    format!("{v}")
}

/// A timestamp in milliseconds as Prometheus writes it: seconds, and when not whole, a
/// three-digit fraction.
pub fn format_timestamp(t_ms: i64) -> String {
    let mut s = String::new();
    write_timestamp(&mut s, t_ms);
    s
}

fn write_timestamp(out: &mut String, t_ms: i64) {
    if t_ms < 0 {
        out.push('-');
    }
    let abs = t_ms.unsigned_abs();
    out.push_str(itoa::Buffer::new().format(abs / 1000));
    let frac = abs % 1000;
    if frac != 0 {
        let digit = |d: u64| char::from(b'0' + d as u8);
        out.push('.');
        out.push(digit(frac / 100));
        out.push(digit(frac / 10 % 10));
        out.push(digit(frac % 10));
    }
}

/// [`format_value`] as a JSON string, written in place (its characters need no
/// escaping).
fn write_value(out: &mut String, v: f64) {
    out.push('"');
    let abs = v.abs();
    if v.is_finite() && (abs == 0.0 || (1e-6..1e21).contains(&abs)) {
        // The shortest digits that read back as `v`, as Go's 'f' format with precision
        // -1 writes them; zmij uses an exponent from 1e16 up and below 1e-4.
        let mut buffer = zmij::Buffer::new();
        let digits = buffer.format_finite(v);
        if digits.contains('e') {
            let _ = write!(out, "{v}");
        } else {
            out.push_str(digits.strip_suffix(".0").unwrap_or(digits));
        }
    } else {
        out.push_str(&format_value(v));
    }
    out.push('"');
}

fn write_str(out: &mut String, s: &str) {
    // serde_json escapes a string the same way for any input; it cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, (k, v)) in labels.0.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, k);
        out.push(':');
        write_str(out, v);
    }
    out.push('}');
}

fn write_point(out: &mut String, t_ms: i64, value: f64) {
    out.push('[');
    write_timestamp(out, t_ms);
    out.push(',');
    write_value(out, value);
    out.push(']');
}

/// The success body for a query result.
pub fn success_json(value: &QueryValue) -> String {
    // About 30 bytes a point.
    let points = match value {
        QueryValue::Vector(v) => v.len(),
        QueryValue::Matrix(m) => m.iter().map(|s| s.samples.len() + 1).sum(),
        _ => 1,
    };
    let mut out = String::with_capacity(64 + points.saturating_mul(32).min(1 << 30));
    out.push_str(r#"{"status":"success","data":{"resultType":"#);
    match value {
        QueryValue::Scalar { t_ms, value } => {
            out.push_str(r#""scalar","result":"#);
            write_point(&mut out, *t_ms, *value);
        }
        QueryValue::String { t_ms, value } => {
            out.push_str(r#""string","result":["#);
            write_timestamp(&mut out, *t_ms);
            out.push(',');
            write_str(&mut out, value);
            out.push(']');
        }
        QueryValue::Vector(v) => {
            out.push_str(r#""vector","result":["#);
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.labels);
                out.push_str(r#","value":"#);
                write_point(&mut out, s.t_ms, s.value);
                out.push('}');
            }
            out.push(']');
        }
        QueryValue::Matrix(m) => {
            out.push_str(r#""matrix","result":["#);
            for (i, s) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"metric":"#);
                write_labels(&mut out, &s.labels);
                out.push_str(r#","values":["#);
                for (j, (t, v)) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(&mut out, *t, *v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push_str("}}");
    out
}

/// The error body for a failed query.
pub fn error_json(err: &Error) -> String {
    error_json_with(err.error_type(), &err.to_string())
}

/// The error body with an explicit `errorType` (`timeout`, `unavailable`, ...).
pub fn error_json_with(error_type: &str, message: &str) -> String {
    let mut out = String::from(r#"{"status":"error","errorType":"#);
    write_str(&mut out, error_type);
    out.push_str(r#","error":"#);
    write_str(&mut out, message);
    out.push('}');
    out
}

/// The HTTP status Prometheus answers an error with.
pub fn http_status(error_type: &str) -> u16 {
    match error_type {
        "bad_data" => 400,
        "execution" => 422,
        "canceled" => 499,
        "timeout" | "unavailable" => 503,
        "not_found" => 404,
        _ => 500,
    }
}

/// The parameters of `/api/v1/query`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantRequest {
    pub query: String,
    pub time_ms: i64,
    pub timeout_ms: Option<i64>,
    pub lookback_ms: Option<i64>,
}

/// The parameters of `/api/v1/query_range`.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeRequest {
    pub query: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    pub timeout_ms: Option<i64>,
    pub lookback_ms: Option<i64>,
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn required<'p>(params: &'p [(String, String)], name: &str) -> Result<&'p str, Error> {
    param(params, name).ok_or_else(|| Error::bad_param(name, "missing"))
}

fn optional_duration(params: &[(String, String)], name: &str) -> Result<Option<i64>, Error> {
    match param(params, name) {
        None | Some("") => Ok(None),
        Some(v) => {
            let d = parse_duration(name, v)?;
            if d <= 0 {
                return Err(Error::bad_param(name, "must be positive"));
            }
            Ok(Some(d))
        }
    }
}

/// Reads `query`, `time` (default `now_ms`), `timeout` and `lookback_delta` from decoded
/// form or URL parameters; the last occurrence of a name wins.
pub fn parse_instant_request(
    params: &[(String, String)],
    now_ms: i64,
) -> Result<InstantRequest, Error> {
    let query = required(params, "query")?.to_string();
    let time_ms = match param(params, "time") {
        None | Some("") => now_ms,
        Some(t) => parse_time("time", t)?,
    };
    Ok(InstantRequest {
        query,
        time_ms,
        timeout_ms: optional_duration(params, "timeout")?,
        lookback_ms: optional_duration(params, "lookback_delta")?,
    })
}

/// Reads `query`, `start`, `end`, `step`, `timeout` and `lookback_delta`, with Prometheus'
/// checks: end not before start, a positive step, at most 11,000 steps.
pub fn parse_range_request(params: &[(String, String)]) -> Result<RangeRequest, Error> {
    let query = required(params, "query")?.to_string();
    let start_ms = parse_time("start", required(params, "start")?)?;
    let end_ms = parse_time("end", required(params, "end")?)?;
    if end_ms < start_ms {
        return Err(Error::bad_param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step_ms = parse_duration("step", required(params, "step")?)?;
    if step_ms <= 0 {
        return Err(Error::bad_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (i128::from(end_ms) - i128::from(start_ms)) / i128::from(step_ms)
        >= i128::from(crate::MAX_STEPS)
    {
        return Err(Error::bad_param(
            "step",
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    Ok(RangeRequest {
        query,
        start_ms,
        end_ms,
        step_ms,
        timeout_ms: optional_duration(params, "timeout")?,
        lookback_ms: optional_duration(params, "lookback_delta")?,
    })
}

/// A time parameter: Unix seconds with an optional fraction, or RFC 3339. Returns
/// milliseconds; a fraction is rounded to the millisecond as Prometheus does.
pub fn parse_time(name: &str, s: &str) -> Result<i64, Error> {
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs.abs() >= 9.2e15 {
            return Err(Error::bad_param(
                name,
                format!("cannot parse {s:?} to a valid timestamp"),
            ));
        }
        let whole = secs.trunc();
        let frac_ms = ((secs - whole) * 1000.0).round();
        return Ok(whole as i64 * 1000 + frac_ms as i64);
    }
    parse_rfc3339(s)
        .ok_or_else(|| Error::bad_param(name, format!("cannot parse {s:?} to a valid timestamp")))
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, to milliseconds (fraction truncated).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(&s[0..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    let (h, mi, sec) = (
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let frac = &r[..n];
        ms = digits(&format!("{:0<3}", &frac[..frac.len().min(3)]))?;
        rest = &r[n..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let v = digits(&rest[1..3])? * 3600 + digits(&rest[4..6])? * 60;
            if rb[0] == b'-' { -v } else { v }
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs * 1000 + ms)
}

/// A duration parameter (`step`, `timeout`, `lookback_delta`): float seconds or a
/// Prometheus duration such as `1m30s`, `1h`, `500ms`. Returns milliseconds.
pub fn parse_duration(name: &str, s: &str) -> Result<i64, Error> {
    let bad = || Error::bad_param(name, format!("cannot parse {s:?} to a valid duration"));
    if let Ok(secs) = s.parse::<f64>() {
        let ms = (secs * 1000.0).round();
        if !ms.is_finite() || ms.abs() >= 9.2e15 {
            return Err(bad());
        }
        return Ok(ms as i64);
    }
    // Units must come in this order, each at most once.
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return Err(bad());
        }
        let value: i64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        let idx = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        if idx < next_unit {
            return Err(bad());
        }
        next_unit = idx + 1;
        total = value
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Sample;
    use crate::source::Series;

    #[test]
    fn values_are_formatted_as_prometheus_does() {
        // The fast path of the JSON writer agrees with the formatting above.
        let mut bits: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            100.0,
            0.1,
            1e-6,
            9.99e20,
            1e16,
            123456789.0,
            1e-5,
        ];
        for _ in 0..100_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            values.push(f64::from_bits(bits));
            values.push((bits % 1_000_000_000) as f64 / 1000.0);
        }
        for v in values {
            let mut out = String::new();
            write_value(&mut out, v);
            let expected = format!("\"{}\"", format_value(v));
            // The same bits back, in as few digits (where two shortest forms are as near,
            // the last digit may differ).
            let back: f64 = out.trim_matches('"').parse().unwrap();
            if v.is_nan() {
                assert_eq!(out, "\"NaN\"");
                continue;
            }
            assert_eq!(back.to_bits(), v.to_bits(), "{out} for {v:e}");
            assert_eq!(out.len(), expected.len(), "{out} vs {expected}");
            assert_eq!(
                out.contains('e'),
                expected.contains('e'),
                "{out} vs {expected}"
            );
        }
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(-0.0), "-0");
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(format_value(123456789.125), "123456789.125");
        assert_eq!(format_value(1e20), "100000000000000000000");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(format_value(1.5e300), "1.5e+300");
        assert_eq!(format_value(1e-6), "0.000001");
        assert_eq!(format_value(1e-7), "1e-07");
        assert_eq!(format_value(-2.5e-10), "-2.5e-10");
    }

    #[test]
    fn timestamps_are_seconds_with_a_millisecond_fraction() {
        assert_eq!(format_timestamp(1_435_781_451_781), "1435781451.781");
        assert_eq!(format_timestamp(1_000), "1");
        assert_eq!(format_timestamp(1_500), "1.500");
        assert_eq!(format_timestamp(1_005), "1.005");
        assert_eq!(format_timestamp(-1_500), "-1.500");
        assert_eq!(format_timestamp(0), "0");
        assert_eq!(format_timestamp(i64::MIN), "-9223372036854775.808");
    }

    #[test]
    fn result_json_has_the_api_shape() {
        let v = QueryValue::Vector(vec![Sample {
            labels: Labels::new([("__name__", "up"), ("job", "a\"b")]),
            t_ms: 1_500,
            value: f64::NAN,
        }]);
        assert_eq!(
            success_json(&v),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1.500,"NaN"]}]}}"#
        );
        let m = QueryValue::Matrix(vec![Series {
            labels: Labels::default(),
            samples: vec![(0, 1.0), (15_000, 2.5)],
        }]);
        assert_eq!(
            success_json(&m),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[0,"1"],[15,"2.5"]]}]}}"#
        );
        assert_eq!(
            success_json(&QueryValue::Scalar {
                t_ms: 2000,
                value: f64::NEG_INFINITY
            }),
            r#"{"status":"success","data":{"resultType":"scalar","result":[2,"-Inf"]}}"#
        );
        assert_eq!(
            success_json(&QueryValue::String {
                t_ms: 2000,
                value: "hi".into()
            }),
            r#"{"status":"success","data":{"resultType":"string","result":[2,"hi"]}}"#
        );
        // Every body is valid JSON.
        for body in [success_json(&v), success_json(&m)] {
            serde_json::from_str::<serde_json::Value>(&body).unwrap();
        }
    }

    #[test]
    fn error_json_names_the_type() {
        let e = Error::UnsupportedFunction("label_replace".into());
        assert_eq!(
            error_json(&e),
            r#"{"status":"error","errorType":"bad_data","error":"unsupported function: label_replace"}"#
        );
        assert!(error_json(&Error::TooManySamples(10)).contains(r#""errorType":"execution""#));
        assert_eq!(
            error_json_with("timeout", "query timed out"),
            r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#
        );
    }

    #[test]
    fn times_parse_as_unix_seconds_or_rfc3339() {
        assert_eq!(
            parse_time("time", "1435781451.781").unwrap(),
            1_435_781_451_781
        );
        assert_eq!(parse_time("time", "1435781451").unwrap(), 1_435_781_451_000);
        assert_eq!(parse_time("time", "-1.5").unwrap(), -1_500);
        assert_eq!(
            parse_time("time", "2015-07-01T20:10:51.781Z").unwrap(),
            1_435_781_451_781
        );
        assert_eq!(
            parse_time("time", "2015-07-01T20:10:51Z").unwrap(),
            1_435_781_451_000
        );
        assert_eq!(
            parse_time("time", "2015-07-01T22:10:51.781+02:00").unwrap(),
            1_435_781_451_781
        );
        assert_eq!(parse_time("time", "1969-12-31T23:59:59Z").unwrap(), -1_000);
        assert_eq!(
            parse_time("time", "2024-02-29T00:00:00.5Z").unwrap(),
            1_709_164_800_500
        );
        for bad in [
            "",
            "abc",
            "NaN",
            "Inf",
            "2015-13-01T00:00:00Z",
            "2015-07-01 20:10:51Z",
            "2015-07-01T20:10:51",
        ] {
            let err = parse_time("start", bad).unwrap_err();
            assert!(err.to_string().contains("\"start\""), "{err}");
        }
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn requests_are_read_and_checked() {
        let r = parse_instant_request(&params(&[("query", "up")]), 5_000).unwrap();
        assert_eq!(
            (r.query.as_str(), r.time_ms, r.timeout_ms),
            ("up", 5_000, None)
        );
        let r = parse_instant_request(
            &params(&[
                ("query", "up"),
                ("time", "10.5"),
                ("timeout", "30s"),
                ("lookback_delta", "1m"),
            ]),
            0,
        )
        .unwrap();
        assert_eq!(
            (r.time_ms, r.timeout_ms, r.lookback_ms),
            (10_500, Some(30_000), Some(60_000))
        );
        let e = parse_instant_request(&params(&[("time", "1")]), 0).unwrap_err();
        assert_eq!(e.to_string(), "invalid parameter \"query\": missing");
        assert!(parse_instant_request(&params(&[("query", "up"), ("timeout", "0")]), 0).is_err());

        let ok = [
            ("query", "up"),
            ("start", "0"),
            ("end", "1970-01-02T00:00:00Z"),
            ("step", "1h"),
        ];
        let r = parse_range_request(&params(&ok)).unwrap();
        assert_eq!(
            (r.start_ms, r.end_ms, r.step_ms),
            (0, 86_400_000, 3_600_000)
        );
        for (bad, name) in [
            (
                [
                    ("query", "up"),
                    ("start", "10"),
                    ("end", "5"),
                    ("step", "1"),
                ],
                "end",
            ),
            (
                [("query", "up"), ("start", "0"), ("end", "5"), ("step", "0")],
                "step",
            ),
            (
                [
                    ("query", "up"),
                    ("start", "0"),
                    ("end", "5"),
                    ("step", "-1"),
                ],
                "step",
            ),
            (
                [
                    ("query", "up"),
                    ("start", "0"),
                    ("end", "11000"),
                    ("step", "1"),
                ],
                "step",
            ),
            (
                [("query", "up"), ("start", "x"), ("end", "5"), ("step", "1")],
                "start",
            ),
        ] {
            let e = parse_range_request(&params(&bad)).unwrap_err();
            assert!(e.to_string().contains(&format!("\"{name}\"")), "{e}");
            assert_eq!(http_status(e.error_type()), 400);
        }
        assert!(
            parse_range_request(&params(&[
                ("query", "up"),
                ("start", "0"),
                ("end", "10999"),
                ("step", "1")
            ]))
            .is_ok()
        );
        assert_eq!(http_status("execution"), 422);
        assert_eq!(http_status("timeout"), 503);
    }

    #[test]
    fn durations_parse_as_seconds_or_units() {
        assert_eq!(parse_duration("step", "15s").unwrap(), 15_000);
        assert_eq!(parse_duration("step", "1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration("step", "1h").unwrap(), 3_600_000);
        assert_eq!(parse_duration("step", "500ms").unwrap(), 500);
        assert_eq!(parse_duration("step", "1d2h").unwrap(), 93_600_000);
        assert_eq!(parse_duration("step", "15").unwrap(), 15_000);
        assert_eq!(parse_duration("step", "0.5").unwrap(), 500);
        assert_eq!(parse_duration("step", "2.25").unwrap(), 2_250);
        for bad in ["", "s", "15x", "1s1m", "1m1m", "1e400", "NaN", "-"] {
            assert!(parse_duration("step", bad).is_err(), "{bad}");
        }
    }
}
