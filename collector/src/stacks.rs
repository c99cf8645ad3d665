//! When to read a target's goroutine stacks, within what it can afford.
//!
//! A goroutine profile costs the target CPU to walk and print every stack, and
//! `debug=2` (net/http/pprof answers it with `runtime.Stack(all)`) stops every goroutine
//! while it is written: on Go 1.26 with 100,000 parked goroutines, `debug=1` takes about
//! 90 ms of the target's CPU and `debug=2` about 530 ms; at 10,000 goroutines a debug=2
//! stalls the service for about 80 ms (docs/benchmarks.md). Each target has a pause budget, a
//! fraction of its wall time (`stacks.pause_budget`, 0.2% by default) that stack
//! requests may take. Credit accrues at that rate (up to [`MAX_CREDIT`] worth of it);
//! a request is made only when the credit covers what it is expected to take (the
//! last measured cost per goroutine times the goroutines now), and what it took is
//! then charged. So a small service is read every interval, and one with 100,000
//! goroutines every minute or so (debug=1) and every few minutes (debug=2).
//!
//! Beyond the budget, goroutine counts past `stacks.max_goroutines` (debug=1) or
//! `stacks.max_goroutines_full` (debug=2) are never read. Every request not made is a
//! skip with a one-line reason, sent to the aggregator like a summary and counted.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use tokio::time::Instant;

type Labels = Vec<(&'static str, String)>;

/// Stack reads and skips, registered on the collector's own `/metrics`.
pub struct StackMetrics {
    /// Reads made, by source.
    pub reads: Family<Labels, Counter>,
    /// Time the targets spent answering them, by source.
    pub read_seconds: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Reads not made or failed, by source and reason (budget, goroutines, failed).
    pub skips: Family<Labels, Counter>,
}

pub static METRICS: LazyLock<StackMetrics> = LazyLock::new(|| StackMetrics {
    reads: Family::default(),
    read_seconds: Family::default(),
    skips: Family::default(),
});

impl StackMetrics {
    pub fn read(&self, kind: Kind, took: Duration) {
        let labels = vec![("source", kind.source().to_owned())];
        self.reads.get_or_create(&labels).inc();
        self.read_seconds
            .get_or_create(&labels)
            .inc_by(took.as_secs_f64());
    }

    pub fn skipped(&self, kind: Kind, reason: &'static str) {
        self.skips
            .get_or_create(&vec![
                ("source", kind.source().to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }
}

/// Credit never accrues beyond this much of the budget: a target idle for an hour
/// does not earn an hour of stack reads at once.
pub const MAX_CREDIT: Duration = Duration::from_secs(900);

/// Costs assumed before the first measurement, per goroutine.
const FIRST_COST_GROUPED: Duration = Duration::from_micros(1);
const FIRST_COST_EACH: Duration = Duration::from_micros(6);

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StacksConfig {
    /// Read goroutine stacks at all.
    pub enabled: bool,
    /// The fraction of a target's wall time its stack requests may take (0.002: 0.2%).
    pub pause_budget: f64,
    /// How often each goroutine's wait reason and time (`debug=2`) and the
    /// goroutineleak profile are read, budget permitting.
    #[serde(with = "humantime_serde")]
    pub full_interval: Duration,
    /// Goroutines beyond which `debug=1` is not read.
    pub max_goroutines: u64,
    /// Goroutines beyond which `debug=2` is not read.
    pub max_goroutines_full: u64,
    /// Signatures kept per summary (the largest); the rest are counted as omitted.
    pub max_groups: usize,
    /// Time one stack request may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Bytes of one stack response read at most (it is read as it arrives, never held
    /// whole).
    pub max_response_bytes: usize,
}

impl Default for StacksConfig {
    fn default() -> Self {
        StacksConfig {
            enabled: true,
            pause_budget: 0.002,
            full_interval: Duration::from_secs(300),
            max_goroutines: 1_000_000,
            max_goroutines_full: 200_000,
            max_groups: 200,
            timeout: Duration::from_secs(10),
            max_response_bytes: 256 << 20,
        }
    }
}

impl StacksConfig {
    pub fn validate(&self) -> Result<(), goroscope_daemon::settings::SettingsError> {
        use goroscope_daemon::settings::invalid;
        if !(self.pause_budget > 0.0 && self.pause_budget <= 0.1) {
            return Err(invalid(
                "stacks.pause_budget",
                self.pause_budget,
                "must be more than 0 and at most 0.1 (10% of the target's time)",
            ));
        }
        if self.max_groups == 0 || self.max_groups > 1024 {
            return Err(invalid(
                "stacks.max_groups",
                self.max_groups,
                "must be from 1 to 1024",
            ));
        }
        if self.timeout.is_zero() {
            return Err(invalid("stacks.timeout", "0s", "must be longer than 0s"));
        }
        Ok(())
    }
}

/// The kinds of stack request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `goroutine?debug=1`.
    Grouped,
    /// `goroutine?debug=2`.
    Each,
    /// `goroutineleak?debug=1`.
    Leak,
}

impl Kind {
    pub fn path(self) -> &'static str {
        match self {
            Kind::Grouped => "/debug/pprof/goroutine?debug=1",
            Kind::Each => "/debug/pprof/goroutine?debug=2",
            Kind::Leak => "/debug/pprof/goroutineleak?debug=1",
        }
    }

    /// The summary's `source`.
    pub fn source(self) -> &'static str {
        match self {
            Kind::Grouped => "debug=1",
            Kind::Each => "debug=2",
            Kind::Leak => "goroutineleak",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What to do this interval.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Read(Kind),
    /// Not read, and why (one line).
    Skip(Kind, String),
}

/// One target's stack budget and schedule.
#[derive(Debug, Clone, Default)]
pub struct StackPlan {
    /// Microseconds of the target's time stack reads may still take; negative after a
    /// read that took longer than expected (a debt paid back before the next read).
    credit_us: i64,
    updated: Option<Instant>,
    /// Measured cost per goroutine of a successful read, by kind.
    per_goroutine: [Option<Duration>; 3],
    /// When each kind was last read (or last failed).
    last: [Option<Instant>; 3],
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl StackPlan {
    /// What to read now, given the goroutines the target has and whether it serves the
    /// goroutineleak profile. `debug=2` replaces `debug=1` when both are due; while a
    /// due `debug=2` or goroutineleak read waits for credit, `debug=1` is not read, so
    /// that the credit can grow to their cost (on a huge target they would otherwise
    /// never be read).
    pub fn plan(
        &mut self,
        now: Instant,
        goroutines: u64,
        leak_served: bool,
        config: &StacksConfig,
    ) -> Vec<Step> {
        self.accrue(now, config);
        let mut steps = Vec::with_capacity(3);
        let due = |last: Option<Instant>| last.is_none_or(|t| now - t >= config.full_interval);
        let mut full_read = false;
        let mut saving = None;
        let mut full = vec![Kind::Each];
        if leak_served {
            full.push(Kind::Leak);
        }
        for kind in full {
            if !due(self.last[kind.index()]) {
                continue;
            }
            match self.check(kind, goroutines, config.max_goroutines_full, config) {
                Ok(()) => {
                    self.credit_us -= micros(self.expected(kind, goroutines, config));
                    steps.push(Step::Read(kind));
                    full_read |= kind == Kind::Each;
                }
                Err(Refusal::Budget(why)) => {
                    saving.get_or_insert(kind);
                    steps.push(Step::Skip(kind, why));
                }
                Err(Refusal::TooMany(why)) => steps.push(Step::Skip(kind, why)),
            }
        }
        if !full_read {
            let grouped = match saving {
                Some(kind) => Err(format!(
                    "pause budget: saving it for the due {} read",
                    kind.source()
                )),
                None => {
                    match self.check(Kind::Grouped, goroutines, config.max_goroutines, config) {
                        Ok(()) => Ok(()),
                        Err(Refusal::Budget(why) | Refusal::TooMany(why)) => Err(why),
                    }
                }
            };
            match grouped {
                Ok(()) => {
                    self.credit_us -= micros(self.expected(Kind::Grouped, goroutines, config));
                    steps.push(Step::Read(Kind::Grouped));
                }
                Err(why) => steps.push(Step::Skip(Kind::Grouped, why)),
            }
        }
        steps
    }

    /// Records what a read took (its expected cost was spent when it was planned): the
    /// difference is given back, or owed.
    pub fn charge(
        &mut self,
        now: Instant,
        kind: Kind,
        goroutines: u64,
        took: Duration,
        config: &StacksConfig,
    ) {
        self.settle(kind, goroutines, took, config);
        let per = took / u32::try_from(goroutines.max(1)).unwrap_or(u32::MAX);
        self.per_goroutine[kind.index()] = Some(per);
        self.last[kind.index()] = Some(now);
    }

    /// A read that failed (an error, a timeout) still cost its time, and is not
    /// retried before its next turn; its time says nothing of what a read costs, so
    /// the estimate stays.
    pub fn failed(
        &mut self,
        now: Instant,
        kind: Kind,
        goroutines: u64,
        took: Duration,
        config: &StacksConfig,
    ) {
        self.settle(kind, goroutines, took, config);
        self.last[kind.index()] = Some(now);
    }

    /// Gives back what a read was expected to cost and takes what it took. The debt is
    /// bounded like the credit: one pathological read (a hung connection) pauses reads
    /// for at most twice the time a full credit takes to earn.
    fn settle(&mut self, kind: Kind, goroutines: u64, took: Duration, config: &StacksConfig) {
        let expected = micros(self.expected(kind, goroutines, config));
        let cap = micros(Self::cap(config));
        self.credit_us = (self.credit_us + expected - micros(took)).max(-cap);
    }

    fn cap(config: &StacksConfig) -> Duration {
        MAX_CREDIT.mul_f64(config.pause_budget)
    }

    fn accrue(&mut self, now: Instant, config: &StacksConfig) {
        let cap = micros(Self::cap(config));
        match self.updated {
            // The first interval starts with one interval's worth of credit at most:
            // a new target is read at once only if it is cheap to read.
            None => self.credit_us = micros(Duration::from_millis(20)).min(cap),
            Some(t) => {
                let earned = micros((now - t).mul_f64(config.pause_budget));
                self.credit_us = self.credit_us.saturating_add(earned).min(cap);
            }
        }
        self.updated = Some(now);
    }

    /// What a read is expected to take: the last measured cost per goroutine times the
    /// goroutines now, and at most what the credit can ever hold (so that a full credit
    /// always allows a read, whatever one measurement said).
    fn expected(&self, kind: Kind, goroutines: u64, config: &StacksConfig) -> Duration {
        let per = self.per_goroutine[kind.index()].unwrap_or(match kind {
            Kind::Grouped => FIRST_COST_GROUPED,
            Kind::Each | Kind::Leak => FIRST_COST_EACH,
        });
        per.saturating_mul(u32::try_from(goroutines.max(1)).unwrap_or(u32::MAX))
            .min(Self::cap(config))
    }

    fn check(
        &self,
        kind: Kind,
        goroutines: u64,
        max: u64,
        config: &StacksConfig,
    ) -> Result<(), Refusal> {
        if goroutines > max {
            let key = if kind == Kind::Grouped {
                "stacks.max_goroutines"
            } else {
                "stacks.max_goroutines_full"
            };
            return Err(Refusal::TooMany(format!(
                "{goroutines} goroutines, more than {key} ({max})"
            )));
        }
        let expected = micros(self.expected(kind, goroutines, config));
        if expected > self.credit_us {
            return Err(Refusal::Budget(format!(
                "pause budget: a read takes about {} ms of the target's time, {} ms is \
                 available (stacks.pause_budget {}%)",
                expected / 1000,
                self.credit_us.max(0) / 1000,
                config.pause_budget * 100.0
            )));
        }
        Ok(())
    }
}

/// Why a read is not made now.
enum Refusal {
    Budget(String),
    TooMany(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(steps: &[Step]) -> Vec<Kind> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Read(k) => Some(*k),
                Step::Skip(..) => None,
            })
            .collect()
    }

    #[test]
    fn a_small_target_is_read_every_interval_and_in_full_on_schedule() {
        let config = StacksConfig::default();
        let mut plan = StackPlan::default();
        let start = Instant::now();
        let mut full = 0;
        let mut grouped = 0;
        for i in 0..60u32 {
            let now = start + Duration::from_secs(10) * i;
            let steps = plan.plan(now, 200, false, &config);
            for k in reads(&steps) {
                plan.charge(now, k, 200, Duration::from_micros(400), &config);
                match k {
                    Kind::Each => full += 1,
                    Kind::Grouped => grouped += 1,
                    Kind::Leak => unreachable!(),
                }
            }
            assert_eq!(reads(&steps).len(), 1, "interval {i}: {steps:?}");
        }
        // 10 minutes: debug=2 at 0, 5m; debug=1 the other intervals.
        assert_eq!((full, grouped), (2, 58));
    }

    #[test]
    fn a_huge_target_is_read_within_its_budget_and_every_skip_says_why() {
        let config = StacksConfig::default();
        let mut plan = StackPlan::default();
        let start = Instant::now();
        let goroutines = 100_000;
        let mut spent = Duration::ZERO;
        let mut skips = Vec::new();
        let mut reads = std::collections::HashMap::new();
        let hour = 360u32;
        for i in 0..hour {
            let now = start + Duration::from_secs(10) * i;
            for step in plan.plan(now, goroutines, true, &config) {
                match step {
                    Step::Read(k) => {
                        // As measured on Go 1.26 at 100k parked goroutines.
                        let took = match k {
                            Kind::Grouped => Duration::from_millis(97),
                            Kind::Each => Duration::from_millis(530),
                            Kind::Leak => Duration::from_millis(300),
                        };
                        spent += took;
                        *reads.entry(k).or_insert(0) += 1;
                        plan.charge(now, k, goroutines, took, &config);
                    }
                    Step::Skip(_, why) => skips.push(why),
                }
            }
        }
        let budget = Duration::from_secs(3600).mul_f64(config.pause_budget);
        // Within the hour's budget, plus the first interval's credit and one read over.
        assert!(
            spent <= budget + Duration::from_millis(20 + 530),
            "spent {spent:?} of {budget:?}"
        );
        assert!(spent >= budget / 2, "spent {spent:?} of {budget:?}");
        // Every kind gets its turn: the full reads are not starved by debug=1.
        assert!(reads[&Kind::Each] >= 3, "{reads:?}");
        assert!(reads[&Kind::Leak] >= 3, "{reads:?}");
        assert!(reads[&Kind::Grouped] >= 10, "{reads:?}");
        assert!(
            skips.iter().all(|s| s.starts_with("pause budget: ")),
            "{skips:?}"
        );
        let too_many = StackPlan::default().plan(start, 2_000_000, false, &config);
        assert!(
            matches!(&too_many[..], [Step::Skip(Kind::Each, a), Step::Skip(Kind::Grouped, b)]
            if a.contains("stacks.max_goroutines_full (200000)") && b.contains("stacks.max_goroutines (1000000)"))
        );
    }

    #[test]
    fn a_read_that_timed_out_does_not_stop_the_next_ones() {
        let config = StacksConfig::default();
        let mut plan = StackPlan::default();
        let start = Instant::now();
        let steps = plan.plan(start, 1000, false, &config);
        assert_eq!(reads(&steps), vec![Kind::Each]);
        plan.failed(start, Kind::Each, 1000, config.timeout, &config);
        let mut later = Vec::new();
        for i in 1..400u32 {
            let now = start + Duration::from_secs(10) * i;
            for k in reads(&plan.plan(now, 1000, false, &config)) {
                plan.charge(now, k, 1000, Duration::from_millis(2), &config);
                later.push(k);
            }
        }
        assert!(later.contains(&Kind::Each), "{later:?}");
        assert!(later.iter().filter(|k| **k == Kind::Grouped).count() > 100);
    }
}
