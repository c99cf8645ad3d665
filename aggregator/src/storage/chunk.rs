//! Chunks: the compressed points of one series in one partition, and its rollups, in
//! the formats of `goroscope_chunk` (pco; docs/chunks.md says why and what it costs).

use super::head::Points;

/// Points one chunk holds at most; a longer run of a partition is cut into several.
pub const MAX_POINTS: usize = 1 << 16;

/// Encodes points in time order (at most [`MAX_POINTS`]).
pub fn encode(points: &[(i64, f64)]) -> Vec<u8> {
    let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
    let values: Vec<f64> = points.iter().map(|p| p.1).collect();
    goroscope_chunk::encode(&ts, &values)
}

/// Decodes a chunk; an error says why it cannot be read.
pub fn decode(bytes: &[u8]) -> Result<Points, String> {
    let c = goroscope_chunk::decode(bytes).map_err(|e| e.to_string())?;
    Ok(c.timestamps.into_iter().zip(c.values).collect())
}

/// Pre-aggregated samples of one series over one bucket of time, the query engine's
/// own bucket type: bucket `end_ms` covers `(end_ms - resolution, end_ms]`. Staleness
/// markers are not counted in min, max, sum and count (all 0 when the bucket holds
/// nothing else), but are the `last` sample when they come last: a series read from
/// rollups ends where it ended. `min` is NaN only when every sample was NaN (as
/// Prometheus' `min_over_time` has it).
pub use goroscope_promql::RollupBucket as Rollup;

/// Prometheus' staleness marker: a NaN with this payload ends a series.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// The rollup of one sample.
fn rollup_of(end_ms: i64, ts: i64, v: f64) -> Rollup {
    let stale = v.to_bits() == STALE_NAN;
    let counted = if stale { 0.0 } else { v };
    Rollup {
        end_ms,
        min: counted,
        max: counted,
        sum: counted,
        count: u64::from(!stale),
        last: v,
        last_ms: ts,
    }
}

/// Folds `o` into `into`, a rollup of the same bucket.
pub fn merge(into: &mut Rollup, o: &Rollup) {
    if into.count == 0 {
        (into.min, into.max, into.sum) = (o.min, o.max, o.sum);
    } else if o.count > 0 {
        if o.min < into.min || into.min.is_nan() {
            into.min = o.min;
        }
        if o.max > into.max || into.max.is_nan() {
            into.max = o.max;
        }
        into.sum += o.sum;
    }
    into.count += o.count;
    if o.last_ms >= into.last_ms {
        into.last = o.last;
        into.last_ms = o.last_ms;
    }
}

/// The end of the bucket of `resolution` holding `ts`.
pub fn bucket_end(ts: i64, resolution: i64) -> i64 {
    let k = ts.div_euclid(resolution);
    if ts.rem_euclid(resolution) == 0 {
        ts
    } else {
        k.saturating_add(1).saturating_mul(resolution)
    }
}

/// The rollups of points in time order, one per bucket that holds a sample.
pub fn rollups(points: &[(i64, f64)], resolution: i64) -> Vec<Rollup> {
    let mut out: Vec<Rollup> = Vec::new();
    for &(ts, v) in points {
        let end = bucket_end(ts, resolution);
        let one = rollup_of(end, ts, v);
        match out.last_mut() {
            Some(r) if r.end_ms == end => merge(r, &one),
            _ => out.push(one),
        }
    }
    out
}

/// Encodes rollups (in bucket order) as a column chunk: over the bucket ends, the
/// columns min, max, sum, count, last and the last sample's time (counts and times are
/// whole numbers well within a double's 53 bits).
pub fn encode_rollups(rows: &[Rollup]) -> Vec<u8> {
    let ends: Vec<i64> = rows.iter().map(|r| r.end_ms).collect();
    let col = |f: fn(&Rollup) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let cols = [
        col(|r| r.min),
        col(|r| r.max),
        col(|r| r.sum),
        col(|r| r.count as f64),
        col(|r| r.last),
        col(|r| r.last_ms as f64),
    ];
    let refs: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
    goroscope_chunk::encode_columns(&ends, &refs)
}

pub fn decode_rollups(bytes: &[u8]) -> Result<Vec<Rollup>, String> {
    let c = goroscope_chunk::decode_columns(bytes).map_err(|e| e.to_string())?;
    let [min, max, sum, count, last, last_ts] = c.columns.as_slice() else {
        return Err(format!(
            "a rollup chunk holds 6 columns, not {}",
            c.columns.len()
        ));
    };
    Ok(c.timestamps
        .iter()
        .enumerate()
        .map(|(i, &end_ms)| Rollup {
            end_ms,
            min: min[i],
            max: max[i],
            sum: sum[i],
            count: count[i].max(0.0) as u64,
            last: last[i],
            last_ms: last_ts[i] as i64,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_left_open_and_right_closed() {
        assert_eq!(bucket_end(60_000, 60_000), 60_000);
        assert_eq!(bucket_end(60_001, 60_000), 120_000);
        assert_eq!(bucket_end(-1, 60_000), 0);
        assert_eq!(bucket_end(-60_000, 60_000), -60_000);
    }

    #[test]
    fn rollups_fold_like_the_over_time_functions_and_round_trip() {
        let stale = f64::from_bits(STALE_NAN);
        let pts = [
            (1_000, f64::NAN),
            (30_000, 3.0),
            (60_000, 1.0),
            (61_000, stale),
            (90_000, 5.0),
            (120_000, -2.0),
        ];
        let r = rollups(&pts, 60_000);
        assert_eq!(r.len(), 2);
        // The marker at 61 s is the last of nothing: the next sample follows it.
        assert_eq!(
            (r[0].end_ms, r[0].min, r[0].max, r[0].count),
            (60_000, 1.0, 3.0, 3)
        );
        assert!(r[0].sum.is_nan());
        assert_eq!((r[0].last, r[0].last_ms), (1.0, 60_000));
        assert_eq!(
            (r[1].min, r[1].max, r[1].sum, r[1].count, r[1].last),
            (-2.0, 5.0, 3.0, 2, -2.0)
        );
        let back = decode_rollups(&encode_rollups(&r)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], r[1]);
        // Folding two halves gives the whole.
        let mut a = rollups(&pts[..2], 60_000)[0];
        merge(&mut a, &rollups(&pts[2..3], 60_000)[0]);
        assert_eq!((a.min, a.max, a.count, a.last), (1.0, 3.0, 3, 1.0));
        assert!(decode_rollups(&encode(&[(1, 1.0)])).is_err());
        assert!(decode(&encode_rollups(&r)).is_err());
        // A bucket ending in a staleness marker ends with it; one holding only the
        // marker counts nothing.
        let r = rollups(&[(10, 1.0), (20, stale)], 60_000);
        assert_eq!(
            (r[0].count, r[0].min, r[0].last.to_bits()),
            (1, 1.0, STALE_NAN)
        );
        let r = rollups(&[(20, stale)], 60_000);
        assert_eq!((r[0].count, r[0].sum, r[0].last_ms), (0, 0.0, 20));
    }
}
