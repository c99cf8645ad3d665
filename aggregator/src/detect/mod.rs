//! Detection: what is wrong with each process, from its series and stack summaries.
//!
//! - [`stats`]: robust statistics over windows (Theil-Sen slopes, the Mann-Kendall
//!   trend test, Pettitt's change-point test), so that no diagnosis rests on one
//!   threshold crossed by one sample.
//! - [`window`]: a bounded window of one series, at an even resolution.
//! - [`trend`]: rises called by the trend test, and the detectors that need only them
//!   or a change point (`thread-leak`, `oom-risk`, `goroutine-explosion`, `forced-gc`).
//! - [`goroutines`]: the stack signature behind a goroutine leak, and its pattern.
//! - [`memory`]: `heap-leak`, `rss-retention` (not a leak), `offheap-growth`,
//!   `stack-growth`, `gc-thrash`.
//! - [`target`]: one target's windows and stack summaries, and every detector run on
//!   them (`goroutine-leak`, `sched-pressure` and `oom-risk` are assembled there).
//! - [`engine`]: the detector thread, anomalies with hysteresis, persistence.
//! - [`incidents`]: anomalies grouped across the fleet, with a probable cause.
//! - [`fleet`]: the comparison of affected and unaffected targets.
pub mod engine;
pub mod fleet;
pub mod goroutines;
pub mod incidents;
pub mod memory;
pub mod stats;
pub mod target;
pub mod trend;
pub mod window;
