//! The outbox: scrapes waiting for the aggregator's acknowledgement.
//!
//! Every scrape gets the next number of this collector's epoch and stays here until
//! acks cover it, across reconnects: that is the collector's half of at-least-once
//! delivery. A scrape may go out in several batches (the sender splits what would
//! exceed the aggregator's `max_batch_bytes`); a batch's sequence number is the scrape's
//! number in its high 32 bits and, in its low 32 bits, the end of the part it carries
//! ([`COMPLETE`] for the last part). Sequence numbers thus grow with every batch, and an
//! ack of a part tells exactly where to resume, even when a new stream splits the rest
//! differently.
//!
//! The outbox is bounded in bytes (an estimate of each scrape's encoded size): when the
//! aggregator is unreachable for longer than it holds, the oldest scrapes are dropped
//! and counted. (Spooling to disk beyond memory comes with the collector issue.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use crate::model::Scrape;

/// The low half of a sequence number that marks the last part of a scrape.
pub const COMPLETE: u32 = u32::MAX;

/// The sequence number of the part of scrape `number` that ends at item `end`.
pub fn seq(number: u32, end: u32) -> u64 {
    (u64::from(number) << 32) | u64::from(end)
}

/// (scrape number, end of the part) of a sequence number.
pub fn split_seq(seq: u64) -> (u32, u32) {
    ((seq >> 32) as u32, seq as u32)
}

#[derive(Debug, Clone)]
pub struct Pending {
    pub number: u32,
    pub scrape: Arc<Scrape>,
    /// Items of the scrape already acknowledged (the start of what is left to send).
    pub acked_items: u32,
    pub bytes: usize,
    pub queued: Instant,
}

pub struct Outbox {
    state: Mutex<State>,
    pushed: Notify,
    max_bytes: usize,
}

struct State {
    next_number: u32,
    pending: VecDeque<Pending>,
    bytes: usize,
    dropped: u64,
}

impl Outbox {
    pub fn new(max_bytes: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                next_number: 1,
                pending: VecDeque::new(),
                bytes: 0,
                dropped: 0,
            }),
            pushed: Notify::new(),
            max_bytes: max_bytes.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queue consistent (every operation is
        // a single push, pop or scan), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a scrape under the next number, which it returns. The oldest scrapes are
    /// dropped while the outbox holds more than its bytes (the newest always stays).
    pub fn push(&self, scrape: Scrape) -> u32 {
        let bytes = scrape.estimated_bytes();
        let mut s = self.lock();
        let number = s.next_number;
        s.next_number = s.next_number.wrapping_add(1).max(1);
        s.bytes += bytes;
        s.pending.push_back(Pending {
            number,
            scrape: Arc::new(scrape),
            acked_items: 0,
            bytes,
            queued: Instant::now(),
        });
        while s.bytes > self.max_bytes && s.pending.len() > 1 {
            if let Some(old) = s.pending.pop_front() {
                s.bytes -= old.bytes;
                s.dropped += 1;
                tracing::warn!(
                    scrape = old.number,
                    dropped_total = s.dropped,
                    max_bytes = self.max_bytes,
                    "outbox full (limits.max_pending_bytes): dropped the oldest unacknowledged scrape"
                );
            }
        }
        drop(s);
        self.pushed.notify_one();
        number
    }

    /// Takes an ack of `seq`: forgets every scrape it completes, and notes how far into
    /// a scrape a partial ack reaches. Returns how many scrapes it removed.
    pub fn ack(&self, seq: u64) -> usize {
        let (number, end) = split_seq(seq);
        let mut s = self.lock();
        let mut removed = 0;
        while let Some(front) = s.pending.front_mut() {
            if front.number < number || (front.number == number && end == COMPLETE) {
                let bytes = front.bytes;
                s.pending.pop_front();
                s.bytes -= bytes;
                removed += 1;
            } else {
                if front.number == number {
                    front.acked_items = front.acked_items.max(end);
                }
                break;
            }
        }
        removed
    }

    /// The first pending scrape at or after `number`.
    pub fn at_or_after(&self, number: u32) -> Option<Pending> {
        let s = self.lock();
        // Numbers increase along the queue.
        let i = s.pending.partition_point(|p| p.number < number);
        s.pending.get(i).cloned()
    }

    /// Drops the pending scrape `number` (one the aggregator refused whole: sending it
    /// again would fail again).
    pub fn discard(&self, number: u32) -> bool {
        let mut s = self.lock();
        let Some(i) = s.pending.iter().position(|p| p.number == number) else {
            return false;
        };
        if let Some(p) = s.pending.remove(i) {
            s.bytes -= p.bytes;
        }
        s.dropped += 1;
        true
    }

    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes of the pending scrapes.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How long the oldest pending scrape has waited.
    pub fn oldest_age(&self) -> Option<std::time::Duration> {
        self.lock().pending.front().map(|p| p.queued.elapsed())
    }

    /// Scrapes dropped so far because the outbox was full or a batch was refused.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Resolves after the next push (or at once if one happened since the last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Coverage, TargetMeta, TargetSample};

    fn scrape(metrics: usize) -> Scrape {
        Scrape {
            timestamp_ms: 1,
            samples: vec![TargetSample {
                meta: Arc::new(TargetMeta {
                    pid: 1,
                    start_ticks: 1,
                    start_time_ms: 1,
                    labels: vec![],
                    coverage: Coverage::default(),
                }),
                metrics: vec![("go_goroutines", 1.0); metrics],
                series: vec![],
            }],
            gone: vec![],
        }
    }

    #[test]
    fn bounded_in_bytes_and_acked_by_part() {
        let one = scrape(10).estimated_bytes();
        let o = Outbox::new(one * 3);
        for _ in 0..5 {
            o.push(scrape(10));
        }
        assert_eq!(o.len(), 3);
        assert_eq!(o.dropped(), 2);
        assert_eq!(o.bytes(), one * 3);
        assert_eq!(o.at_or_after(0).unwrap().number, 3);
        // A partial ack of scrape 3 keeps it, noting where to resume.
        assert_eq!(o.ack(seq(3, 4)), 0);
        assert_eq!(o.at_or_after(3).unwrap().acked_items, 4);
        // The last part completes it.
        assert_eq!(o.ack(seq(3, COMPLETE)), 1);
        assert_eq!(o.at_or_after(0).map(|p| p.number), Some(4));
        // An ack of a later scrape completes the earlier ones too.
        assert_eq!(o.ack(seq(5, 2)), 1);
        assert_eq!(o.at_or_after(0).unwrap().acked_items, 2);
        assert!(o.discard(5));
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn the_newest_scrape_stays_even_when_larger_than_the_bound() {
        let o = Outbox::new(1);
        o.push(scrape(100));
        o.push(scrape(100));
        assert_eq!(o.len(), 1);
        assert_eq!(o.at_or_after(0).map(|p| p.number), Some(2));
    }

    #[test]
    fn sequence_numbers_grow_with_every_part() {
        assert!(seq(1, 5) < seq(1, 9));
        assert!(seq(1, COMPLETE) < seq(2, 0));
        assert_eq!(split_seq(seq(7, 3)), (7, 3));
    }
}
