//! The head chunk: a series' most recent samples, Gorilla-encoded as they arrive, so
//! that an open chunk costs its compressed size in memory and is sealed by copying.

use crate::bits::{BitReader, BitWriter};
use crate::{ChunkError, Codec, LAYOUT_SERIES, MAX_SAMPLES, gorilla, write_varint};

/// An append-only Gorilla chunk of one series.
#[derive(Clone, Debug)]
pub struct HeadChunk {
    body: BitWriter,
    state: gorilla::State,
}

impl Default for HeadChunk {
    fn default() -> Self {
        HeadChunk::new()
    }
}

impl HeadChunk {
    pub fn new() -> Self {
        HeadChunk {
            body: BitWriter::default(),
            state: gorilla::State::new(1),
        }
    }

    /// Appends one sample. Timestamps may go in any order; a full chunk (holding
    /// [`MAX_SAMPLES`]) refuses the sample, and the caller starts the next chunk.
    pub fn push(&mut self, t: i64, v: f64) -> Result<(), ChunkError> {
        if self.state.len() >= MAX_SAMPLES {
            return Err(ChunkError::HeadFull);
        }
        self.state.write(&mut self.body, t, &[v]);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.len() == 0
    }

    /// The bytes of the encoded samples held in memory, without the chunk header.
    pub fn body_len(&self) -> usize {
        self.body.as_bytes().len()
    }

    /// The samples so far as a complete chunk, which [`crate::decode`] reads.
    pub fn bytes(&self) -> Vec<u8> {
        let body = self.body.as_bytes();
        let mut out = Vec::with_capacity(body.len() + 4);
        out.push(LAYOUT_SERIES | Codec::Gorilla.id());
        write_varint(&mut out, self.state.len() as u64);
        out.extend_from_slice(body);
        out
    }

    /// The samples in the order they were pushed.
    pub fn iter(&self) -> HeadIter<'_> {
        HeadIter {
            reader: BitReader::new(self.body.as_bytes()),
            state: gorilla::State::new(1),
            left: self.state.len(),
        }
    }
}

/// The samples of a [`HeadChunk`], decoded as they are read.
#[derive(Clone, Debug)]
pub struct HeadIter<'a> {
    reader: BitReader<'a>,
    state: gorilla::State,
    left: usize,
}

impl Iterator for HeadIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.left == 0 {
            return None;
        }
        let mut v = [0.0];
        // The body was written by this chunk's own encoder, so reading it back cannot
        // fail; were it to, the iteration ends rather than panics.
        match self.state.read(&mut self.reader, &mut v) {
            Ok(t) => {
                self.left -= 1;
                Some((t, v[0]))
            }
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

impl<'a> IntoIterator for &'a HeadChunk {
    type Item = (i64, f64);
    type IntoIter = HeadIter<'a>;

    fn into_iter(self) -> HeadIter<'a> {
        self.iter()
    }
}
