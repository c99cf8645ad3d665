//! Stored captures (traces and profiles) in the `captures` family.
//!
//! | key | value |
//! |---|---|
//! | `i` + id | version byte, then the wire's `CaptureInfo` (protobuf) |
//! | `d` + id + chunk index (u32 BE) | up to [`CHUNK`] bytes of the capture |
//!
//! An id is 16 hex digits: the completion time in Unix milliseconds (12 digits) then a
//! counter (4 digits), so ids sort by time. A capture is written in one atomic write,
//! its chunks and its info together, and deleted the same way: a reader never sees half
//! of one. Captures are independent of the ingest path and written directly, not
//! through the writer thread.

use std::sync::atomic::{AtomicU64, Ordering};

use goroscope_proto::v1;
use prost::Message;

use super::rocks::{CF_CAPTURES, WriteSet};
use super::{Storage, StorageError, records};

/// Bytes per stored chunk.
pub const CHUNK: usize = 1 << 20;

const INFO: u8 = b'i';
const DATA: u8 = b'd';

fn info_key(id: &str) -> Vec<u8> {
    let mut k = vec![INFO];
    k.extend_from_slice(id.as_bytes());
    k
}

fn data_key(id: &str, index: u32) -> Vec<u8> {
    let mut k = vec![DATA];
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn data_range(id: &str) -> (Vec<u8>, Vec<u8>) {
    (data_key(id, 0), {
        let mut k = vec![DATA];
        k.extend_from_slice(id.as_bytes());
        k.extend_from_slice(&[0xff; 5]);
        k
    })
}

/// A new capture id, unique within this process and ordered by time.
pub fn new_id(now_ms: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    format!("{:012x}{:04x}", now_ms.max(0) as u64 & 0xffff_ffff_ffff, n)
}

/// Whether `id` has the shape of a capture id (it becomes part of a key).
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn encode_info(info: &v1::CaptureInfo) -> Vec<u8> {
    let mut bytes = vec![records::VERSION];
    info.encode(&mut bytes).expect("a Vec grows as needed");
    bytes
}

fn decode_info(data: &[u8]) -> Option<v1::CaptureInfo> {
    match data.first() {
        Some(1..=records::VERSION) => v1::CaptureInfo::decode(&data[1..]).ok(),
        _ => None,
    }
}

impl Storage {
    /// Stores a capture, its info and its bytes, in one write. Blocking.
    pub fn store_capture(&self, info: &v1::CaptureInfo, data: &[u8]) -> Result<(), StorageError> {
        let mut set = WriteSet::default();
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            set.put(CF_CAPTURES, data_key(&info.id, i as u32), chunk.to_vec());
        }
        set.put(CF_CAPTURES, info_key(&info.id), encode_info(info));
        self.engine.commit(set)
    }

    /// Stored captures, newest first, that `keep` accepts, at most `limit`. Blocking.
    pub fn list_captures(
        &self,
        limit: usize,
        mut keep: impl FnMut(&v1::CaptureInfo) -> bool,
    ) -> Result<Vec<v1::CaptureInfo>, StorageError> {
        let mut out = Vec::new();
        self.engine.scan_range_rev(
            CF_CAPTURES,
            &[INFO],
            &[INFO + 1],
            usize::MAX,
            |key, value| {
                match decode_info(value) {
                    Some(info) if keep(&info) => out.push(info),
                    Some(_) => {}
                    None => tracing::warn!(
                        key = %String::from_utf8_lossy(key),
                        "skipping a capture record that cannot be decoded"
                    ),
                }
                Ok(out.len() < limit)
            },
        )?;
        Ok(out)
    }

    /// One stored capture's info. Blocking.
    pub fn capture_info(&self, id: &str) -> Result<Option<v1::CaptureInfo>, StorageError> {
        Ok(self
            .engine
            .get(CF_CAPTURES, &info_key(id))?
            .and_then(|v| decode_info(&v)))
    }

    /// Chunk `index` of a stored capture, if there is one. Blocking.
    pub fn capture_chunk(&self, id: &str, index: u32) -> Result<Option<Vec<u8>>, StorageError> {
        self.engine.get(CF_CAPTURES, &data_key(id, index))
    }

    /// Deletes captures completed before `before_ms`, then the oldest until at most
    /// `max_total_bytes` remain; how many were deleted. Blocking.
    pub fn forget_captures(
        &self,
        before_ms: i64,
        max_total_bytes: u64,
    ) -> Result<usize, StorageError> {
        let all = self.list_captures(usize::MAX, |_| true)?;
        let mut kept_bytes = 0u64;
        let mut set = WriteSet::default();
        let mut gone = 0;
        // Newest first: the oldest are the ones past the budget.
        for info in all {
            kept_bytes = kept_bytes.saturating_add(info.size_bytes);
            if info.completed_ms < before_ms || kept_bytes > max_total_bytes {
                let (from, to) = data_range(&info.id);
                set.delete_range(CF_CAPTURES, from, to);
                set.delete(CF_CAPTURES, info_key(&info.id));
                gone += 1;
            }
        }
        if gone > 0 {
            self.engine.commit(set)?;
            tracing::info!(
                captures = gone,
                "deleted captures past the retention or the size budget"
            );
        }
        Ok(gone)
    }
}
