//! What a goroutine leak is made of: the stack signature that accounts for the growth
//! between two summaries, and the pattern its wait reason and frames name.

use goroscope_proto::v1;

/// The leak patterns the wait reason and frames tell apart (docs/detection.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `chan send` / `chan receive` with no partner: an unclosed or abandoned channel.
    AbandonedChannel,
    /// `select` forever on a context's `Done` (or nothing else): a context never
    /// cancelled or never propagated.
    ContextNeverCancelled,
    /// `semacquire`, `sync.WaitGroup.Wait`, `sync.Mutex.Lock`: a WaitGroup's Add and
    /// Done out of step, or a lock never released.
    WaitGroupOrLock,
    /// `sleep`, timers, `time.Ticker` loops: a ticker or timer never stopped.
    TickerOrTimer,
    /// `IO wait` in `net/http`'s connection loops: an HTTP client without a timeout or
    /// a body never closed.
    HttpClientWithoutTimeout,
    /// None of those.
    Other,
}

impl Pattern {
    pub fn id(self) -> &'static str {
        match self {
            Pattern::AbandonedChannel => "abandoned-channel",
            Pattern::ContextNeverCancelled => "context-never-cancelled",
            Pattern::WaitGroupOrLock => "waitgroup-or-lock",
            Pattern::TickerOrTimer => "ticker-or-timer",
            Pattern::HttpClientWithoutTimeout => "http-client-without-timeout",
            Pattern::Other => "other",
        }
    }

    pub fn advice(self) -> &'static str {
        match self {
            Pattern::AbandonedChannel => {
                "Goroutines wait on a channel no one will ever use again: close it when done, \
                 or give the sender a buffered channel or a select with a way out."
            }
            Pattern::ContextNeverCancelled => {
                "Goroutines wait for a context that is never cancelled: pass the request's \
                 context down instead of context.Background(), and cancel what you create."
            }
            Pattern::WaitGroupOrLock => {
                "Goroutines wait on a WaitGroup or a lock that is never released: check that \
                 every Add has its Done and every Lock its Unlock, on every path."
            }
            Pattern::TickerOrTimer => {
                "Goroutines loop on a ticker or timer that is never stopped: stop tickers \
                 with Stop and end the loop when the work is done."
            }
            Pattern::HttpClientWithoutTimeout => {
                "Goroutines wait on HTTP connections that never answer: give the client a \
                 Timeout (or the request a context deadline) and close response bodies."
            }
            Pattern::Other => {
                "One stack keeps gaining goroutines that never finish: look at where they \
                 wait and what should wake them."
            }
        }
    }
}

/// The pattern a signature's wait reason and frames name.
pub fn pattern(wait_reason: &str, frames: &[String]) -> Pattern {
    let has = |needle: &str| frames.iter().any(|f| f.contains(needle));
    let r = wait_reason;
    if has("net/http.") && (r == "IO wait" || r == "select" || has("persistConn")) {
        return Pattern::HttpClientWithoutTimeout;
    }
    if r.starts_with("chan send") || r.starts_with("chan receive") {
        return Pattern::AbandonedChannel;
    }
    if r.starts_with("semacquire")
        || r.starts_with("sync.WaitGroup.Wait")
        || r.starts_with("sync.Mutex.Lock")
        || r.starts_with("sync.RWMutex")
        || has("sync.(*WaitGroup).Wait")
        || has("sync.(*Mutex).Lock")
    {
        return Pattern::WaitGroupOrLock;
    }
    if r == "sleep" || has("time.Sleep") || has("time.(*Ticker)") || has("time.Tick") {
        return Pattern::TickerOrTimer;
    }
    if r.starts_with("select") && (has("context.") || has(".Done")) {
        return Pattern::ContextNeverCancelled;
    }
    if r.starts_with("select") {
        // A select on channels alone: as good as an abandoned channel, unless it waits
        // on a ticker's channel (frames do not say; the wait reason stays `select`).
        return Pattern::ContextNeverCancelled;
    }
    Pattern::Other
}

/// The signature that grew most from `earlier` to `later`, with its growth, when it
/// accounts for at least `min_share` of the total growth.
pub fn growing_signature<'a>(
    earlier: &v1::StackSummary,
    later: &'a v1::StackSummary,
    min_share: f64,
) -> Option<(&'a v1::StackGroup, u64)> {
    let before = |frames: &[String]| {
        earlier
            .groups
            .iter()
            .filter(|g| g.frames == frames)
            .map(|g| g.count)
            .sum::<u64>()
    };
    let total_growth = later.total.saturating_sub(earlier.total);
    if total_growth == 0 {
        return None;
    }
    let (group, growth) = later
        .groups
        .iter()
        .map(|g| (g, g.count.saturating_sub(before(&g.frames))))
        .max_by_key(|(_, growth)| *growth)?;
    (growth > 0 && growth as f64 >= min_share * total_growth as f64).then_some((group, growth))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn wait_reasons_and_frames_name_the_pattern() {
        use Pattern::*;
        let cases = [
            (
                "chan receive",
                frames(&["main.(*Pool).watch"]),
                AbandonedChannel,
            ),
            ("chan send", frames(&["main.fetch.func1"]), AbandonedChannel),
            (
                "select",
                frames(&["main.handle.func1", "context.(*cancelCtx).Done"]),
                ContextNeverCancelled,
            ),
            (
                "sync.WaitGroup.Wait",
                frames(&["main.batch"]),
                WaitGroupOrLock,
            ),
            (
                "semacquire",
                frames(&[
                    "sync.runtime_SemacquireMutex",
                    "sync.(*Mutex).Lock",
                    "main.f",
                ]),
                WaitGroupOrLock,
            ),
            (
                "chan receive",
                frames(&["time.(*Ticker).Stop", "main.poll"]),
                AbandonedChannel,
            ),
            ("sleep", frames(&["time.Sleep", "main.loop"]), TickerOrTimer),
            (
                "IO wait",
                frames(&[
                    "internal/poll.runtime_pollWait",
                    "net/http.(*persistConn).readLoop",
                ]),
                HttpClientWithoutTimeout,
            ),
            (
                "select",
                frames(&["net/http.(*persistConn).roundTrip", "net/http.(*Client).do"]),
                HttpClientWithoutTimeout,
            ),
            ("", frames(&["main.work"]), Other),
        ];
        for (reason, f, want) in cases {
            assert_eq!(pattern(reason, &f), want, "{reason} {f:?}");
        }
        assert!(AbandonedChannel.advice().contains("channel"));
        assert_eq!(HttpClientWithoutTimeout.id(), "http-client-without-timeout");
    }

    fn summary(total: u64, groups: &[(&str, u64)]) -> v1::StackSummary {
        v1::StackSummary {
            total,
            groups: groups
                .iter()
                .map(|(f, count)| v1::StackGroup {
                    frames: vec![(*f).to_owned()],
                    count: *count,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_signature_behind_the_growth_is_found_or_none_is_claimed() {
        let a = summary(120, &[("main.leak", 100), ("main.serve", 20)]);
        let b = summary(620, &[("main.leak", 590), ("main.serve", 30)]);
        let (g, growth) = growing_signature(&a, &b, 0.5).unwrap();
        assert_eq!((g.frames[0].as_str(), growth), ("main.leak", 490));
        // Growth spread over many signatures: no single culprit.
        let c = summary(200, &[("a", 50), ("b", 50), ("c", 50), ("d", 50)]);
        let d = summary(400, &[("a", 100), ("b", 100), ("c", 100), ("d", 100)]);
        assert!(growing_signature(&c, &d, 0.5).is_none());
        // No growth at all.
        assert!(growing_signature(&b, &a, 0.5).is_none());
    }
}
