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
//! Memory is bounded in bytes (an estimate of each scrape's encoded size). With the
//! disk spool (the default), every scrape is also written to the spool as it is taken;
//! beyond the bound the oldest scrapes leave memory once they are on disk, and the
//! sender reads them back from the spool when it gets to them. Without the spool, or
//! for a scrape the spool could not write, leaving memory means being lost: counted and
//! reported to the aggregator as an `outbox_full` loss.
//!
//! The outbox also holds the losses to report (`Batch.losses`): each goes with the next
//! batch sent and is forgotten once that batch is acknowledged, or sent again with a
//! later batch if the stream fails first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use goroscope_proto::v1::Loss;
use tokio::sync::Notify;

use crate::model::Scrape;
use crate::spool::service::SpoolLink;
use crate::spool::{add_loss, merge_loss};

/// The low half of a sequence number that marks the last part of a scrape.
pub const COMPLETE: u32 = u32::MAX;

pub const REASON_OUTBOX_FULL: &str = "outbox_full";

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

/// Where a scrape in memory stands with the spool.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Spooled {
    /// Handed to the spool thread, not yet written: it must stay in memory until then.
    Queued,
    /// On disk (or nothing to write): memory may let it go.
    Yes,
    /// In memory only.
    No,
}

#[derive(Debug)]
struct Entry {
    pending: Pending,
    spooled: Spooled,
}

pub struct Outbox {
    state: Mutex<State>,
    pushed: Notify,
    max_bytes: usize,
    spool: Option<SpoolLink>,
}

struct State {
    next_number: u32,
    /// Scrapes in memory, by number.
    pending: VecDeque<Entry>,
    bytes: usize,
    dropped: u64,
    /// Scrapes acknowledged whole up to this number, and one acknowledged in part.
    acked: u32,
    partial: Option<(u32, u32)>,
    losses: Losses,
}

/// Losses to report, each under the ids of the losses merged into it.
#[derive(Default)]
struct Losses {
    next_id: u64,
    /// (first id, last id, loss), at most one per reason.
    unsent: Vec<(u64, u64, Loss)>,
    /// (seq of the batch carrying them, first id, last id, loss).
    in_flight: Vec<(u64, u64, u64, Loss)>,
}

impl Outbox {
    /// An outbox in memory only.
    pub fn new(max_bytes: usize) -> Outbox {
        Outbox::build(max_bytes, None, 1, None)
    }

    /// An outbox backed by the spool: its numbering starts at `next_number` (scrapes
    /// before it are on disk only), `partial` is a scrape acknowledged in part.
    pub fn with_spool(
        max_bytes: usize,
        link: SpoolLink,
        next_number: u32,
        partial: Option<(u32, u32)>,
    ) -> Outbox {
        Outbox::build(max_bytes, Some(link), next_number, partial)
    }

    fn build(
        max_bytes: usize,
        spool: Option<SpoolLink>,
        next_number: u32,
        partial: Option<(u32, u32)>,
    ) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                next_number: next_number.max(1),
                pending: VecDeque::new(),
                bytes: 0,
                dropped: 0,
                acked: 0,
                partial,
                losses: Losses {
                    next_id: 1,
                    ..Losses::default()
                },
            }),
            pushed: Notify::new(),
            max_bytes: max_bytes.max(1),
            spool,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queue consistent (every operation is
        // a single push, pop or scan), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a scrape under the next number, which it returns, and hands it to the
    /// spool. The oldest scrapes leave memory while it holds more than its bytes (the
    /// newest always stays).
    pub fn push(&self, scrape: Scrape) -> u32 {
        let bytes = scrape.estimated_bytes();
        let scrape = Arc::new(scrape);
        let mut s = self.lock();
        let number = s.next_number;
        s.next_number = s.next_number.wrapping_add(1).max(1);
        let spooled = match &self.spool {
            None => Spooled::No,
            Some(link) if link.try_append(number, scrape.clone()) => Spooled::Queued,
            Some(_) => Spooled::No,
        };
        s.bytes += bytes;
        s.pending.push_back(Entry {
            pending: Pending {
                number,
                scrape,
                acked_items: 0,
                bytes,
                queued: Instant::now(),
            },
            spooled,
        });
        self.evict(&mut s);
        drop(s);
        self.pushed.notify_one();
        number
    }

    fn evict(&self, s: &mut State) {
        while s.bytes > self.max_bytes && s.pending.len() > 1 {
            if s.pending
                .front()
                .is_some_and(|e| e.spooled == Spooled::Queued)
            {
                // The spool thread is about to write it: wait for that.
                break;
            }
            let Some(old) = s.pending.pop_front() else {
                break;
            };
            s.bytes -= old.pending.bytes;
            if old.spooled == Spooled::No {
                s.dropped += 1;
                let ts = old.pending.scrape.timestamp_ms;
                let loss = Loss {
                    reason: REASON_OUTBOX_FULL.into(),
                    batches: 1,
                    bytes: old.pending.bytes as u64,
                    from_ms: ts,
                    to_ms: ts,
                };
                s.losses.add(loss);
                tracing::warn!(
                    scrape = old.pending.number,
                    dropped_total = s.dropped,
                    max_bytes = self.max_bytes,
                    "outbox full (limits.max_pending_bytes) and the scrape is not in the spool: \
                     dropped the oldest unacknowledged scrape"
                );
            }
        }
    }

    /// The spool thread wrote scrape `number` (or could not).
    pub fn mark_spooled(&self, number: u32, written: bool) {
        let mut s = self.lock();
        let i = s.pending.partition_point(|e| e.pending.number < number);
        if let Some(e) = s.pending.get_mut(i)
            && e.pending.number == number
        {
            e.spooled = if written { Spooled::Yes } else { Spooled::No };
        }
        self.evict(&mut s);
    }

    /// The spool thread ended: what it had not written is in memory only.
    pub fn spool_stopped(&self) {
        let mut s = self.lock();
        for e in s.pending.iter_mut() {
            if e.spooled == Spooled::Queued {
                e.spooled = Spooled::No;
            }
        }
        self.evict(&mut s);
    }

    /// Forgets the scrapes up to `number` in memory: the spool dropped them (and
    /// reported the loss).
    pub fn forget_through(&self, number: u32) {
        let mut s = self.lock();
        while s
            .pending
            .front()
            .is_some_and(|e| e.pending.number <= number)
        {
            if let Some(e) = s.pending.pop_front() {
                s.bytes -= e.pending.bytes;
            }
        }
    }

    /// Takes an ack of `seq`: forgets every scrape it completes, and notes how far into
    /// a scrape a partial ack reaches. Returns how many scrapes in memory it removed.
    pub fn ack(&self, seq: u64) -> usize {
        let (number, end) = split_seq(seq);
        let mut s = self.lock();
        let mut removed = 0;
        while let Some(front) = s.pending.front_mut() {
            let front = &mut front.pending;
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
        if number > 0 {
            if end == COMPLETE {
                s.acked = s.acked.max(number);
            } else {
                s.acked = s.acked.max(number - 1);
                let items = match s.partial {
                    Some((n, items)) if n == number => items.max(end),
                    _ => end,
                };
                if number > s.acked {
                    s.partial = Some((number, items));
                }
            }
            if s.partial.is_some_and(|(n, _)| n <= s.acked) {
                s.partial = None;
            }
        }
        s.losses.in_flight.retain(|l| l.0 > seq);
        removed
    }

    /// The first pending scrape at or after `number` in memory.
    pub fn at_or_after(&self, number: u32) -> Option<Pending> {
        let s = self.lock();
        // Numbers increase along the queue.
        let i = s.pending.partition_point(|e| e.pending.number < number);
        s.pending.get(i).map(|e| e.pending.clone())
    }

    /// The first pending scrape at or after `number`, from memory or, for scrapes that
    /// left memory, from the spool.
    pub async fn next_pending(&self, mut number: u32) -> Option<Pending> {
        let Some(link) = &self.spool else {
            return self.at_or_after(number);
        };
        loop {
            let (front, partial, acked) = {
                let s = self.lock();
                let front = s
                    .pending
                    .front()
                    .map_or(s.next_number, |e| e.pending.number);
                (front, s.partial, s.acked)
            };
            number = number.max(acked.saturating_add(1));
            if number >= front {
                return self.at_or_after(number);
            }
            match link.read(number, front).await {
                Some((n, stored)) => {
                    let acked_items = match partial {
                        Some((p, items)) if p == n => items.max(stored.acked_items),
                        _ => stored.acked_items,
                    };
                    let bytes = stored.scrape.estimated_bytes();
                    return Some(Pending {
                        number: n,
                        scrape: Arc::new(stored.scrape),
                        acked_items,
                        bytes,
                        queued: Instant::now(),
                    });
                }
                None => number = front,
            }
        }
    }

    /// Drops the pending scrape `number` (one the aggregator refused whole: sending it
    /// again would fail again). It is the oldest unacknowledged one, so from the spool's
    /// side it counts as acknowledged.
    pub fn discard(&self, number: u32) -> bool {
        let mut s = self.lock();
        s.acked = s.acked.max(number);
        s.dropped += 1;
        if let Some(i) = s.pending.iter().position(|e| e.pending.number == number)
            && let Some(e) = s.pending.remove(i)
        {
            s.bytes -= e.pending.bytes;
        }
        true
    }

    /// Scrapes in memory.
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scrapes handed to the spool thread and not yet written.
    pub fn spool_queued(&self) -> usize {
        self.lock()
            .pending
            .iter()
            .filter(|e| e.spooled == Spooled::Queued)
            .count()
    }

    /// Estimated bytes of the scrapes in memory.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How long the oldest scrape in memory has waited.
    pub fn oldest_age(&self) -> Option<std::time::Duration> {
        self.lock()
            .pending
            .front()
            .map(|e| e.pending.queued.elapsed())
    }

    /// Scrapes dropped so far because the outbox was full or a batch was refused.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Resolves after the next push (or at once if one happened since the last wait).
    pub async fn pushed(&self) {
        self.pushed.notified().await
    }

    /// Queues a loss to report; returns the id it is acknowledged under.
    pub fn add_loss(&self, loss: Loss) -> u64 {
        self.lock().losses.add(loss)
    }

    /// The losses to put into the batch `seq`, one per reason (empty if none).
    pub fn take_losses(&self, seq: u64) -> Vec<Loss> {
        let mut s = self.lock();
        let taken = std::mem::take(&mut s.losses.unsent);
        let mut out = Vec::new();
        for (first, last, loss) in taken {
            merge_loss(&mut out, loss.clone());
            s.losses.in_flight.push((seq, first, last, loss));
        }
        out
    }

    /// After a stream ended: the losses it carried unacknowledged go with the next batch.
    pub fn requeue_losses(&self) {
        let mut s = self.lock();
        let in_flight = std::mem::take(&mut s.losses.in_flight);
        for (_, first, last, loss) in in_flight {
            s.losses.merge(first, last, loss);
        }
    }

    /// What the spool needs to know of acks: scrapes acknowledged whole up to a
    /// number, one acknowledged in part (number, items), and the loss ids reported.
    pub fn acked_for_spool(&self) -> (u32, Option<(u32, u32)>, u64) {
        let s = self.lock();
        let first_unreported = s
            .losses
            .unsent
            .iter()
            .map(|l| l.0)
            .chain(s.losses.in_flight.iter().map(|l| l.1))
            .min()
            .unwrap_or(s.losses.next_id);
        (s.acked, s.partial, first_unreported - 1)
    }
}

impl Losses {
    fn add(&mut self, loss: Loss) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.merge(id, id, loss);
        id
    }

    fn merge(&mut self, first: u64, last: u64, loss: Loss) {
        match self.unsent.iter_mut().find(|l| l.2.reason == loss.reason) {
            Some(l) => {
                l.0 = l.0.min(first);
                l.1 = l.1.max(last);
                add_loss(&mut l.2, &loss);
            }
            None => self.unsent.push((first, last, loss)),
        }
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
                    build: None,
                    runtime_env: vec![],
                }),
                metrics: vec![("go_goroutines", 1.0); metrics],
                stacks: vec![],
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
    fn without_the_spool_a_dropped_scrape_is_reported_once_acknowledged() {
        let one = scrape(10).estimated_bytes();
        let o = Outbox::new(one * 2);
        for _ in 0..4 {
            o.push(scrape(10));
        }
        let losses = o.take_losses(seq(3, COMPLETE));
        assert_eq!(losses.len(), 1);
        assert_eq!(losses[0].reason, REASON_OUTBOX_FULL);
        assert_eq!(losses[0].batches, 2);
        assert_eq!(o.acked_for_spool().2, 0, "not yet reported");
        o.ack(seq(3, COMPLETE));
        assert_eq!(o.acked_for_spool(), (3, None, 2));
        assert!(o.take_losses(seq(4, COMPLETE)).is_empty());
    }

    #[test]
    fn sequence_numbers_grow_with_every_part() {
        assert!(seq(1, 5) < seq(1, 9));
        assert!(seq(1, COMPLETE) < seq(2, 0));
        assert_eq!(split_seq(seq(7, 3)), (7, 3));
    }
}
