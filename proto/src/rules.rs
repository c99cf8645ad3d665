//! The rules both ends of the wire enforce on names and labels, in one place: the
//! collector refuses a bad setting at start and trims what comes from a process before
//! sending; the aggregator refuses only the item that still breaks them.
//!
//! Names follow Prometheus: a label name is `[a-zA-Z_][a-zA-Z0-9_]*`, a metric name
//! `[a-zA-Z_:][a-zA-Z0-9_:]*`. Names starting with `__` are reserved, as in Prometheus.

use std::borrow::Cow;

/// Labels one target may carry, at most.
pub const MAX_LABELS: usize = 64;
/// Longest label name, in bytes.
pub const MAX_LABEL_NAME: usize = 128;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 1024;
/// Longest metric name, in bytes.
pub const MAX_METRIC_NAME: usize = 256;
/// Label names that identify a target and are set from its id, never as labels.
pub const RESERVED_LABELS: [&str; 2] = ["host", "pid"];
/// The only environment variables read from a process: the Go runtime's settings.
/// Nothing else of an environment is ever read, kept or sent (it may hold secrets).
pub const RUNTIME_ENV: [&str; 5] = ["GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG", "GOTRACEBACK"];

/// Why a name or label breaks the rules; the text completes "label NAME ..." or
/// "metric NAME ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("name is empty")]
    EmptyName,
    #[error("name is {len} bytes, longer than {max}")]
    NameTooLong { len: usize, max: usize },
    #[error(
        "name may hold only ASCII letters, digits and '_'{colon}, and must not start with a digit"
    )]
    NameSyntax { colon: &'static str },
    #[error("name starts with \"__\", which is reserved")]
    NameReserved,
    #[error("name is set by goroscope from the target's id")]
    NameIdentifies,
    #[error("value is {len} bytes, longer than {max}")]
    ValueTooLong { len: usize, max: usize },
    #[error("{count} labels, more than {max}")]
    TooMany { count: usize, max: usize },
}

fn check_name(name: &str, max: usize, colon: bool) -> Result<(), RuleError> {
    if name.is_empty() {
        return Err(RuleError::EmptyName);
    }
    if name.len() > max {
        return Err(RuleError::NameTooLong {
            len: name.len(),
            max,
        });
    }
    let ok_first = |b: u8| b.is_ascii_alphabetic() || b == b'_' || (colon && b == b':');
    let ok_rest = |b: u8| ok_first(b) || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !ok_first(bytes[0]) || !bytes[1..].iter().all(|&b| ok_rest(b)) {
        return Err(RuleError::NameSyntax {
            colon: if colon { " or ':'" } else { "" },
        });
    }
    if name.starts_with("__") {
        return Err(RuleError::NameReserved);
    }
    Ok(())
}

/// A label name: `[a-zA-Z_][a-zA-Z0-9_]*`, at most [`MAX_LABEL_NAME`] bytes, not
/// reserved (`__*`, `host`, `pid`).
pub fn check_label_name(name: &str) -> Result<(), RuleError> {
    check_name(name, MAX_LABEL_NAME, false)?;
    if RESERVED_LABELS.contains(&name) {
        return Err(RuleError::NameIdentifies);
    }
    Ok(())
}

/// A label value: any UTF-8 text of at most [`MAX_LABEL_VALUE`] bytes (control
/// characters included: they are stored as sent and escaped when shown).
pub fn check_label_value(value: &str) -> Result<(), RuleError> {
    if value.len() > MAX_LABEL_VALUE {
        return Err(RuleError::ValueTooLong {
            len: value.len(),
            max: MAX_LABEL_VALUE,
        });
    }
    Ok(())
}

/// A metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, at most [`MAX_METRIC_NAME`] bytes.
pub fn check_metric_name(name: &str) -> Result<(), RuleError> {
    check_name(name, MAX_METRIC_NAME, true)
}

/// One label, name then value; the error names which part is wrong.
pub fn check_label(name: &str, value: &str) -> Result<(), LabelError> {
    check_label_name(name).map_err(|rule| LabelError {
        part: Part::Name,
        rule,
    })?;
    check_label_value(value).map_err(|rule| LabelError {
        part: Part::Value,
        rule,
    })
}

/// A label set's size.
pub fn check_label_count(count: usize) -> Result<(), RuleError> {
    if count > MAX_LABELS {
        return Err(RuleError::TooMany {
            count,
            max: MAX_LABELS,
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Name,
    Value,
}

/// A label that breaks the rules, and whether its name or its value does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {rule}", match .part { Part::Name => "label", Part::Value => "label value:" })]
pub struct LabelError {
    pub part: Part,
    pub rule: RuleError,
}

/// A value from a process cut to at most [`MAX_LABEL_VALUE`] bytes, on a character
/// boundary. Borrowed when it already fits.
pub fn trim_label_value(value: &str) -> Cow<'_, str> {
    if value.len() <= MAX_LABEL_VALUE {
        return Cow::Borrowed(value);
    }
    let mut end = MAX_LABEL_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(value[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_rules() {
        assert!(check_metric_name("go_goroutines").is_ok());
        assert!(check_metric_name("job:rate5m").is_ok());
        assert_eq!(check_metric_name(""), Err(RuleError::EmptyName));
        assert!(check_metric_name("9lives").is_err());
        assert!(check_metric_name("go-goroutines").is_err());
        assert!(check_metric_name(&"a".repeat(MAX_METRIC_NAME + 1)).is_err());
        assert!(check_label_name("go_version").is_ok());
        assert!(check_label_name("go:version").is_err());
        assert_eq!(check_label_name("__name__"), Err(RuleError::NameReserved));
        assert_eq!(check_label_name("host"), Err(RuleError::NameIdentifies));
        assert!(check_label_name("zone").is_ok());
    }

    #[test]
    fn a_label_error_says_whether_the_name_or_the_length_is_wrong() {
        let e = check_label("cluster-name", "prod").unwrap_err();
        assert_eq!(e.part, Part::Name);
        assert!(e.to_string().contains("letters, digits and '_'"), "{e}");
        let e = check_label("cluster", &"x".repeat(2000)).unwrap_err();
        assert_eq!(e.part, Part::Value);
        assert_eq!(
            e.to_string(),
            "label value: value is 2000 bytes, longer than 1024"
        );
    }

    #[test]
    fn trimming_keeps_characters_whole() {
        let v = "é".repeat(MAX_LABEL_VALUE); // 2 bytes each
        let t = trim_label_value(&v);
        assert!(t.len() <= MAX_LABEL_VALUE && t.len() == MAX_LABEL_VALUE);
        let odd = format!("a{v}");
        let t = trim_label_value(&odd);
        assert_eq!(t.len(), MAX_LABEL_VALUE - 1);
        assert!(matches!(trim_label_value("short"), Cow::Borrowed(_)));
    }
}
