//! The outbox: scrapes waiting for the aggregator's acknowledgement.
//!
//! Every scrape gets the next sequence number of this collector's epoch and stays here
//! until an Ack covers it, across reconnects: that is the collector's half of
//! at-least-once delivery. The outbox is bounded; when the aggregator is unreachable for
//! longer than it holds, the oldest scrapes are dropped and counted.
//! (Spooling to disk beyond memory comes with the collector-depth issue.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::model::Scrape;

#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: u64,
    pub scrape: Arc<Scrape>,
}

pub struct Outbox {
    state: Mutex<State>,
    pushed: Notify,
    max: usize,
}

struct State {
    next_seq: u64,
    pending: VecDeque<Pending>,
    dropped: u64,
}

impl Outbox {
    pub fn new(max: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                next_seq: 1,
                pending: VecDeque::new(),
                dropped: 0,
            }),
            pushed: Notify::new(),
            max: max.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queue consistent (every operation is
        // a single push, pop or scan), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a scrape under the next sequence number, which it returns.
    pub fn push(&self, scrape: Scrape) -> u64 {
        let mut s = self.lock();
        let seq = s.next_seq;
        s.next_seq += 1;
        s.pending.push_back(Pending {
            seq,
            scrape: Arc::new(scrape),
        });
        while s.pending.len() > self.max {
            if let Some(old) = s.pending.pop_front() {
                s.dropped += 1;
                tracing::warn!(
                    seq = old.seq,
                    dropped_total = s.dropped,
                    "outbox full: dropped the oldest unacknowledged scrape"
                );
            }
        }
        drop(s);
        self.pushed.notify_one();
        seq
    }

    /// Forgets every scrape up to and including `seq`. Returns how many it removed.
    pub fn ack(&self, seq: u64) -> usize {
        let mut s = self.lock();
        let before = s.pending.len();
        while s.pending.front().is_some_and(|p| p.seq <= seq) {
            s.pending.pop_front();
        }
        before - s.pending.len()
    }

    /// The oldest pending scrape with a sequence number above `seq`.
    pub fn next_after(&self, seq: u64) -> Option<Pending> {
        let s = self.lock();
        // Sequence numbers increase along the queue.
        let i = s.pending.partition_point(|p| p.seq <= seq);
        s.pending.get(i).cloned()
    }

    /// Pending scrapes with a sequence number up to and including `seq`.
    pub fn count_through(&self, seq: u64) -> usize {
        self.lock().pending.partition_point(|p| p.seq <= seq)
    }

    /// Drops the pending scrape with sequence number `seq` (a batch the aggregator
    /// refused as malformed or that is too large for it: sending it again would fail
    /// again).
    pub fn discard(&self, seq: u64) -> bool {
        let mut s = self.lock();
        let Some(i) = s.pending.iter().position(|p| p.seq == seq) else {
            return false;
        };
        s.pending.remove(i);
        s.dropped += 1;
        true
    }

    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The oldest pending scrape's sequence number.
    pub fn oldest(&self) -> Option<u64> {
        self.lock().pending.front().map(|p| p.seq)
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

    #[test]
    fn sequences_acks_and_bounds() {
        let o = Outbox::new(3);
        for _ in 0..5 {
            o.push(Scrape::default());
        }
        assert_eq!(o.len(), 3);
        assert_eq!(o.dropped(), 2);
        assert_eq!(o.next_after(0).unwrap().seq, 3);
        assert_eq!(o.next_after(3).unwrap().seq, 4);
        assert!(o.next_after(5).is_none());
        assert_eq!(o.count_through(4), 2);
        assert_eq!(o.ack(4), 2);
        assert_eq!(o.oldest(), Some(5));
        assert!(!o.discard(4));
        assert!(o.discard(5));
        assert!(o.is_empty());

        // Any pending scrape can be dropped, not only the oldest.
        for _ in 0..3 {
            o.push(Scrape::default());
        }
        assert!(o.discard(7));
        assert_eq!(o.next_after(6).unwrap().seq, 8);
        assert_eq!(o.len(), 2);
    }
}
