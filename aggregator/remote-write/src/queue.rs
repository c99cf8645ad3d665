//! What the sender drains: the aggregator's persistent export queue, behind a small
//! trait so that the aggregator keeps it in its own storage (written in the same atomic
//! write as the samples it acknowledges), and [`MemoryQueue`] for tests.
//!
//! Ids increase. The sender reads after its cursor, and acks through an id once every
//! sample up to it was delivered or given up on; the queue may then delete them.
//! [`Entry::to_record`] and [`Entry::from_record`] are the persisted form.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::prompb::TimeSeries;

/// A batch of series written together, under its queue id.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: u64,
    pub series: Vec<TimeSeries>,
}

impl Entry {
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// The version byte of [`Entry::to_record`].
pub const RECORD_VERSION: u8 = 1;

impl Entry {
    /// The entry's series as a persisted record: a version byte, then a prompb
    /// `WriteRequest` (binary, values bit for bit). The id is the record's key.
    pub fn to_record(series: &[TimeSeries]) -> Vec<u8> {
        use prost::Message;
        let request = crate::prompb::WriteRequest {
            timeseries: series.to_vec(),
        };
        let mut out = Vec::with_capacity(1 + request.encoded_len());
        out.push(RECORD_VERSION);
        request.encode(&mut out).expect("a Vec grows as needed");
        out
    }

    /// The entry stored under `id` as `record`. An error names the id; the caller skips
    /// the record, counts and logs it, and goes on.
    pub fn from_record(id: u64, record: &[u8]) -> Result<Entry, QueueError> {
        use prost::Message;
        match record.split_first() {
            Some((&RECORD_VERSION, rest)) => crate::prompb::WriteRequest::decode(rest)
                .map(|r| Entry {
                    id,
                    series: r.timeseries,
                })
                .map_err(|e| QueueError(format!("entry {id}: {e}"))),
            Some((version, _)) => Err(QueueError(format!(
                "entry {id}: record version {version}, this build reads {RECORD_VERSION}"
            ))),
            None => Err(QueueError(format!("entry {id}: empty record"))),
        }
    }
}

/// What a queue holds that was not acked yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub entries: u64,
    pub samples: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("export queue: {0}")]
pub struct QueueError(pub String);

/// The export queue. Reads and acks may be blocking I/O: the sender calls them on
/// tokio's blocking pool. `acked` and `pending` are called from async code and must be
/// cheap (kept in memory).
pub trait Queue: Send + Sync + 'static {
    /// Entries with `id > after`, oldest first, about `max_samples` samples in all but
    /// at least one entry if there is one.
    fn read(&self, after: u64, max_samples: usize) -> Result<Vec<Entry>, QueueError>;
    /// Everything up to and including `through` was delivered (or given up on): it may
    /// be deleted. Must be durable before it returns: it is the resume point.
    fn ack(&self, through: u64) -> Result<(), QueueError>;
    /// The id delivered through, as persisted (where the sender resumes after a
    /// restart); 0 when nothing was ever acked.
    fn acked(&self) -> u64;
    /// Entries and samples written but not acked yet.
    fn pending(&self) -> Pending;
}

/// A bounded in-memory queue: for tests, and for an aggregator that accepts losing
/// its export backlog on restart.
pub struct MemoryQueue {
    max_bytes: usize,
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: VecDeque<(Entry, usize)>,
    next_id: u64,
    acked: u64,
    bytes: usize,
    samples: u64,
}

/// The queue is over its bound; the caller should slow down and try again.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("export queue full: {entries} entries, {bytes} bytes waiting")]
pub struct Full {
    pub entries: usize,
    pub bytes: usize,
}

impl MemoryQueue {
    /// A queue holding at most `max_bytes` (by [`series_bytes`]) and `max_entries`; a
    /// single entry larger than `max_bytes` is still accepted into an empty queue.
    pub fn new(max_bytes: usize, max_entries: usize) -> MemoryQueue {
        MemoryQueue {
            max_bytes,
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `series` as one entry and returns its id; refuses when the queue is full.
    pub fn push(&self, series: Vec<TimeSeries>) -> Result<u64, Full> {
        let size = series_bytes(&series);
        let mut inner = self.lock();
        let full = inner.entries.len() >= self.max_entries
            || (!inner.entries.is_empty() && inner.bytes + size > self.max_bytes);
        if full {
            return Err(Full {
                entries: inner.entries.len(),
                bytes: inner.bytes,
            });
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let entry = Entry { id, series };
        inner.samples += entry.samples() as u64;
        inner.bytes += size;
        inner.entries.push_back((entry, size));
        Ok(id)
    }

    /// Bytes held, by [`series_bytes`].
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Queue for MemoryQueue {
    fn read(&self, after: u64, max_samples: usize) -> Result<Vec<Entry>, QueueError> {
        let inner = self.lock();
        let mut out = Vec::new();
        let mut samples = 0;
        for (entry, _) in inner.entries.iter().filter(|(e, _)| e.id > after) {
            if !out.is_empty() && samples + entry.samples() > max_samples {
                break;
            }
            samples += entry.samples();
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn ack(&self, through: u64) -> Result<(), QueueError> {
        let mut inner = self.lock();
        while inner.entries.front().is_some_and(|(e, _)| e.id <= through) {
            if let Some((entry, size)) = inner.entries.pop_front() {
                inner.bytes -= size;
                inner.samples -= entry.samples() as u64;
            }
        }
        inner.acked = inner.acked.max(through);
        Ok(())
    }

    fn acked(&self) -> u64 {
        self.lock().acked
    }

    fn pending(&self) -> Pending {
        let inner = self.lock();
        Pending {
            entries: inner.entries.len() as u64,
            samples: inner.samples,
        }
    }
}

/// About what `series` takes in memory and on the wire: label bytes plus 16 bytes a
/// sample. What `queue_max_bytes` is counted in.
pub fn series_bytes(series: &[TimeSeries]) -> usize {
    series
        .iter()
        .map(|s| {
            s.labels
                .iter()
                .map(|l| l.name.len() + l.value.len() + 4)
                .sum::<usize>()
                + s.samples.len() * 16
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{Label, Sample};

    fn series(samples: usize) -> Vec<TimeSeries> {
        vec![TimeSeries {
            labels: vec![Label::new("__name__", "m")],
            samples: (0..samples)
                .map(|i| Sample {
                    value: i as f64,
                    timestamp: i as i64,
                })
                .collect(),
        }]
    }

    #[test]
    fn records_round_trip_and_refuse_what_they_cannot_read() {
        let mut series = series(3);
        series[0].samples[1].value = f64::from_bits(0x7ff8_0000_0000_0001);
        series[0].samples[2].value = -0.0;
        let record = Entry::to_record(&series);
        assert_eq!(record[0], RECORD_VERSION);
        let entry = Entry::from_record(7, &record).unwrap();
        assert_eq!(
            entry,
            Entry {
                id: 7,
                series: series.clone()
            }
        );
        assert_eq!(
            entry.series[0].samples[2].value.to_bits(),
            (-0.0f64).to_bits()
        );
        let mut future = record.clone();
        future[0] = 2;
        let e = Entry::from_record(7, &future).unwrap_err().to_string();
        assert!(e.contains("entry 7") && e.contains("version 2"), "{e}");
        assert!(Entry::from_record(8, &[]).is_err());
        assert!(Entry::from_record(9, &[RECORD_VERSION, 0x0a, 0xff]).is_err());
    }

    #[test]
    fn reads_after_the_cursor_within_the_sample_budget() {
        let q = MemoryQueue::new(usize::MAX, 100);
        for _ in 0..5 {
            q.push(series(3)).unwrap();
        }
        let ids = |v: Vec<Entry>| v.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(q.read(0, 7).unwrap()), [1, 2]);
        assert_eq!(ids(q.read(2, 9).unwrap()), [3, 4, 5]);
        // At least one entry even when it alone is over the budget.
        assert_eq!(ids(q.read(4, 1).unwrap()), [5]);
        assert!(q.read(5, 100).unwrap().is_empty());
    }

    #[test]
    fn ack_deletes_and_pending_counts_what_is_left() {
        let q = MemoryQueue::new(usize::MAX, 100);
        for _ in 0..4 {
            q.push(series(2)).unwrap();
        }
        assert_eq!(
            q.pending(),
            Pending {
                entries: 4,
                samples: 8
            }
        );
        q.ack(3).unwrap();
        assert_eq!(q.acked(), 3);
        assert_eq!(
            q.pending(),
            Pending {
                entries: 1,
                samples: 2
            }
        );
        assert_eq!(q.read(0, 100).unwrap()[0].id, 4);
        q.ack(1).unwrap(); // an older ack moves nothing back
        assert_eq!(q.acked(), 3);
    }

    #[test]
    fn push_refuses_over_the_byte_and_entry_bounds() {
        let one = series_bytes(&series(10));
        let q = MemoryQueue::new(one * 2, 100);
        q.push(series(10)).unwrap();
        q.push(series(10)).unwrap();
        assert_eq!(
            q.push(series(10)),
            Err(Full {
                entries: 2,
                bytes: one * 2
            })
        );
        q.ack(1).unwrap();
        assert_eq!(q.push(series(10)), Ok(3));

        let q = MemoryQueue::new(usize::MAX, 2);
        q.push(series(1)).unwrap();
        q.push(series(1)).unwrap();
        assert!(q.push(series(1)).is_err());
        // An oversized entry still fits into an empty queue, so nothing is stuck forever.
        let q = MemoryQueue::new(1, 10);
        assert!(q.push(series(100)).is_ok());
        assert!(q.push(series(1)).is_err());
    }
}
