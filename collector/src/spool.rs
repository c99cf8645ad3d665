//! The disk spool: every scrape the collector takes, kept on disk until the aggregator
//! acknowledges it, so that neither an unreachable aggregator nor a collector restart
//! loses data; bounded in bytes, the oldest dropped first, and every loss counted and
//! reported to the aggregator (`Batch.losses`).
//!
//! # Files
//!
//! `spool.dir` holds append-only segment files named after the id of their first record
//! (`00000000000000000042.seg`), a `checkpoint` and a `lock` (an exclusive `flock`: two
//! collectors never share a spool). A segment starts with the 8 bytes `gspool\0\x01`
//! (the last byte is the segment format's version) and holds records back to back:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | marker `GSPL`, where a reader resynchronises after damage |
//! | 4 | body length, little endian |
//! | 4 | CRC32C (Castagnoli) of the body, little endian |
//! | 1 | body: payload version ([`record::VERSION`]) |
//! | 8 | body: record id, little endian, increasing across segments and runs |
//! | 8 | body: scrape timestamp, Unix ms, little endian |
//! | n | body: payload, a [`record::ScrapeRecord`] protobuf (stream-independent) |
//!
//! The `checkpoint` (written to a temporary file, synced, renamed, directory synced)
//! holds the id through which records are acknowledged, how far into the next one a
//! partial ack reaches, and the losses not yet reported to the aggregator.
//!
//! # Durability (what a crash costs)
//!
//! Records are written as the scrapes are taken and `fdatasync`ed at most
//! `spool.sync_interval` later, at each segment roll and at shutdown; segment creation,
//! deletion and the checkpoint's rename are followed by a sync of the directory. A
//! process crash loses nothing written (the kernel has it); a power loss can cost the
//! records of the last `sync_interval` and leave a torn record at the end of the last
//! segment. The checkpoint is written at most once per `sync_interval`: after a crash
//! some acknowledged records are sent again, which the aggregator stores idempotently
//! (a sample is keyed by series and timestamp).
//!
//! # Recovery
//!
//! At open every segment with unacknowledged records is read and each record's checksum
//! verified. Damage (a bad marker, length or checksum, or an id out of order) is skipped
//! up to the next valid record (found by its marker); what cannot be resynchronised is
//! skipped to the end of the segment; a damaged tail of the last segment (a torn write)
//! is truncated. Skipped records (estimated by the markers in the damaged bytes) that
//! may not have been acknowledged are counted as `spool_corrupt` losses, with the
//! timestamps of the valid neighbours as the time range. Nothing stops the collector;
//! no one ever has to delete spool files by hand.
//!
//! # Budget
//!
//! Segment files total at most `spool.max_bytes`: before a record would exceed it, the
//! oldest segments are deleted, and their unacknowledged records counted as
//! `spool_full` losses. Fully acknowledged segments are deleted as acks arrive (the
//! segment being written stays until it rolls).

pub mod record;
pub mod service;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use goroscope_proto::v1::Loss;
use prost::Message;

use crate::model::Scrape;

const SEGMENT_MAGIC: &[u8; 8] = b"gspool\x00\x01";
const SEGMENT_HEADER: u64 = SEGMENT_MAGIC.len() as u64;
const CHECKPOINT_MAGIC: &[u8; 8] = b"gsckpt\x00\x01";
const RECORD_MARKER: [u8; 4] = *b"GSPL";
/// Marker, body length, checksum.
const RECORD_HEADER: usize = 12;
/// Version, id, timestamp.
const BODY_HEADER: usize = 17;
/// Damaged ranges remembered per segment (to skip them on every read without counting
/// them again); more are skipped and counted again when read again.
const MAX_KNOWN_DAMAGE: usize = 256;
/// Unreported losses kept apart in the checkpoint; more are merged by reason.
const MAX_KEPT_LOSSES: usize = 64;

pub const REASON_FULL: &str = "spool_full";
pub const REASON_CORRUPT: &str = "spool_corrupt";

/// CRC32C (Castagnoli), bitwise table, the checksum of iSCSI and ext4 metadata.
pub fn crc32c(data: &[u8]) -> u32 {
    const fn table() -> [u32; 256] {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    }
    static TABLE: [u32; 256] = table();
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("spool directory {0} is in use by another collector")]
    Locked(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("record of {bytes} bytes is larger than half the spool's budget")]
    TooLarge { bytes: usize },
    #[error("record id {id} is not after the last one, {last}")]
    OutOfOrder { id: u64, last: u64 },
    #[error("spool thread: {0}")]
    Thread(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct SpoolOptions {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
}

/// A record read back.
#[derive(Debug)]
pub struct Stored {
    pub id: u64,
    pub scrape: Scrape,
    /// Items of the scrape already acknowledged.
    pub acked_items: u32,
}

/// What an append or a budget check removed: the unacknowledged part as a loss, and the
/// last id removed (the caller forgets anything it holds up to it).
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    pub loss: Option<Loss>,
    pub through_id: u64,
}

/// Where the spool stood when opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The id the next record gets.
    pub next_id: u64,
    /// The first record not yet acknowledged, if any is on disk.
    pub first_unacked: Option<u64>,
    /// Unacknowledged records on disk.
    pub records: u64,
    /// A record acknowledged in part: its id and the items acknowledged.
    pub partial: Option<(u64, u32)>,
    /// Losses found now (damage, budget).
    pub losses: Vec<Loss>,
    /// Losses a previous run found and did not get reported.
    pub unreported: Vec<Loss>,
    /// Records skipped as damaged at open.
    pub corrupt_records: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    first_id: u64,
    path: PathBuf,
    /// Bytes written (the file's length; reads stop here).
    bytes: u64,
    /// Valid records, their id and time range.
    count: u64,
    last_id: u64,
    first_ts: i64,
    last_ts: i64,
    /// Byte ranges known to be damaged or undecodable, skipped on reads.
    damage: Vec<(u64, u64)>,
}

#[derive(Clone, PartialEq, Message)]
struct Checkpoint {
    #[prost(uint64, tag = "1")]
    acked_through: u64,
    #[prost(uint64, tag = "2")]
    partial_id: u64,
    #[prost(uint32, tag = "3")]
    partial_items: u32,
    #[prost(message, repeated, tag = "4")]
    losses: Vec<PendingLoss>,
}

#[derive(Clone, PartialEq, Message)]
struct PendingLoss {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(message, optional, tag = "2")]
    loss: Option<Loss>,
}

/// One record's place in a buffer.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    version: u8,
    id: u64,
    ts: i64,
    payload: (usize, usize),
    end: usize,
}

/// The record at `pos` of `buf`, if one is there whole with a valid checksum.
fn parse_at(buf: &[u8], pos: usize, max_body: usize) -> Option<Parsed> {
    let header = buf.get(pos..pos.checked_add(RECORD_HEADER)?)?;
    if header[..4] != RECORD_MARKER {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
    if !(BODY_HEADER..=max_body).contains(&len) {
        return None;
    }
    let start = pos + RECORD_HEADER;
    let body = buf.get(start..start.checked_add(len)?)?;
    if crc32c(body) != u32::from_le_bytes(header[8..12].try_into().ok()?) {
        return None;
    }
    Some(Parsed {
        version: body[0],
        id: u64::from_le_bytes(body[1..9].try_into().ok()?),
        ts: i64::from_le_bytes(body[9..17].try_into().ok()?),
        payload: (start + BODY_HEADER, start + len),
        end: start + len,
    })
}

/// The next valid record at or after `from`, found by its marker.
fn resync(buf: &[u8], from: usize, max_body: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = buf.get(at..)?.windows(4).position(|w| w == RECORD_MARKER) {
        let pos = at + i;
        if parse_at(buf, pos, max_body).is_some() {
            return Some(pos);
        }
        at = pos + 1;
    }
    None
}

/// Records a damaged range probably held: the markers in it, at least one if any byte
/// is set (a range of zeros is space a crash left unwritten, not a record).
fn records_in(damaged: &[u8]) -> u64 {
    let markers = damaged.windows(4).filter(|w| *w == RECORD_MARKER).count() as u64;
    if markers == 0 && damaged.iter().any(|b| *b != 0) {
        1
    } else {
        markers
    }
}

/// A damaged range found by a scan, with its valid neighbours.
#[derive(Debug)]
struct Damage {
    start: usize,
    end: usize,
    records: u64,
    before: Option<(u64, i64)>,
    after: Option<(u64, i64)>,
}

#[derive(Debug, Default)]
struct Scan {
    count: u64,
    first: Option<(u64, i64)>,
    last: Option<(u64, i64)>,
    /// The end of the last valid record.
    good_end: usize,
    damage: Vec<Damage>,
}

/// Every valid record of a segment's bytes (ids must increase past `after_id`), and the
/// damage between them.
fn scan(buf: &[u8], after_id: u64, max_body: usize) -> Scan {
    let mut s = Scan {
        good_end: SEGMENT_HEADER as usize,
        ..Scan::default()
    };
    let mut pos = if buf.starts_with(SEGMENT_MAGIC) {
        SEGMENT_HEADER as usize
    } else {
        0
    };
    let mut last_id = after_id;
    let mut damage_start: Option<usize> = (pos == 0 && !buf.is_empty()).then_some(0);
    while pos < buf.len() {
        let parsed = parse_at(buf, pos, max_body).filter(|p| p.id > last_id);
        let Some(p) = parsed else {
            damage_start.get_or_insert(pos);
            match resync(buf, pos + 1, max_body) {
                Some(next) => {
                    pos = next;
                    continue;
                }
                None => {
                    pos = buf.len();
                    break;
                }
            }
        };
        if let Some(start) = damage_start.take() {
            s.damage.push(Damage {
                start,
                end: pos,
                records: records_in(&buf[start..pos]),
                before: s.last,
                after: Some((p.id, p.ts)),
            });
        }
        last_id = p.id;
        s.count += 1;
        s.first.get_or_insert((p.id, p.ts));
        s.last = Some((p.id, p.ts));
        s.good_end = p.end;
        pos = p.end;
    }
    if let Some(start) = damage_start {
        s.damage.push(Damage {
            start,
            end: pos,
            records: records_in(&buf[start..pos]),
            before: s.last,
            after: None,
        });
    }
    s
}

/// Adds `loss` into `into`, one entry per reason.
pub fn merge_loss(into: &mut Vec<Loss>, loss: Loss) {
    match into.iter_mut().find(|l| l.reason == loss.reason) {
        Some(l) => add_loss(l, &loss),
        None => into.push(loss),
    }
}

/// Adds the counts of `other` (of the same reason) to `into` and widens its time range
/// (0 is unknown, not the epoch).
pub fn add_loss(into: &mut Loss, other: &Loss) {
    into.batches += other.batches;
    into.bytes += other.bytes;
    into.from_ms = match (into.from_ms, other.from_ms) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    };
    into.to_ms = into.to_ms.max(other.to_ms);
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

pub struct Spool {
    opts: SpoolOptions,
    _lock: File,
    segments: VecDeque<Segment>,
    /// The segment appended to (always the last one), open for writing.
    active: Option<File>,
    unsynced: bool,
    next_id: u64,
    acked_through: u64,
    partial: Option<(u64, u32)>,
    checkpoint_dirty: bool,
    /// Losses not yet reported, by id.
    losses: Vec<(u64, Loss)>,
    /// Where the last read ended: (segment's first id, offset, id read).
    cursor: Option<(u64, u64, u64)>,
    /// Records found damaged since open (reads).
    corrupt_found: u64,
}

impl Spool {
    /// Opens (creating it if needed) and recovers the spool in `opts.dir`.
    pub fn open(opts: SpoolOptions) -> Result<(Spool, Recovered), SpoolError> {
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir).map_err(|source| SpoolError::Dir {
            dir: dir.clone(),
            source,
        })?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(SpoolError::Locked(dir));
        }
        let mut spool = Spool {
            opts,
            _lock: lock,
            segments: VecDeque::new(),
            active: None,
            unsynced: false,
            next_id: 1,
            acked_through: 0,
            partial: None,
            checkpoint_dirty: false,
            losses: Vec::new(),
            cursor: None,
            corrupt_found: 0,
        };
        let mut recovered = Recovered::default();
        spool.read_checkpoint();
        let _ = fs::remove_file(dir.join("checkpoint.tmp"));

        let mut files: Vec<(u64, PathBuf)> = fs::read_dir(&dir)
            .map_err(|source| SpoolError::Dir {
                dir: dir.clone(),
                source,
            })?
            .filter_map(|e| {
                let path = e.ok()?.path();
                let stem = path.file_name()?.to_str()?.strip_suffix(".seg")?;
                Some((stem.parse().ok()?, path))
            })
            .collect();
        files.sort();
        let max_body = spool.max_body();
        let mut last_id = 0u64;
        let mut removed = false;
        for (i, (first_id, path)) in files.iter().enumerate() {
            let is_last = i + 1 == files.len();
            // A segment followed by one starting after the acked id is fully acked:
            // deleted without reading it.
            if let Some((next_first, _)) = files.get(i + 1)
                && next_first.saturating_sub(1) <= spool.acked_through
            {
                fs::remove_file(path).map_err(io_err(path))?;
                removed = true;
                continue;
            }
            let buf = fs::read(path).map_err(io_err(path))?;
            let s = scan(&buf, last_id.max(first_id.saturating_sub(1)), max_body);
            for d in &s.damage {
                let unacked = match d.after {
                    Some((next, _)) => next.saturating_sub(1) > spool.acked_through,
                    None => {
                        d.before.map_or(*first_id, |(p, _)| p + 1) + d.records
                            > spool.acked_through + 1
                    }
                };
                let torn_tail = is_last && d.end == buf.len() && d.after.is_none();
                tracing::warn!(
                    segment = %path.display(),
                    offset = d.start,
                    bytes = d.end - d.start,
                    records = d.records,
                    torn_tail,
                    "spool: skipped damaged bytes"
                );
                if unacked && d.records > 0 {
                    recovered.corrupt_records += d.records;
                    let loss = Loss {
                        reason: REASON_CORRUPT.into(),
                        batches: d.records,
                        bytes: (d.end - d.start) as u64,
                        from_ms: d.before.map_or(0, |b| b.1),
                        to_ms: d.after.map_or(0, |a| a.1),
                    };
                    merge_loss(&mut recovered.losses, loss);
                }
            }
            if s.count == 0 {
                fs::remove_file(path).map_err(io_err(path))?;
                removed = true;
                continue;
            }
            let mut bytes = buf.len() as u64;
            let mut damage: Vec<(u64, u64)> = s
                .damage
                .iter()
                .map(|d| (d.start as u64, d.end as u64))
                .collect();
            if is_last && s.good_end < buf.len() {
                // A torn tail (or damage to the end): cut it off, so that the file ends
                // on a record again.
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                f.set_len(s.good_end as u64).map_err(io_err(path))?;
                f.sync_all().map_err(io_err(path))?;
                bytes = s.good_end as u64;
                damage.retain(|d| d.0 < bytes);
            }
            damage.truncate(MAX_KNOWN_DAMAGE);
            let (last, last_ts) = s.last.unwrap_or_default();
            last_id = last;
            spool.segments.push_back(Segment {
                first_id: *first_id,
                path: path.clone(),
                bytes,
                count: s.count,
                last_id: last,
                first_ts: s.first.map_or(0, |f| f.1),
                last_ts,
                damage,
            });
        }
        if removed {
            sync_dir(&dir).map_err(io_err(&dir))?;
        }
        spool.next_id = last_id.max(spool.acked_through) + 1;
        if spool
            .partial
            .is_some_and(|(id, _)| id <= spool.acked_through)
        {
            spool.partial = None;
        }
        // A smaller budget than the previous run's: the oldest go.
        while spool.bytes() > spool.opts.max_bytes && !spool.segments.is_empty() {
            if let Some(d) = spool.drop_oldest()
                && let Some(loss) = d.loss
            {
                merge_loss(&mut recovered.losses, loss);
            }
        }
        recovered.next_id = spool.next_id;
        recovered.first_unacked = spool
            .segments
            .iter()
            .find(|s| s.last_id > spool.acked_through)
            .map(|s| s.first_id.max(spool.acked_through + 1));
        recovered.records = spool
            .segments
            .iter()
            .map(|s| {
                if s.first_id > spool.acked_through {
                    s.count
                } else {
                    // Ids are dense unless records were skipped: an estimate.
                    s.last_id.saturating_sub(spool.acked_through).min(s.count)
                }
            })
            .sum();
        recovered.partial = spool.partial;
        recovered.unreported = spool.losses.drain(..).map(|(_, l)| l).collect();
        spool.checkpoint_dirty = true;
        Ok((spool, recovered))
    }

    fn max_body(&self) -> usize {
        usize::try_from(self.opts.max_bytes / 2).unwrap_or(usize::MAX)
    }

    fn read_checkpoint(&mut self) {
        let path = self.opts.dir.join("checkpoint");
        let buf = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "spool: checkpoint unreadable; unacknowledged records are sent again from the oldest");
                return;
            }
        };
        let decoded = buf
            .strip_prefix(CHECKPOINT_MAGIC)
            .filter(|rest| rest.len() >= 4)
            .and_then(|rest| {
                let (crc, body) = rest.split_at(4);
                (u32::from_le_bytes(crc.try_into().ok()?) == crc32c(body)).then_some(body)
            })
            .and_then(|body| Checkpoint::decode(body).ok());
        match decoded {
            Some(c) => {
                self.acked_through = c.acked_through;
                self.partial = (c.partial_id > 0).then_some((c.partial_id, c.partial_items));
                self.losses = c
                    .losses
                    .into_iter()
                    .filter_map(|p| Some((p.id, p.loss?)))
                    .collect();
            }
            None => tracing::warn!(
                path = %path.display(),
                "spool: checkpoint damaged; unacknowledged records are sent again from the oldest"
            ),
        }
    }

    /// Writes the checkpoint if anything in it changed.
    pub fn write_checkpoint(&mut self) -> Result<(), SpoolError> {
        if !self.checkpoint_dirty {
            return Ok(());
        }
        let body = Checkpoint {
            acked_through: self.acked_through,
            partial_id: self.partial.map_or(0, |p| p.0),
            partial_items: self.partial.map_or(0, |p| p.1),
            losses: self
                .losses
                .iter()
                .map(|(id, l)| PendingLoss {
                    id: *id,
                    loss: Some(l.clone()),
                })
                .collect(),
        }
        .encode_to_vec();
        let mut buf = Vec::with_capacity(body.len() + 12);
        buf.extend_from_slice(CHECKPOINT_MAGIC);
        buf.extend_from_slice(&crc32c(&body).to_le_bytes());
        buf.extend_from_slice(&body);
        let tmp = self.opts.dir.join("checkpoint.tmp");
        let path = self.opts.dir.join("checkpoint");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.opts.dir)
        };
        write().map_err(io_err(&path))?;
        self.checkpoint_dirty = false;
        Ok(())
    }

    /// Bytes of segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// The id the next record must have at least.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Records found damaged by reads since the last call.
    pub fn take_corrupt_found(&mut self) -> u64 {
        std::mem::take(&mut self.corrupt_found)
    }

    /// Appends the record of scrape `id` (ids must increase), first dropping the oldest
    /// segments if the budget requires.
    pub fn append(
        &mut self,
        id: u64,
        timestamp_ms: i64,
        version: u8,
        payload: &[u8],
    ) -> Result<Vec<Dropped>, SpoolError> {
        if id < self.next_id {
            return Err(SpoolError::OutOfOrder {
                id,
                last: self.next_id - 1,
            });
        }
        let len = RECORD_HEADER + BODY_HEADER + payload.len();
        if BODY_HEADER + payload.len() > self.max_body() {
            return Err(SpoolError::TooLarge { bytes: len });
        }
        let mut dropped = Vec::new();
        let roll = match (self.active.as_ref(), self.segments.back()) {
            (Some(_), Some(seg)) => {
                seg.count > 0 && seg.bytes + len as u64 > self.opts.segment_bytes
            }
            _ => true,
        };
        // The budget counts the new segment's header too.
        let needed = len as u64 + if roll { SEGMENT_HEADER } else { 0 };
        while self.bytes() + needed > self.opts.max_bytes {
            let only_active = self.segments.len() == 1 && self.active.is_some() && !roll;
            if self.segments.is_empty() || only_active {
                break;
            }
            if let Some(d) = self.drop_oldest() {
                dropped.push(d);
            }
        }
        if roll {
            self.roll(id)?;
        }
        let mut buf = Vec::with_capacity(len);
        let body_len = (BODY_HEADER + payload.len()) as u32;
        buf.extend_from_slice(&RECORD_MARKER);
        buf.extend_from_slice(&body_len.to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.push(version);
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&timestamp_ms.to_le_bytes());
        buf.extend_from_slice(payload);
        let crc = crc32c(&buf[RECORD_HEADER..]);
        buf[8..12].copy_from_slice(&crc.to_le_bytes());

        let seg = self.segments.back_mut().expect("roll made a segment");
        let file = self.active.as_ref().expect("roll opened the segment");
        if let Err(e) = file.write_all_at(&buf, seg.bytes) {
            // Leave no partial record behind; if even that fails, the next append
            // starts a new segment and a read never goes past `seg.bytes`.
            if file.set_len(seg.bytes).is_err() {
                self.active = None;
            }
            return Err(SpoolError::Io {
                path: seg.path.clone(),
                source: e,
            });
        }
        seg.bytes += len as u64;
        if seg.count == 0 {
            seg.first_ts = timestamp_ms;
        }
        seg.count += 1;
        seg.last_id = id;
        seg.last_ts = timestamp_ms;
        self.next_id = id + 1;
        self.unsynced = true;
        Ok(dropped)
    }

    fn roll(&mut self, first_id: u64) -> Result<(), SpoolError> {
        self.sync()?;
        self.active = None;
        let path = self.opts.dir.join(segment_name(first_id));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(SEGMENT_MAGIC).map_err(io_err(&path))?;
        sync_dir(&self.opts.dir).map_err(io_err(&self.opts.dir))?;
        self.segments.push_back(Segment {
            first_id,
            path,
            bytes: SEGMENT_HEADER,
            count: 0,
            last_id: first_id.saturating_sub(1),
            first_ts: 0,
            last_ts: 0,
            damage: Vec::new(),
        });
        self.active = Some(f);
        self.unsynced = true;
        Ok(())
    }

    /// Makes what was appended durable.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if let (true, Some(f), Some(seg)) = (self.unsynced, &self.active, self.segments.back()) {
            f.sync_data().map_err(io_err(&seg.path))?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Deletes the oldest segment; its unacknowledged records become a loss.
    fn drop_oldest(&mut self) -> Option<Dropped> {
        let seg = self.segments.pop_front()?;
        if self.segments.is_empty() {
            self.active = None;
        }
        if self.cursor.is_some_and(|c| c.0 == seg.first_id) {
            self.cursor = None;
        }
        let loss = if seg.last_id <= self.acked_through || seg.count == 0 {
            None
        } else if seg.first_id > self.acked_through {
            Some(Loss {
                reason: REASON_FULL.into(),
                batches: seg.count,
                bytes: seg.bytes,
                from_ms: seg.first_ts,
                to_ms: seg.last_ts,
            })
        } else {
            // Acknowledged in part: count exactly what was not.
            let mut loss = Loss {
                reason: REASON_FULL.into(),
                ..Loss::default()
            };
            if let Ok(buf) = fs::read(&seg.path) {
                let mut pos = SEGMENT_HEADER as usize;
                let max_body = self.max_body();
                while let Some(p) = parse_at(&buf, pos, max_body) {
                    if p.id > self.acked_through {
                        loss.batches += 1;
                        loss.bytes += (p.end - pos) as u64;
                        if loss.from_ms == 0 {
                            loss.from_ms = p.ts;
                        }
                        loss.to_ms = p.ts;
                    }
                    pos = p.end;
                }
            }
            (loss.batches > 0).then_some(loss)
        };
        if let Err(e) = fs::remove_file(&seg.path) {
            tracing::warn!(segment = %seg.path.display(), error = %e, "spool: deleting a segment failed");
        }
        let _ = sync_dir(&self.opts.dir);
        if let Some(l) = &loss {
            tracing::warn!(
                records = l.batches,
                bytes = l.bytes,
                from_ms = l.from_ms,
                to_ms = l.to_ms,
                max_bytes = self.opts.max_bytes,
                "spool full (spool.max_bytes): dropped the oldest unacknowledged records"
            );
        }
        Some(Dropped {
            loss,
            through_id: seg.last_id,
        })
    }

    /// Notes that records through `through` are acknowledged, and `partial` (id, items)
    /// in part; deletes the segments that holds only acknowledged records.
    pub fn ack(&mut self, through: u64, partial: Option<(u64, u32)>) {
        if through > self.acked_through {
            self.acked_through = through;
            self.checkpoint_dirty = true;
        }
        let partial = partial.filter(|p| p.0 > self.acked_through);
        if partial != self.partial {
            self.partial = partial;
            self.checkpoint_dirty = true;
        }
        let mut removed = false;
        while let Some(seg) = self.segments.front() {
            let is_active = self.segments.len() == 1 && self.active.is_some();
            if is_active || seg.last_id > self.acked_through {
                break;
            }
            if let Some(seg) = self.segments.pop_front() {
                if self.cursor.is_some_and(|c| c.0 == seg.first_id) {
                    self.cursor = None;
                }
                if let Err(e) = fs::remove_file(&seg.path) {
                    tracing::warn!(segment = %seg.path.display(), error = %e, "spool: deleting an acknowledged segment failed");
                }
                removed = true;
            }
        }
        if removed {
            let _ = sync_dir(&self.opts.dir);
        }
    }

    pub fn acked_through(&self) -> u64 {
        self.acked_through
    }

    /// Keeps `loss` (under `id`) until [`Spool::losses_reported`] says it was reported.
    /// Past [`MAX_KEPT_LOSSES`] entries, a loss is merged into the newest of its reason,
    /// which then takes its id (and is forgotten only once all it holds was reported).
    pub fn keep_loss(&mut self, id: u64, loss: Loss) {
        if self.losses.len() >= MAX_KEPT_LOSSES
            && let Some(i) = self
                .losses
                .iter()
                .rposition(|(_, l)| l.reason == loss.reason)
        {
            let (_, mut merged) = self.losses.remove(i);
            add_loss(&mut merged, &loss);
            self.losses.push((id, merged));
        } else {
            self.losses.push((id, loss));
        }
        self.checkpoint_dirty = true;
    }

    /// Forgets the losses kept under ids up to `through`.
    pub fn losses_reported(&mut self, through: u64) {
        let before = self.losses.len();
        self.losses.retain(|(id, _)| *id > through);
        if self.losses.len() != before {
            self.checkpoint_dirty = true;
        }
    }

    /// The first unacknowledged record with an id in `from..below`, decoded. Damaged or
    /// undecodable records on the way are skipped (and counted once).
    pub fn read_at_or_after(&mut self, from: u64, below: u64) -> Option<Stored> {
        let from = from.max(self.acked_through + 1);
        let max_body = self.max_body();
        let mut i = self.segments.iter().position(|s| s.last_id >= from)?;
        while i < self.segments.len() {
            let seg = &self.segments[i];
            if seg.first_id >= below {
                return None;
            }
            let mut pos = match self.cursor {
                Some((first, offset, id)) if first == seg.first_id && id < from => offset,
                _ => SEGMENT_HEADER,
            };
            let file = match File::open(&seg.path) {
                Ok(f) => f,
                Err(e) => {
                    // Its records are lost: counted once, as damage.
                    tracing::warn!(segment = %seg.path.display(), error = %e, "spool: segment unreadable; skipped");
                    let (bytes, count) = (seg.bytes, seg.count);
                    if !self.segments[i].damage.contains(&(SEGMENT_HEADER, bytes)) {
                        self.note_damage(i, SEGMENT_HEADER, bytes, count);
                    }
                    i += 1;
                    continue;
                }
            };
            let end = seg.bytes;
            while pos < end {
                if let Some(&(_, d_end)) = self.segments[i].damage.iter().find(|d| d.0 == pos) {
                    pos = d_end;
                    continue;
                }
                match read_record(&file, pos, end, max_body) {
                    Ok((p, body)) => {
                        let record_end = pos + (p.end as u64);
                        if p.id >= below {
                            return None;
                        }
                        if p.id >= from {
                            let payload = &body[p.payload.0..p.payload.1];
                            match record::decode(p.version, payload) {
                                Ok(scrape) => {
                                    self.cursor =
                                        Some((self.segments[i].first_id, record_end, p.id));
                                    let acked_items = match self.partial {
                                        Some((id, items)) if id == p.id => items,
                                        _ => 0,
                                    };
                                    return Some(Stored {
                                        id: p.id,
                                        scrape,
                                        acked_items,
                                    });
                                }
                                Err(e) => {
                                    tracing::warn!(segment = %self.segments[i].path.display(), offset = pos, id = p.id, error = %e, "spool: record undecodable; skipped");
                                    self.note_damage(i, pos, record_end, 1);
                                }
                            }
                        }
                        pos = record_end;
                    }
                    Err(()) => {
                        // New damage: find the next valid record in the rest of the file.
                        let mut rest = vec![0u8; (end - pos) as usize];
                        let next = match file.read_exact_at(&mut rest, pos) {
                            Ok(()) => resync(&rest, 1, max_body),
                            Err(_) => None,
                        };
                        let skip = next.unwrap_or(rest.len());
                        let records = records_in(&rest[..skip]).max(1);
                        tracing::warn!(segment = %self.segments[i].path.display(), offset = pos, bytes = skip, records, "spool: skipped damaged bytes");
                        self.note_damage(i, pos, pos + skip as u64, records);
                        pos += skip as u64;
                    }
                }
            }
            i += 1;
        }
        None
    }

    fn note_damage(&mut self, segment: usize, start: u64, end: u64, records: u64) {
        self.corrupt_found += records;
        let damage = &mut self.segments[segment].damage;
        if damage.len() < MAX_KNOWN_DAMAGE {
            damage.push((start, end));
        }
    }
}

/// The record at `pos` of `file` (whose valid bytes end at `end`), and its bytes.
fn read_record(file: &File, pos: u64, end: u64, max_body: usize) -> Result<(Parsed, Vec<u8>), ()> {
    let mut header = [0u8; RECORD_HEADER];
    if pos + RECORD_HEADER as u64 > end {
        return Err(());
    }
    file.read_exact_at(&mut header, pos).map_err(|_| ())?;
    let len = u32::from_le_bytes(header[4..8].try_into().map_err(|_| ())?) as usize;
    if header[..4] != RECORD_MARKER
        || !(BODY_HEADER..=max_body).contains(&len)
        || pos + (RECORD_HEADER + len) as u64 > end
    {
        return Err(());
    }
    let mut buf = vec![0u8; RECORD_HEADER + len];
    buf[..RECORD_HEADER].copy_from_slice(&header);
    file.read_exact_at(&mut buf[RECORD_HEADER..], pos + RECORD_HEADER as u64)
        .map_err(|_| ())?;
    let p = parse_at(&buf, 0, max_body).ok_or(())?;
    Ok((p, buf))
}

/// One record found by [`inspect`].
#[derive(Debug, Clone)]
pub struct Inspected {
    pub segment: PathBuf,
    pub offset: u64,
    pub len: u64,
    pub id: u64,
    pub timestamp_ms: i64,
}

/// Every valid record of the spool in `dir`, read without taking the lock: for tools
/// and tests.
pub fn inspect(dir: &Path) -> io::Result<Vec<Inspected>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let buf = fs::read(&path)?;
        let mut pos = SEGMENT_HEADER as usize;
        while pos < buf.len() {
            match parse_at(&buf, pos, usize::MAX >> 1) {
                Some(p) => {
                    out.push(Inspected {
                        segment: path.clone(),
                        offset: pos as u64,
                        len: (p.end - pos) as u64,
                        id: p.id,
                        timestamp_ms: p.ts,
                    });
                    pos = p.end;
                }
                None => match resync(&buf, pos + 1, usize::MAX >> 1) {
                    Some(next) => pos = next,
                    None => break,
                },
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::record::tests::sample_scrape;

    fn opts(dir: &Path, max_bytes: u64, segment_bytes: u64) -> SpoolOptions {
        SpoolOptions {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes,
        }
    }

    fn small(ts: i64) -> Scrape {
        let mut s = sample_scrape(ts);
        // Without the 200 kB label: a record of a few hundred bytes.
        let mut meta = (*s.samples[0].meta).clone();
        meta.labels.pop();
        s.samples[0].meta = std::sync::Arc::new(meta);
        s.gone.clear();
        s
    }

    fn append(spool: &mut Spool, id: u64, ts: i64) -> Vec<Dropped> {
        let payload = record::encode(&small(ts));
        spool.append(id, ts, record::VERSION, &payload).unwrap()
    }

    fn read_all(spool: &mut Spool) -> Vec<(u64, i64)> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(s) = spool.read_at_or_after(from, u64::MAX) {
            out.push((s.id, s.scrape.timestamp_ms));
            from = s.id + 1;
        }
        out
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn records_round_trip_across_a_restart_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, rec) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
        assert_eq!((rec.next_id, rec.records, rec.first_unacked), (1, 0, None));
        let big = sample_scrape(7);
        spool
            .append(1, 7, record::VERSION, &record::encode(&big))
            .unwrap();
        for id in 2..=30 {
            append(&mut spool, id, id as i64 * 1000);
        }
        spool.sync().unwrap();
        assert!(spool.segments() > 2, "segments roll at segment_bytes");
        drop(spool);

        let (mut spool, rec) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
        assert_eq!(rec.next_id, 31);
        assert_eq!(rec.first_unacked, Some(1));
        assert_eq!(rec.records, 30);
        assert!(rec.losses.is_empty() && rec.corrupt_records == 0);
        let first = spool.read_at_or_after(1, u64::MAX).unwrap();
        assert_eq!(first.scrape.samples[0].meta, big.samples[0].meta);
        let got = read_all(&mut spool);
        let want: Vec<(u64, i64)> = std::iter::once((1, 7))
            .chain((2..=30).map(|id| (id, id as i64 * 1000)))
            .collect();
        assert_eq!(got, want);
        // A read window stops before `below`.
        assert_eq!(spool.read_at_or_after(5, 6).map(|s| s.id), Some(5));
        assert!(spool.read_at_or_after(6, 6).is_none());
        // Appends go on after the recovered ids only.
        assert!(matches!(
            spool.append(30, 0, record::VERSION, b""),
            Err(SpoolError::OutOfOrder { .. })
        ));
        append(&mut spool, 31, 31_000);
    }

    #[test]
    fn acked_records_are_deleted_and_the_rest_replayed_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
        for id in 1..=40 {
            append(&mut spool, id, id as i64);
        }
        let before = spool.segments();
        spool.ack(25, Some((26, 3)));
        assert!(
            spool.segments() < before,
            "fully acked segments are deleted"
        );
        spool.write_checkpoint().unwrap();
        drop(spool);
        let (mut spool, rec) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
        assert_eq!(rec.first_unacked, Some(26));
        assert_eq!(rec.partial, Some((26, 3)));
        assert_eq!(rec.records, 15);
        let first = spool.read_at_or_after(0, u64::MAX).unwrap();
        assert_eq!((first.id, first.acked_items), (26, 3));
        assert_eq!(read_all(&mut spool).len(), 15);
        // Everything acked: a restart finds nothing to send and numbers go on.
        spool.ack(40, None);
        spool.write_checkpoint().unwrap();
        drop(spool);
        let (_, rec) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
        assert_eq!((rec.first_unacked, rec.records, rec.next_id), (None, 0, 41));
    }

    #[test]
    fn a_torn_tail_is_truncated_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
        for id in 1..=3 {
            append(&mut spool, id, id as i64 * 10);
        }
        drop(spool);
        let seg = segment_files(dir.path()).pop().unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        // The last record half written, as a power loss leaves it.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 40)
            .unwrap();
        let (mut spool, rec) = Spool::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!(rec.corrupt_records, 1);
        assert_eq!(rec.losses.len(), 1);
        assert_eq!(rec.losses[0].reason, REASON_CORRUPT);
        assert_eq!((rec.losses[0].from_ms, rec.losses[0].to_ms), (20, 0));
        assert_eq!(read_all(&mut spool), vec![(1, 10), (2, 20)]);
        assert!(fs::metadata(&seg).unwrap().len() < len - 40, "truncated");
        // The spool carries on: new records after the cut.
        append(&mut spool, 4, 40);
        drop(spool);
        let (mut spool, rec) = Spool::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!(rec.corrupt_records, 0);
        assert_eq!(read_all(&mut spool), vec![(1, 10), (2, 20), (4, 40)]);
    }

    #[test]
    fn a_flipped_byte_costs_its_record_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
        for id in 1..=5 {
            append(&mut spool, id, id as i64 * 10);
        }
        drop(spool);
        let records = inspect(dir.path()).unwrap();
        assert_eq!(records.len(), 5);
        let Inspected {
            segment: path,
            offset,
            len,
            id,
            ..
        } = records[2].clone();
        assert_eq!(id, 3);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        let mut byte = [0u8];
        File::open(&path)
            .unwrap()
            .read_exact_at(&mut byte, offset + len / 2)
            .unwrap();
        f.write_all_at(&[byte[0] ^ 0x5a], offset + len / 2).unwrap();
        drop(f);

        let (mut spool, rec) = Spool::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!(rec.corrupt_records, 1);
        assert_eq!(
            rec.losses,
            vec![Loss {
                reason: REASON_CORRUPT.into(),
                batches: 1,
                bytes: len,
                from_ms: 20,
                to_ms: 40,
            }]
        );
        assert_eq!(
            read_all(&mut spool),
            vec![(1, 10), (2, 20), (4, 40), (5, 50)]
        );
        assert_eq!(spool.take_corrupt_found(), 0, "counted once, at open");
    }

    #[test]
    fn damage_found_by_a_read_is_skipped_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
        for id in 1..=4 {
            append(&mut spool, id, id as i64);
        }
        let records = inspect(dir.path()).unwrap();
        let (path, offset) = (records[1].segment.clone(), records[1].offset);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"XXXX", offset).unwrap();
        assert_eq!(read_all(&mut spool), vec![(1, 1), (3, 3), (4, 4)]);
        assert_eq!(spool.take_corrupt_found(), 1);
        assert_eq!(read_all(&mut spool).len(), 3);
        assert_eq!(spool.take_corrupt_found(), 0);
    }

    #[test]
    fn a_full_budget_drops_the_oldest_and_reports_the_loss() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(opts(dir.path(), 16 * 1024, 4096)).unwrap();
        let mut dropped = Vec::new();
        for id in 1..=200 {
            dropped.extend(append(&mut spool, id, id as i64 * 1000));
            assert!(spool.bytes() <= 16 * 1024, "within budget");
        }
        assert!(!dropped.is_empty());
        let mut losses = Vec::new();
        let mut through = 0;
        for d in &dropped {
            assert!(d.through_id > through);
            through = d.through_id;
            merge_loss(&mut losses, d.loss.clone().unwrap());
        }
        assert_eq!(losses.len(), 1);
        let l = &losses[0];
        assert_eq!(l.reason, REASON_FULL);
        assert_eq!(l.batches, through);
        assert_eq!((l.from_ms, l.to_ms), (1000, through as i64 * 1000));
        // What is left is exactly the newest records, in order.
        let left = read_all(&mut spool);
        assert_eq!(left.first().unwrap().0, through + 1);
        assert_eq!(left.last().unwrap().0, 200);
        assert_eq!(left.len() as u64, 200 - through);

        // Acknowledged: only the segment being written stays.
        spool.ack(200, None);
        assert_eq!(spool.segments(), 1);
        assert!(read_all(&mut spool).is_empty());
    }

    #[test]
    fn a_partly_acknowledged_segment_counts_only_the_rest_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(opts(dir.path(), 16 * 1024, 4096)).unwrap();
        let mut id = 0;
        while spool.segments() < 2 {
            id += 1;
            append(&mut spool, id, id as i64);
        }
        let first_segment_last = id - 1;
        spool.ack(first_segment_last - 2, None);
        let mut dropped = Vec::new();
        while dropped.is_empty() {
            id += 1;
            dropped = append(&mut spool, id, id as i64);
        }
        let loss = dropped[0].loss.clone().unwrap();
        assert_eq!(loss.batches, 2);
        assert_eq!(
            (loss.from_ms, loss.to_ms),
            (first_segment_last as i64 - 1, first_segment_last as i64)
        );
    }

    #[test]
    fn losses_and_acks_survive_in_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
        let loss = Loss {
            reason: REASON_FULL.into(),
            batches: 3,
            bytes: 99,
            from_ms: 1,
            to_ms: 2,
        };
        spool.keep_loss(1, loss.clone());
        spool.keep_loss(
            2,
            Loss {
                reason: REASON_CORRUPT.into(),
                ..loss.clone()
            },
        );
        spool.losses_reported(1);
        spool.write_checkpoint().unwrap();
        drop(spool);
        let (_, rec) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
        assert_eq!(rec.unreported.len(), 1);
        assert_eq!(rec.unreported[0].reason, REASON_CORRUPT);

        // A damaged checkpoint costs re-sending, nothing else.
        fs::write(dir.path().join("checkpoint"), b"gsckpt\0\x01garbage").unwrap();
        let (_, rec) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
        assert!(rec.unreported.is_empty());
    }

    /// A process crash (no sync, no final checkpoint): every record written is there;
    /// acks since the last checkpoint are forgotten, so those records are sent again.
    #[test]
    fn a_crash_loses_no_written_record_and_resends_since_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
        for id in 1..=10 {
            append(&mut spool, id, id as i64);
        }
        spool.ack(5, None);
        spool.write_checkpoint().unwrap();
        for id in 11..=15 {
            append(&mut spool, id, id as i64);
        }
        spool.ack(12, None);
        drop(spool);
        let (mut spool, rec) = Spool::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!((rec.first_unacked, rec.next_id), (Some(6), 16));
        let ids: Vec<u64> = read_all(&mut spool).iter().map(|r| r.0).collect();
        assert_eq!(ids, (6..=15).collect::<Vec<u64>>());
    }

    #[test]
    fn kept_losses_are_bounded_by_merging() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
        for id in 1..=1000 {
            spool.keep_loss(
                id,
                Loss {
                    reason: REASON_FULL.into(),
                    batches: 1,
                    bytes: 10,
                    from_ms: id as i64,
                    to_ms: id as i64,
                },
            );
        }
        assert_eq!(spool.losses.len(), MAX_KEPT_LOSSES);
        let total: u64 = spool.losses.iter().map(|(_, l)| l.batches).sum();
        assert_eq!(total, 1000);
        // Reported up to 999: the merged entry holds 1000, so it stays whole.
        spool.losses_reported(999);
        assert_eq!(spool.losses.len(), 1);
        assert_eq!(spool.losses[0].1.to_ms, 1000);
    }

    #[test]
    fn a_spool_directory_is_used_by_one_collector_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (_spool, _) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
        assert!(matches!(
            Spool::open(opts(dir.path(), 1 << 20, 4096)),
            Err(SpoolError::Locked(_))
        ));
    }

    #[test]
    fn a_record_over_half_the_budget_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(opts(dir.path(), 16 * 1024, 4096)).unwrap();
        assert!(matches!(
            spool.append(1, 0, record::VERSION, &[0; 9000]),
            Err(SpoolError::TooLarge { .. })
        ));
        // A record larger than a segment gets a segment of its own.
        spool.append(1, 0, record::VERSION, &[0; 5000]).unwrap();
        append(&mut spool, 2, 2);
        assert_eq!(spool.segments(), 2);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Whatever a segment file holds, opening and reading never panic, and the
            /// records that are intact are read.
            #[test]
            fn arbitrary_bytes_in_a_segment_never_panic(
                garbage in proptest::collection::vec(any::<u8>(), 0..4096),
                at in 0usize..4096,
                with_magic in any::<bool>(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join(segment_name(1));
                let mut bytes = if with_magic { SEGMENT_MAGIC.to_vec() } else { Vec::new() };
                bytes.extend_from_slice(&garbage);
                fs::write(&path, &bytes).unwrap();
                let (mut spool, _) = Spool::open(opts(dir.path(), 1 << 20, 4096)).unwrap();
                let _ = read_all(&mut spool);
                drop(spool);

                // Valid records with garbage spliced in: the records outside it survive.
                let _ = fs::remove_file(&path);
                let (mut spool, _) = Spool::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
                for id in 1..=6 {
                    append(&mut spool, id, id as i64);
                }
                drop(spool);
                let seg = segment_files(dir.path()).pop().unwrap();
                let mut bytes = fs::read(&seg).unwrap();
                let at = at.min(bytes.len());
                let end = (at + garbage.len().min(64)).min(bytes.len());
                bytes.splice(at..end, garbage.iter().copied().take(64));
                fs::write(&seg, &bytes).unwrap();
                let (mut spool, _) = Spool::open(opts(dir.path(), 1 << 20, 1 << 20)).unwrap();
                let got = read_all(&mut spool);
                prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
                prop_assert!(got.len() <= 6);
            }
        }
    }
}
