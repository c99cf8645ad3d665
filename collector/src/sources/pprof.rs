//! net/http/pprof's goroutine profile: the goroutine count from the first line of
//! `/debug/pprof/goroutine?debug=1` ("goroutine profile: total 42").

pub const GOROUTINE_PATH: &str = "/debug/pprof/goroutine?debug=1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("goroutine profile does not start with \"goroutine profile: total N\": {line:?}")]
pub struct PprofError {
    line: String,
}

/// The goroutine count from the profile's first line.
pub fn parse_goroutine_total(first_line: &[u8]) -> Result<u64, PprofError> {
    let bad = || PprofError {
        line: String::from_utf8_lossy(&first_line[..first_line.len().min(80)]).into_owned(),
    };
    std::str::from_utf8(first_line)
        .ok()
        .and_then(|l| l.trim_end().strip_prefix("goroutine profile: total "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_total() {
        assert_eq!(
            parse_goroutine_total(b"goroutine profile: total 1234"),
            Ok(1234)
        );
        assert_eq!(
            parse_goroutine_total(b"goroutine profile: total 7\r"),
            Ok(7)
        );
    }

    #[test]
    fn rejects_anything_else() {
        for line in [
            &b"404 page not found"[..],
            b"goroutine profile: total -1",
            b"",
            b"\xff\xfe",
        ] {
            assert!(parse_goroutine_total(line).is_err());
        }
    }
}
