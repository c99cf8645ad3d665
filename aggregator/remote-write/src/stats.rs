//! The exporter's counters, as atomics the aggregator reads into its metrics
//! (docs/export.md suggests the names).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why samples were given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The receiver refused the request for good (a 4xx such as 400 for out-of-order
    /// samples or 413 for a body too large).
    Refused,
    /// The series' labels would have made the receiver refuse the whole request (a
    /// label name or metric name outside Prometheus' syntax, a repeated name, no
    /// `__name__`), so it was left out before sending.
    InvalidLabels,
}

impl DropReason {
    pub const ALL: [DropReason; 2] = [DropReason::Refused, DropReason::InvalidLabels];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Refused => "refused",
            DropReason::InvalidLabels => "invalid_labels",
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// No answer: connection refused or reset, DNS, TLS.
    Network,
    /// No answer within `timeout`.
    Timeout,
    /// 429 Too Many Requests: retried.
    Status429,
    /// A 5xx: retried.
    Status5xx,
    /// A 4xx that does not judge the samples (401, 403, 404, 408): retried.
    Status4xxRetried,
    /// Any other 4xx: the samples are dropped.
    Status4xx,
    /// 1xx or 3xx (redirects are not followed): retried.
    StatusOther,
    /// The bearer token or password file could not be read: retried.
    Credentials,
}

impl FailReason {
    pub const ALL: [FailReason; 8] = [
        FailReason::Network,
        FailReason::Timeout,
        FailReason::Status429,
        FailReason::Status5xx,
        FailReason::Status4xxRetried,
        FailReason::Status4xx,
        FailReason::StatusOther,
        FailReason::Credentials,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Network => "network",
            FailReason::Timeout => "timeout",
            FailReason::Status429 => "429",
            FailReason::Status5xx => "5xx",
            FailReason::Status4xxRetried => "4xx_retried",
            FailReason::Status4xx => "4xx",
            FailReason::StatusOther => "other_status",
            FailReason::Credentials => "credentials",
        }
    }

    /// Whether the same request is sent again.
    pub fn retried(self) -> bool {
        self != FailReason::Status4xx
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    samples_sent: AtomicU64,
    requests_sent: AtomicU64,
    samples_dropped: [AtomicU64; DropReason::ALL.len()],
    requests_failed: [AtomicU64; FailReason::ALL.len()],
    retries: AtomicU64,
    last_success_ms: AtomicU64,
}

impl Stats {
    /// Samples the receiver accepted (a 2xx answer).
    pub fn samples_sent(&self) -> u64 {
        self.samples_sent.load(Relaxed)
    }

    /// Requests the receiver accepted.
    pub fn requests_sent(&self) -> u64 {
        self.requests_sent.load(Relaxed)
    }

    pub fn samples_dropped(&self, reason: DropReason) -> u64 {
        self.samples_dropped[reason as usize].load(Relaxed)
    }

    pub fn requests_failed(&self, reason: FailReason) -> u64 {
        self.requests_failed[reason as usize].load(Relaxed)
    }

    /// Requests sent again after a failure.
    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// When a request last succeeded, milliseconds since the Unix epoch.
    pub fn last_success_unix_ms(&self) -> Option<u64> {
        match self.last_success_ms.load(Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    pub(crate) fn sent(&self, samples: usize) {
        self.samples_sent.fetch_add(samples as u64, Relaxed);
        self.requests_sent.fetch_add(1, Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        self.last_success_ms.store(now.max(1), Relaxed);
    }

    pub(crate) fn dropped(&self, reason: DropReason, samples: usize) {
        self.samples_dropped[reason as usize].fetch_add(samples as u64, Relaxed);
    }

    pub(crate) fn failed(&self, reason: FailReason) {
        self.requests_failed[reason as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }
}
