//! Detection: what is wrong with each process, from its series and stack summaries.
//!
//! - [`stats`]: robust statistics over windows (Theil-Sen slopes, the Mann-Kendall
//!   trend test, Pettitt's change-point test), so that no diagnosis rests on one
//!   threshold crossed by one sample.
//! - [`window`]: a bounded window of one series, coarser for its older part.
pub mod stats;
pub mod window;
