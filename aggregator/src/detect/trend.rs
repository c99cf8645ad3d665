//! Trend detectors over one series: is it really rising (Mann-Kendall), how fast
//! (Theil-Sen), and by how much over the window. The per-diagnosis detectors build on
//! [`rising`]; [`thread_leak`] and [`oom_risk`] need nothing else.

use serde_json::json;

use super::stats::{Line, mann_kendall, theil_sen};
use super::window::Window;

/// A window too short to call a trend: at least this long and this many points.
pub const MIN_COVERED_S: f64 = 180.0;
pub const MIN_POINTS: usize = 12;
/// A trend is called below this p value.
pub const MAX_P: f64 = 0.01;

/// What one detector found, with its evidence and advice.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The diagnosis id (`thread-leak`, `oom-risk`, ...).
    pub diagnosis: &'static str,
    /// The numbers behind it: window, slope, p value, first and last values, ...
    pub evidence: serde_json::Value,
    /// One or two sentences for the operator.
    pub advice: String,
}

/// A rise called by the trend test, and what the window says of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rise {
    pub line: Line,
    /// Mann-Kendall p value and Kendall's tau.
    pub p: f64,
    pub tau: f64,
    /// The line's values at the window's start and end: the growth, robust to noise.
    pub from: f64,
    pub to: f64,
    pub window_s: f64,
}

impl Rise {
    pub fn evidence(&self) -> serde_json::Value {
        json!({
            "window_s": self.window_s,
            "slope_per_min": self.line.slope * 60.0,
            "from": self.from,
            "to": self.to,
            "mann_kendall_p": self.p,
            "kendall_tau": self.tau,
        })
    }
}

/// The window's rise when it is long enough and the trend test calls it, and it grew
/// by at least `min_growth` (absolute) and `min_ratio` (relative to where it started).
pub fn rising(w: &Window, min_growth: f64, min_ratio: f64) -> Option<Rise> {
    if w.covered() < MIN_COVERED_S || w.len() < MIN_POINTS {
        return None;
    }
    let points = w.points();
    let trend = mann_kendall(&points)?;
    if trend.p >= MAX_P || trend.s <= 0 {
        return None;
    }
    let line = theil_sen(&points)?;
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let (from, to) = (line.at(t0), line.at(t1));
    let growth = to - from;
    if line.slope <= 0.0 || growth < min_growth || growth < min_ratio * from.abs() {
        return None;
    }
    Some(Rise {
        line,
        p: trend.p,
        tau: trend.tau,
        from,
        to,
        window_s: t1 - t0,
    })
}

/// `thread-leak`: OS threads keep rising (by at least 8 and 25% over the window) and
/// exceed 1.5 × GOMAXPROCS when it is known. Needs only `/proc` (`process_threads`).
pub fn thread_leak(threads: &Window, gomaxprocs: Option<f64>) -> Option<Finding> {
    let rise = rising(threads, 8.0, 0.25)?;
    let (_, now) = threads.last()?;
    if let Some(procs) = gomaxprocs
        && now <= 1.5 * procs
    {
        return None;
    }
    let mut evidence = rise.evidence();
    evidence["threads"] = json!(now);
    if let Some(procs) = gomaxprocs {
        evidence["gomaxprocs"] = json!(procs);
    }
    Some(Finding {
        diagnosis: "thread-leak",
        evidence,
        advice: "OS threads keep growing while GOMAXPROCS is fixed: goroutines are blocked \
                 in raw syscalls or cgo calls, or hold threads with runtime.LockOSThread \
                 without unlocking. Look for those stacks in a goroutine dump."
            .into(),
    })
}

/// `oom-risk`: memory (RSS, or the cgroup's usage) trends towards `limit` and the
/// robust line reaches it within `horizon_s`; says when.
pub fn oom_risk(memory: &Window, limit: f64, horizon_s: f64) -> Option<Finding> {
    if !(limit.is_finite() && limit > 0.0) {
        return None;
    }
    let rise = rising(memory, 0.0, 0.0)?;
    let (now_t, now) = memory.last()?;
    let at = rise.line.reaches(limit)?;
    let in_s = (at - now_t).max(0.0);
    if in_s > horizon_s {
        return None;
    }
    let mut evidence = rise.evidence();
    evidence["limit_bytes"] = json!(limit);
    evidence["now_bytes"] = json!(now);
    evidence["limit_in_s"] = json!(in_s);
    Some(Finding {
        diagnosis: "oom-risk",
        evidence,
        advice: format!(
            "Memory grows towards its limit and reaches it in about {} at this rate: the \
             kernel will kill the process then. Find what grows (heap, goroutines, off-heap) \
             before it does.",
            humantime::format_duration(std::time::Duration::from_secs(in_s as u64))
        ),
    })
}

/// `goroutine-explosion`: the goroutine count jumped (Pettitt's change point) by at
/// least 500 and to at least three times its level before, a burst rather than a slow
/// leak.
pub fn goroutine_explosion(goroutines: &Window) -> Option<Finding> {
    if goroutines.len() < 6 {
        return None;
    }
    let points = goroutines.points();
    let change = super::stats::pettitt(&points)?;
    let jump = change.after - change.before;
    if change.p >= MAX_P || jump < 500.0 || change.after < 3.0 * change.before.max(1.0) {
        return None;
    }
    // A burst happens within seconds; a steady climb to the same level is a leak.
    let fastest = fastest_rise(&points, BURST_S);
    if fastest < 0.5 * jump {
        return None;
    }
    Some(Finding {
        diagnosis: "goroutine-explosion",
        evidence: json!({
            "at_s": change.at,
            "before": change.before,
            "after": change.after,
            "pettitt_p": change.p,
            "rise_within_15s": fastest,
        }),
        advice: "The goroutine count jumped by thousands at once: something starts a \
                 goroutine per request or per item without a bound. Cap it with a worker \
                 pool or a semaphore; each goroutine costs at least a 2 KiB stack and GC work."
            .into(),
    })
}

/// How quickly a burst happens, at most.
pub const BURST_S: f64 = 15.0;

/// The largest rise between two points at most `span` seconds apart.
pub fn fastest_rise(points: &[(f64, f64)], span: f64) -> f64 {
    let mut best: f64 = 0.0;
    for (i, &(t0, v0)) in points.iter().enumerate() {
        for &(t1, v1) in &points[i + 1..] {
            if t1 - t0 > span {
                break;
            }
            best = best.max(v1 - v0);
        }
    }
    best
}

/// `forced-gc`: garbage collections forced by the program (`runtime.GC()`) keep
/// happening: at least 3 in the window, and still rising.
pub fn forced_gc(forced_cycles: &Window) -> Option<Finding> {
    let rise = rising(forced_cycles, 3.0, 0.0)?;
    let mut evidence = rise.evidence();
    evidence["forced_in_window"] = json!(rise.to - rise.from);
    Some(Finding {
        diagnosis: "forced-gc",
        evidence,
        advice: "The program calls runtime.GC() by hand, again and again: each call is a \
                 full collection with its pauses and CPU. Remove the calls and tune GOGC or \
                 GOMEMLIMIT instead."
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(f: impl Fn(f64) -> f64, seconds: u32, every: u32) -> Window {
        let mut w = Window::new(1800.0);
        for t in (0..seconds).step_by(every as usize) {
            let t = f64::from(t);
            w.push(t, f(t));
        }
        w
    }

    /// Bounded noise from a hash of the time (splitmix64), in [0, amplitude).
    fn noise(t: f64, amplitude: f64) -> f64 {
        let mut z = (t as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 * amplitude
    }

    #[test]
    fn a_thread_leak_is_called_on_a_rise_and_not_on_noise() {
        // One thread a minute for ten minutes, sampled every 10 s, with jitter of 3.
        let leak = window(|t| 10.0 + t / 60.0 + noise(t, 3.0), 600, 10);
        let f = thread_leak(&leak, Some(4.0)).unwrap();
        assert_eq!(f.diagnosis, "thread-leak");
        let slope = f.evidence["slope_per_min"].as_f64().unwrap();
        assert!((0.7..1.3).contains(&slope), "{f:?}");
        // Threads swinging with load but bounded: nothing.
        let busy = window(|t| 12.0 + noise(t, 8.0), 600, 10);
        assert!(thread_leak(&busy, Some(4.0)).is_none());
        // Rising, but still within 1.5 × GOMAXPROCS: a program scaling up.
        let scaling = window(|t| 2.0 + t / 120.0, 600, 10);
        assert!(thread_leak(&scaling, Some(16.0)).is_none());
        // Too short a window to call anything.
        let short = window(|t| 10.0 + t, 60, 5);
        assert!(thread_leak(&short, None).is_none());
    }

    #[test]
    fn a_burst_of_goroutines_is_an_explosion_and_a_swing_is_not() {
        let burst = window(
            |t| {
                if t < 300.0 {
                    40.0 + noise(t, 5.0)
                } else {
                    20_040.0
                }
            },
            600,
            10,
        );
        let f = goroutine_explosion(&burst).unwrap();
        assert_eq!(f.evidence["at_s"].as_f64(), Some(290.0));
        // Hundreds up and down under load: bounded, no explosion.
        let swing = window(|t| 100.0 + noise(t, 700.0), 600, 10);
        assert!(goroutine_explosion(&swing).is_none());
        // A slow leak is a leak, not an explosion.
        let slow = window(|t| 50.0 + t, 600, 10);
        assert!(goroutine_explosion(&slow).is_none());
    }

    #[test]
    fn forced_collections_are_called_when_they_keep_coming() {
        let forcing = window(|t| (t / 30.0).floor(), 600, 10);
        assert_eq!(forced_gc(&forcing).unwrap().diagnosis, "forced-gc");
        let once = window(|t| if t > 100.0 { 1.0 } else { 0.0 }, 600, 10);
        assert!(forced_gc(&once).is_none());
    }

    #[test]
    fn oom_risk_says_when_the_limit_will_be_hit() {
        // 1 MiB a minute towards a 512 MiB limit from 480 MiB: about 22 minutes left
        // at the window's end (10 minutes in).
        let mib = 1024.0 * 1024.0;
        let w = window(
            |t| 480.0 * mib + t / 60.0 * mib + noise(t, 0.2 * mib),
            600,
            10,
        );
        let f = oom_risk(&w, 512.0 * mib, 3600.0).unwrap();
        let in_s = f.evidence["limit_in_s"].as_f64().unwrap();
        assert!((1200.0..1500.0).contains(&in_s), "{f:?}");
        assert!(f.advice.contains("reaches it in about"), "{}", f.advice);
        // Beyond the horizon, falling, or no limit: nothing.
        assert!(oom_risk(&w, 512.0 * mib, 600.0).is_none());
        let falling = window(|t| 500.0 * mib - t * 1000.0, 600, 10);
        assert!(oom_risk(&falling, 512.0 * mib, 3600.0).is_none());
        assert!(oom_risk(&w, f64::INFINITY, 3600.0).is_none());
    }
}
