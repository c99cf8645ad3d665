//! Key and value encodings of the column families (see the table in `storage/mod.rs`).
//!
//! Integers are big-endian so that RocksDB's bytewise order is numeric order; signed
//! timestamps have their sign bit flipped for the same reason.

/// `head` key (the older per-sample layout, converted at open): series id, then
/// timestamp.
#[cfg(test)]
pub fn head_key(series: u64, ts_ms: i64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&series.to_be_bytes());
    key[8..].copy_from_slice(&ordered_i64(ts_ms).to_be_bytes());
    key
}

/// Splits a `head` key into series id and timestamp.
pub fn split_head_key(key: &[u8]) -> Option<(u64, i64)> {
    let series = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let ts = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    (key.len() == 16).then_some((series, unordered_i64(ts)))
}

/// `head` value: the sample, an IEEE 754 double, little-endian.
#[cfg(test)]
pub fn head_value(value: f64) -> [u8; 8] {
    value.to_le_bytes()
}

pub fn decode_head_value(bytes: &[u8]) -> Option<f64> {
    Some(f64::from_le_bytes(bytes.try_into().ok()?))
}

/// `headlog` key: the writer shard, then the number of the group commit in that shard.
pub fn headlog_key(shard: u8, commit: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = shard;
    key[1..].copy_from_slice(&commit.to_be_bytes());
    key
}

pub fn split_headlog_key(key: &[u8]) -> Option<(u8, u64)> {
    (key.len() == 9).then_some(())?;
    Some((key[0], u64::from_be_bytes(key[1..].try_into().ok()?)))
}

/// `chunks` key: partition, series id, the chunk's first timestamp, then the flush that
/// wrote it (shard in the top byte, head commit below), which keeps two chunks of one
/// series starting at the same time (a late sample) apart.
pub fn chunk_key(partition: i64, series: u64, first_ts: i64, flush: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&ordered_i64(partition).to_be_bytes());
    key[8..16].copy_from_slice(&series.to_be_bytes());
    key[16..24].copy_from_slice(&ordered_i64(first_ts).to_be_bytes());
    key[24..].copy_from_slice(&flush.to_be_bytes());
    key
}

/// The prefix of every chunk of one series in one partition.
pub fn chunk_prefix(partition: i64, series: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&ordered_i64(partition).to_be_bytes());
    key[8..].copy_from_slice(&series.to_be_bytes());
    key
}

/// The first key of a partition (and the end of the ones before it).
pub fn partition_start(partition: i64) -> [u8; 8] {
    ordered_i64(partition).to_be_bytes()
}

/// (partition, series id, first timestamp) of a `chunks` key.
pub fn split_chunk_key(key: &[u8]) -> Option<(i64, u64, i64)> {
    (key.len() == 32).then_some(())?;
    let partition = unordered_i64(u64::from_be_bytes(key[..8].try_into().ok()?));
    let series = u64::from_be_bytes(key[8..16].try_into().ok()?);
    let first = unordered_i64(u64::from_be_bytes(key[16..24].try_into().ok()?));
    Some((partition, series, first))
}

/// The resolutions of rollups, by the byte that leads their keys.
pub const ROLLUPS: [(u8, i64); 2] = [(1, 60_000), (2, 3_600_000)];

/// `rollups` key: the resolution's byte, then as a `chunks` key (the first bucket's end
/// in place of the first timestamp).
pub fn rollup_key(res: u8, partition: i64, series: u64, first_end: i64, flush: u64) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = res;
    key[1..].copy_from_slice(&chunk_key(partition, series, first_end, flush));
    key
}

pub fn rollup_prefix(res: u8, partition: i64, series: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = res;
    key[1..].copy_from_slice(&chunk_prefix(partition, series));
    key
}

/// The first `rollups` key of a resolution's partition.
pub fn rollup_partition_start(res: u8, partition: i64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = res;
    key[1..].copy_from_slice(&partition_start(partition));
    key
}

/// `latest` value: the newest compacted sample of a series, time then value.
pub fn latest_value(ts: i64, value: f64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&ts.to_be_bytes());
    out[8..].copy_from_slice(&value.to_le_bytes());
    out
}

pub fn decode_latest_value(bytes: &[u8]) -> Option<(i64, f64)> {
    (bytes.len() == 16).then_some(())?;
    Some((
        i64::from_be_bytes(bytes[..8].try_into().ok()?),
        f64::from_le_bytes(bytes[8..].try_into().ok()?),
    ))
}

/// `meta` key of the number of samples compacted into a partition.
pub fn partition_samples_key(partition: i64) -> Vec<u8> {
    let mut key = PARTITION_SAMPLES_PREFIX.to_vec();
    key.extend_from_slice(&ordered_i64(partition).to_be_bytes());
    key
}

pub const PARTITION_SAMPLES_PREFIX: &[u8] = b"samples/";

pub fn split_partition_samples_key(key: &[u8]) -> Option<i64> {
    let rest = key.strip_prefix(PARTITION_SAMPLES_PREFIX)?;
    Some(unordered_i64(u64::from_be_bytes(rest.try_into().ok()?)))
}

/// `meta` key of the last group commit of a writer shard that a flush took from the
/// headlog: group commit numbers never go back, even once the headlog is empty (the
/// export queue keeps records under the same numbers).
pub fn flushed_key(shard: u8) -> Vec<u8> {
    let mut key = b"flushed/".to_vec();
    key.push(shard);
    key
}

/// `meta` key of the time partition length the database was created with.
pub const BLOCK_KEY: &[u8] = b"block_ms";
/// `meta` key of the number of writer shards the database was created with.
pub const SHARDS_KEY: &[u8] = b"shards";

/// `series` key: the series id.
pub fn series_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub fn decode_series_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// `targets` key: host, NUL, pid, start ticks. A host name holds no NUL (identities
/// allow only letters, digits, '.', '-' and '_'), so the encoding is unambiguous.
pub fn target_key(host: &str, pid: u32, start_ticks: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(host.len() + 13);
    key.extend_from_slice(host.as_bytes());
    key.push(0);
    key.extend_from_slice(&pid.to_be_bytes());
    key.extend_from_slice(&start_ticks.to_be_bytes());
    key
}

/// `stacks` key: the target key, then the summary's timestamp, then its source (one
/// byte, [`stack_source_byte`]): summaries of several sources taken in the same
/// millisecond are all kept.
pub fn stacks_key(target: &super::TargetKey, ts_ms: i64, source: u8) -> Vec<u8> {
    let mut key = target_key(&target.host, target.pid, target.start_ticks);
    key.extend_from_slice(&ordered_i64(ts_ms).to_be_bytes());
    key.push(source);
    key
}

/// The byte of a summary's source in its key.
pub fn stack_source_byte(source: &str) -> u8 {
    match source {
        "debug=1" => 1,
        "debug=2" => 2,
        "goroutineleak" => 3,
        _ => 0xff,
    }
}

/// The timestamp of a `stacks` key.
pub fn stacks_key_ts(key: &[u8]) -> Option<i64> {
    let end = key.len().checked_sub(1)?;
    let ts = key.get(end.checked_sub(8)?..end)?;
    Some(unordered_i64(u64::from_be_bytes(ts.try_into().ok()?)))
}

/// `[from, to)` covering every `stacks` key of a target.
pub fn stacks_range(target: &super::TargetKey) -> (Vec<u8>, Vec<u8>) {
    (
        stacks_key(target, i64::MIN, 0),
        // The target key is fixed-length after the host's NUL, so the key of the next
        // start tick (or, past the last, of the next pid) bounds this target's keys.
        match target.start_ticks.checked_add(1) {
            Some(next) => target_key(&target.host, target.pid, next),
            None => {
                let mut k = target_key(&target.host, target.pid, u64::MAX);
                k.push(0xff);
                k.extend_from_slice(&[0xff; 9]);
                k
            }
        },
    )
}

/// `meta` key of the ingest high-water mark of one host.
pub fn ingest_mark_key(host: &str) -> Vec<u8> {
    let mut key = b"ingest/".to_vec();
    key.extend_from_slice(host.as_bytes());
    key
}

pub const INGEST_MARK_PREFIX: &[u8] = b"ingest/";

/// `meta` key of a host's ingest statistics.
pub fn host_stats_key(host: &str) -> Vec<u8> {
    let mut key = HOST_STATS_PREFIX.to_vec();
    key.extend_from_slice(host.as_bytes());
    key
}

pub const HOST_STATS_PREFIX: &[u8] = b"host/";

/// `meta` value of an ingest mark: epoch, then the highest stored sequence number.
pub fn ingest_mark_value(epoch: u64, seq: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&epoch.to_be_bytes());
    value[8..].copy_from_slice(&seq.to_be_bytes());
    value
}

pub fn decode_ingest_mark(value: &[u8]) -> Option<(u64, u64)> {
    let epoch = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((epoch, seq))
}

fn ordered_i64(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

fn unordered_i64(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_keys_sort_by_series_then_time_including_negative_times() {
        let mut keys = [
            head_key(2, -5),
            head_key(1, 10),
            head_key(1, -10),
            head_key(1, 0),
            head_key(2, i64::MIN),
        ];
        keys.sort();
        let decoded: Vec<_> = keys.iter().map(|k| split_head_key(k).unwrap()).collect();
        assert_eq!(
            decoded,
            vec![(1, -10), (1, 0), (1, 10), (2, i64::MIN), (2, -5)]
        );
    }

    #[test]
    fn malformed_keys_decode_to_none() {
        assert_eq!(split_head_key(&[0; 15]), None);
        assert_eq!(split_head_key(&[0; 17]), None);
        assert_eq!(decode_head_value(&[0; 7]), None);
        assert_eq!(decode_ingest_mark(&[0; 3]), None);
    }

    proptest::proptest! {
        #[test]
        fn head_keys_round_trip_and_keep_order(a in proptest::prelude::any::<(u64, i64)>(), b in proptest::prelude::any::<(u64, i64)>()) {
            proptest::prop_assert_eq!(split_head_key(&head_key(a.0, a.1)), Some(a));
            proptest::prop_assert_eq!(head_key(a.0, a.1).cmp(&head_key(b.0, b.1)), a.cmp(&b));
        }

        #[test]
        fn key_and_value_decoders_take_any_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let _ = split_head_key(&data);
            let _ = decode_head_value(&data);
            let _ = decode_series_key(&data);
            let _ = decode_ingest_mark(&data);
        }

        #[test]
        fn every_value_round_trips_bit_for_bit(v in proptest::prelude::any::<u64>()) {
            let x = f64::from_bits(v);
            proptest::prop_assert_eq!(decode_head_value(&head_value(x)).map(f64::to_bits), Some(v));
        }
    }

    #[test]
    fn chunk_keys_sort_by_partition_series_then_time() {
        let mut keys = [
            chunk_key(1, 2, 5, 0),
            chunk_key(-1, 9, 0, 0),
            chunk_key(1, 1, 7, 3),
            chunk_key(1, 2, -5, 1),
            chunk_key(0, 0, 0, 0),
        ];
        keys.sort();
        let decoded: Vec<_> = keys.iter().map(|k| split_chunk_key(k).unwrap()).collect();
        assert_eq!(
            decoded,
            vec![(-1, 9, 0), (0, 0, 0), (1, 1, 7), (1, 2, -5), (1, 2, 5)]
        );
        assert!(chunk_key(1, 2, 5, 0).starts_with(&chunk_prefix(1, 2)));
        assert!(
            partition_start(2).as_slice() > chunk_key(1, u64::MAX, i64::MAX, u64::MAX).as_slice()
        );
        assert_eq!(split_headlog_key(&headlog_key(3, 77)), Some((3, 77)));
        assert_eq!(split_headlog_key(&[0; 8]), None);
        let v = f64::from_bits(0x7ff0000000000002);
        let (ts, back) = decode_latest_value(&latest_value(-4, v)).unwrap();
        assert_eq!((ts, back.to_bits()), (-4, v.to_bits()));
        assert_eq!(decode_latest_value(&[0; 15]), None);
    }

    #[test]
    fn ingest_mark_round_trips() {
        assert_eq!(decode_ingest_mark(&ingest_mark_value(7, 42)), Some((7, 42)));
    }
}
