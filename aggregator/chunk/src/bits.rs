//! Bit-level writer and reader for the Gorilla codec, most significant bit first.

use crate::ChunkError;

/// Appends bits to a byte vector; the last byte is padded with zero bits.
#[derive(Clone, Debug, Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits already used in the last byte of `bytes` (0 means a new byte is needed).
    used: u32,
}

impl BitWriter {
    pub(crate) fn with_bytes(bytes: Vec<u8>) -> Self {
        BitWriter { bytes, used: 0 }
    }

    pub(crate) fn bit(&mut self, bit: bool) {
        self.bits(u64::from(bit), 1);
    }

    /// Writes the low `n` bits of `value` (n <= 64).
    pub(crate) fn bits(&mut self, value: u64, mut n: u32) {
        debug_assert!(n <= 64);
        while n > 0 {
            if self.used == 0 {
                self.bytes.push(0);
                self.used = 0;
            }
            let free = 8 - self.used;
            let take = free.min(n);
            // The `take` highest of the remaining `n` bits.
            let chunk = ((value >> (n - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (free - take);
            self.used = (self.used + take) % 8;
            n -= take;
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads bits from a byte slice; reading past its end is an error, never a panic.
#[derive(Clone, Debug)]
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    /// Position in bits from the start of `bytes`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    pub(crate) fn remaining_bits(&self) -> usize {
        self.bytes.len() * 8 - self.pos
    }

    pub(crate) fn bit(&mut self) -> Result<bool, ChunkError> {
        Ok(self.bits(1)? == 1)
    }

    /// Reads `n` bits (n <= 64) as the low bits of the result.
    pub(crate) fn bits(&mut self, mut n: u32) -> Result<u64, ChunkError> {
        debug_assert!(n <= 64);
        if self.remaining_bits() < n as usize {
            return Err(ChunkError::Truncated);
        }
        let mut out = 0u64;
        while n > 0 {
            let byte = self.bytes[self.pos / 8];
            let offset = (self.pos % 8) as u32;
            let avail = 8 - offset;
            let take = avail.min(n);
            let chunk = (byte >> (avail - take)) & ((1u16 << take) - 1) as u8;
            out = (out << take) | u64::from(chunk);
            self.pos += take as usize;
            n -= take;
        }
        Ok(out)
    }

    /// Fails unless only zero padding of the last byte is left.
    pub(crate) fn finish(&self) -> Result<(), ChunkError> {
        let rest = self.remaining_bits();
        if rest >= 8 {
            return Err(ChunkError::TrailingBytes(rest / 8));
        }
        if rest > 0 && self.bytes[self.bytes.len() - 1] & ((1u8 << rest) - 1) != 0 {
            return Err(ChunkError::TrailingBytes(0));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_at_every_alignment() {
        let mut w = BitWriter::default();
        let items: Vec<(u64, u32)> = (0..=64u32)
            .map(|n| {
                (
                    0xdead_beef_cafe_f00d_u64 & if n == 64 { u64::MAX } else { (1 << n) - 1 },
                    n,
                )
            })
            .collect();
        for &(v, n) in &items {
            w.bits(v, n);
            w.bit(true);
        }
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        for &(v, n) in &items {
            assert_eq!(r.bits(n).unwrap(), v, "{n} bits");
            assert!(r.bit().unwrap());
        }
        r.finish().unwrap();
        assert!(matches!(r.bits(9), Err(ChunkError::Truncated)));
    }
}
