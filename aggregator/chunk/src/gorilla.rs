//! The Gorilla-style codec: delta-of-delta timestamps and XOR values, sample by sample
//! into one bit stream (Pelkonen et al., "Gorilla", VLDB 2015; Prometheus' XOR chunks).
//!
//! Per sample the timestamp comes first, then each column's value. All arithmetic on
//! timestamps wraps, so any i64 sequence round-trips; values are compared as bits, so
//! every NaN payload, -0.0 and subnormal round-trips.

use crate::ChunkError;
use crate::bits::{BitReader, BitWriter};

/// Delta-of-delta buckets after the first timestamp: prefix, then the zigzag-encoded
/// value in that many bits. Narrower than Prometheus' (14, 17, 20) because a collector's
/// jitter is a few milliseconds.
const DOD_BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 7), (0b110, 3, 14), (0b1110, 4, 20)];

/// The fewest bits the stream of `n` samples of `columns` values can take: the first
/// sample raw, then at least one bit per timestamp and per value.
pub(crate) fn min_bits(n: usize, columns: usize) -> usize {
    if n == 0 {
        0
    } else {
        64 * (1 + columns) + (n - 1) * (1 + columns)
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// The state carried from one sample to the next, the same on both sides.
#[derive(Clone, Debug)]
pub(crate) struct State {
    n: usize,
    prev_t: i64,
    prev_delta: i64,
    values: Vec<XorState>,
}

#[derive(Clone, Copy, Debug, Default)]
struct XorState {
    prev: u64,
    leading: u32,
    trailing: u32,
}

impl State {
    pub(crate) fn new(columns: usize) -> Self {
        State {
            n: 0,
            prev_t: 0,
            prev_delta: 0,
            values: vec![XorState::default(); columns],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// Appends one sample; `values` has one value per column.
    pub(crate) fn write(&mut self, w: &mut BitWriter, t: i64, values: &[f64]) {
        debug_assert_eq!(values.len(), self.values.len());
        if self.n == 0 {
            w.bits(t as u64, 64);
        } else {
            let delta = t.wrapping_sub(self.prev_t);
            let z = zigzag(delta.wrapping_sub(self.prev_delta));
            if z == 0 {
                w.bit(false);
            } else if let Some(&(prefix, plen, bits)) =
                DOD_BUCKETS.iter().find(|&&(_, _, bits)| z < 1 << bits)
            {
                w.bits(prefix, plen);
                w.bits(z, bits);
            } else {
                w.bits(0b1111, 4);
                w.bits(z, 64);
            }
            self.prev_delta = delta;
        }
        self.prev_t = t;
        for (s, &v) in self.values.iter_mut().zip(values) {
            write_value(w, s, v.to_bits(), self.n == 0);
        }
        self.n += 1;
    }

    /// Reads the next sample, its values into `values` (one per column).
    pub(crate) fn read(
        &mut self,
        r: &mut BitReader<'_>,
        values: &mut [f64],
    ) -> Result<i64, ChunkError> {
        debug_assert_eq!(values.len(), self.values.len());
        let t = if self.n == 0 {
            r.bits(64)? as i64
        } else {
            let z = if !r.bit()? {
                0
            } else if !r.bit()? {
                r.bits(7)?
            } else if !r.bit()? {
                r.bits(14)?
            } else if !r.bit()? {
                r.bits(20)?
            } else {
                r.bits(64)?
            };
            let delta = self.prev_delta.wrapping_add(unzigzag(z));
            self.prev_delta = delta;
            self.prev_t.wrapping_add(delta)
        };
        self.prev_t = t;
        let first = self.n == 0;
        for (s, v) in self.values.iter_mut().zip(values.iter_mut()) {
            *v = f64::from_bits(read_value(r, s, first)?);
        }
        self.n += 1;
        Ok(t)
    }
}

fn write_value(w: &mut BitWriter, s: &mut XorState, bits: u64, first: bool) {
    if first {
        w.bits(bits, 64);
        s.prev = bits;
        // No window yet: the first non-zero XOR must write its own.
        s.leading = u32::MAX;
        return;
    }
    let xor = bits ^ s.prev;
    s.prev = bits;
    if xor == 0 {
        w.bit(false);
        return;
    }
    // Five bits hold the leading zeros, so at most 31 are counted.
    let leading = xor.leading_zeros().min(31);
    let trailing = xor.trailing_zeros();
    if s.leading != u32::MAX && leading >= s.leading && trailing >= s.trailing {
        w.bits(0b10, 2);
        w.bits(xor >> s.trailing, 64 - s.leading - s.trailing);
    } else {
        let significant = 64 - leading - trailing;
        w.bits(0b11, 2);
        w.bits(u64::from(leading), 5);
        // 64 significant bits are written as 0: six bits hold 0..=63.
        w.bits(u64::from(significant % 64), 6);
        w.bits(xor >> trailing, significant);
        s.leading = leading;
        s.trailing = trailing;
    }
}

fn read_value(r: &mut BitReader<'_>, s: &mut XorState, first: bool) -> Result<u64, ChunkError> {
    if first {
        s.prev = r.bits(64)?;
        s.leading = u32::MAX;
        return Ok(s.prev);
    }
    if !r.bit()? {
        return Ok(s.prev);
    }
    if r.bit()? {
        let leading = r.bits(5)? as u32;
        let significant = match r.bits(6)? as u32 {
            0 => 64,
            n => n,
        };
        if leading + significant > 64 {
            return Err(ChunkError::Corrupt("xor window wider than 64 bits"));
        }
        s.leading = leading;
        s.trailing = 64 - leading - significant;
    } else if s.leading == u32::MAX {
        return Err(ChunkError::Corrupt("xor window reused before one was set"));
    }
    let significant = 64 - s.leading - s.trailing;
    let xor = r.bits(significant)? << s.trailing;
    s.prev ^= xor;
    Ok(s.prev)
}

/// Encodes `n` samples of `columns` (each of length `ts.len()`) after `out`'s header.
pub(crate) fn encode(out: Vec<u8>, ts: &[i64], columns: &[&[f64]]) -> Vec<u8> {
    let mut w = BitWriter::with_bytes(out);
    let mut state = State::new(columns.len());
    let mut row = vec![0.0; columns.len()];
    for (i, &t) in ts.iter().enumerate() {
        for (slot, col) in row.iter_mut().zip(columns) {
            *slot = col[i];
        }
        state.write(&mut w, t, &row);
    }
    w.into_bytes()
}

/// Decodes `n` samples of `columns` values from `body`, which must hold nothing else.
pub(crate) fn decode(
    body: &[u8],
    n: usize,
    columns: usize,
) -> Result<(Vec<i64>, Vec<Vec<f64>>), ChunkError> {
    if body.len().saturating_mul(8) < min_bits(n, columns) {
        return Err(ChunkError::TooShort {
            samples: n,
            bytes: body.len(),
        });
    }
    let mut r = BitReader::new(body);
    let mut state = State::new(columns);
    let mut ts = Vec::with_capacity(n);
    let mut cols: Vec<Vec<f64>> = (0..columns).map(|_| Vec::with_capacity(n)).collect();
    let mut row = vec![0.0; columns];
    for _ in 0..n {
        ts.push(state.read(&mut r, &mut row)?);
        for (col, &v) in cols.iter_mut().zip(&row) {
            col.push(v);
        }
    }
    r.finish()?;
    Ok((ts, cols))
}
