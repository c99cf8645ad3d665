//! How long to wait before retrying: a doubling, jittered backoff between `min_backoff`
//! and `max_backoff`, lengthened to what a `Retry-After` answer asks.

use std::time::{Duration, SystemTime};

use hyper::header::HeaderValue;

/// The longest `Retry-After` honoured: a receiver asking for more (or a garbled date)
/// must not silence the export for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The longest wait after the current number of failures: `min * 2^failures`,
    /// at most `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The wait before the next attempt, counting one more failure. Drawn from the
    /// upper half of the ceiling ("equal jitter"): senders that failed together do not
    /// retry together, and the wait still grows. At least `retry_after` (capped at
    /// [`MAX_RETRY_AFTER`]) when the receiver said when to come back.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let nanos = half.as_nanos().min(u64::MAX as u128) as u64;
        let wait = half + Duration::from_nanos(fastrand::u64(0..=nanos));
        match retry_after {
            Some(asked) => wait.max(asked.min(MAX_RETRY_AFTER)),
            None => wait,
        }
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A `Retry-After` header: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in
/// the past means now; anything unparsable is ignored.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time".
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_100ms_to_30s() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling().as_millis());
            b.next(None);
        }
        assert_eq!(
            ceilings,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
        for _ in 0..100 {
            b.next(None); // no overflow however long the outage
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn waits_are_jittered_within_the_upper_half() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
            for _ in 0..4 {
                b.next(None);
            }
            let ceiling = b.ceiling(); // 1.6 s
            let wait = b.next(None);
            assert!(wait >= ceiling / 2 && wait <= ceiling, "{wait:?}");
            seen.insert(wait);
        }
        assert!(
            seen.len() > 50,
            "not jittered: {} distinct waits",
            seen.len()
        );
    }

    #[test]
    fn retry_after_lengthens_the_wait_but_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(b.next(Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(b.next(Some(Duration::from_secs(86_400))), MAX_RETRY_AFTER);
        // A Retry-After shorter than the backoff does not shorten it.
        let w = b.next(Some(Duration::ZERO));
        assert!(w >= Duration::from_millis(200));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let p = |s: &'static str| parse_retry_after(&HeaderValue::from_static(s), now);
        assert_eq!(p("120"), Some(Duration::from_secs(120)));
        assert_eq!(p(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            p("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            p("Sun, 06 Nov 1994 08:50:07 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(p("Sun, 06 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(p("-5"), None);
        assert_eq!(p("1.5"), None);
        assert_eq!(p("soon"), None);
        assert_eq!(p(""), None);
    }
}
