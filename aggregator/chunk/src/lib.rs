//! goroscope's chunk format: one compressed block of a series' samples (or of several
//! value columns over shared timestamps, for rollups), as the aggregator stores it. The
//! layout, the codecs and the measurements behind the choice are in docs/chunks.md.
//!
//! Modules: `gorilla` (delta-of-delta and XOR, bit by bit), `pcodec` (pco per column),
//! `head` (the append-only Gorilla chunk of a series' recent samples), `bits`.
//!
//! A chunk is a tag byte, the sample count as an unsigned LEB128 varint, for the column
//! layout a column count byte, then the codec's body:
//!
//! | tag    | layout  | codec   |
//! |--------|---------|---------|
//! | `0x01` | series  | Gorilla |
//! | `0x02` | series  | pco     |
//! | `0x11` | columns | Gorilla |
//! | `0x12` | columns | pco     |
//!
//! Decoding never panics and allocates at most [`MAX_NUMBERS`] numbers (16 MiB),
//! whatever the bytes claim; a Gorilla body must also be long enough for its count.
#![forbid(unsafe_code)]

mod bits;
mod gorilla;
mod head;
mod pcodec;

pub use head::HeadChunk;

/// The most samples one chunk holds; a header claiming more is refused before anything
/// is allocated. Two hours at one sample a second is 7,200.
pub const MAX_SAMPLES: usize = 1 << 20;

/// The most value columns of one column chunk.
pub const MAX_COLUMNS: usize = 16;

/// The most numbers (timestamps and values) of one chunk: a series chunk of
/// [`MAX_SAMPLES`] holds this many, a column chunk of 5 columns 349,525 samples.
pub const MAX_NUMBERS: usize = 2 * MAX_SAMPLES;

/// The codec that [`encode`] and [`encode_columns`] use (docs/chunks.md, "Choice").
pub const DEFAULT_CODEC: Codec = Codec::Pco;

const LAYOUT_SERIES: u8 = 0x00;
const LAYOUT_COLUMNS: u8 = 0x10;

/// How a chunk's numbers are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Delta-of-delta timestamps and XOR values (module `gorilla`).
    Gorilla,
    /// pco, one pco chunk per column (module `pcodec`).
    Pco,
}

impl Codec {
    /// Every codec, for the study and the tests.
    pub const ALL: [Codec; 2] = [Codec::Gorilla, Codec::Pco];

    fn id(self) -> u8 {
        match self {
            Codec::Gorilla => 0x01,
            Codec::Pco => 0x02,
        }
    }

    fn from_id(id: u8) -> Option<Codec> {
        match id {
            0x01 => Some(Codec::Gorilla),
            0x02 => Some(Codec::Pco),
            _ => None,
        }
    }

    /// The codec's name, as docs/chunks.md and the benchmark show it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gorilla => "gorilla",
            Codec::Pco => "pco",
        }
    }
}

/// The samples of one series, decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
}

/// Several value columns over shared timestamps, decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Columns {
    pub timestamps: Vec<i64>,
    /// One vector per column, each as long as `timestamps`.
    pub columns: Vec<Vec<f64>>,
}

/// Why bytes are not a chunk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("empty chunk: no tag byte")]
    Empty,
    #[error("unknown chunk tag {0:#04x}")]
    UnknownTag(u8),
    #[error("chunk tag {0:#04x} is a column chunk, not a series chunk")]
    NotSeries(u8),
    #[error("chunk tag {0:#04x} is a series chunk, not a column chunk")]
    NotColumns(u8),
    #[error("chunk header truncated")]
    TruncatedHeader,
    #[error("head chunk full: it holds {MAX_SAMPLES} samples")]
    HeadFull,
    #[error("chunk claims {0} samples, more than {MAX_SAMPLES}")]
    TooManySamples(u64),
    #[error("chunk claims {samples} samples of {columns} columns, more than {MAX_NUMBERS} numbers")]
    TooManyNumbers { samples: usize, columns: u8 },
    #[error("chunk claims {0} columns, expected 1 to {MAX_COLUMNS}")]
    BadColumnCount(u8),
    #[error("chunk claims {samples} samples but its body has only {bytes} bytes")]
    TooShort { samples: usize, bytes: usize },
    #[error("chunk body truncated")]
    Truncated,
    #[error("chunk body corrupt: {0}")]
    Corrupt(&'static str),
    #[error("chunk has {0} bytes after its samples")]
    TrailingBytes(usize),
    #[error("chunk body corrupt: pco: {0}")]
    Pco(String),
}

/// Encodes one series with [`DEFAULT_CODEC`].
///
/// # Panics
/// If `ts` and `values` differ in length, or hold more than [`MAX_SAMPLES`] samples:
/// the storage layer cuts chunks well below that.
pub fn encode(ts: &[i64], values: &[f64]) -> Vec<u8> {
    encode_with(DEFAULT_CODEC, ts, values)
}

/// Encodes one series with `codec`. Panics as [`encode`] does.
pub fn encode_with(codec: Codec, ts: &[i64], values: &[f64]) -> Vec<u8> {
    assert_eq!(
        ts.len(),
        values.len(),
        "a chunk needs one value per timestamp"
    );
    encode_layout(codec, LAYOUT_SERIES, ts, &[values])
}

/// Encodes several value columns over shared timestamps with [`DEFAULT_CODEC`], for
/// rollups (min, max, sum, count, last, ...).
///
/// # Panics
/// If a column's length differs from `ts`', there are no columns or more than
/// [`MAX_COLUMNS`], or more than [`MAX_NUMBERS`] timestamps and values together.
pub fn encode_columns(ts: &[i64], cols: &[&[f64]]) -> Vec<u8> {
    encode_columns_with(DEFAULT_CODEC, ts, cols)
}

/// Encodes several value columns with `codec`. Panics as [`encode_columns`] does.
pub fn encode_columns_with(codec: Codec, ts: &[i64], cols: &[&[f64]]) -> Vec<u8> {
    assert!(
        (1..=MAX_COLUMNS).contains(&cols.len()),
        "1 to {MAX_COLUMNS} columns"
    );
    assert!(
        cols.iter().all(|c| c.len() == ts.len()),
        "a column needs one value per timestamp"
    );
    encode_layout(codec, LAYOUT_COLUMNS, ts, cols)
}

fn encode_layout(codec: Codec, layout: u8, ts: &[i64], cols: &[&[f64]]) -> Vec<u8> {
    assert!(
        ts.len() <= MAX_SAMPLES,
        "at most {MAX_SAMPLES} samples a chunk"
    );
    let header = |codec: Codec| {
        let mut out = Vec::with_capacity(16 + ts.len() * (1 + cols.len()) * 2);
        out.push(layout | codec.id());
        write_varint(&mut out, ts.len() as u64);
        if layout == LAYOUT_COLUMNS {
            // Checked above: at most MAX_COLUMNS.
            out.push(cols.len() as u8);
        }
        out
    };
    match codec {
        Codec::Gorilla => gorilla::encode(header(codec), ts, cols),
        Codec::Pco => {
            let mut out = header(codec);
            match pcodec::encode(&mut out, ts, cols) {
                Ok(()) => out,
                // pco refuses only invalid settings, and ours are fixed; should it ever
                // refuse, the series is still stored, by the codec that cannot fail.
                Err(_) => gorilla::encode(header(Codec::Gorilla), ts, cols),
            }
        }
    }
}

/// Decodes a series chunk of any codec.
pub fn decode(bytes: &[u8]) -> Result<Chunk, ChunkError> {
    let (tag, rest) = bytes.split_first().ok_or(ChunkError::Empty)?;
    let codec = Codec::from_id(tag & 0x0f).ok_or(ChunkError::UnknownTag(*tag))?;
    match tag & 0xf0 {
        LAYOUT_SERIES => {}
        LAYOUT_COLUMNS => return Err(ChunkError::NotSeries(*tag)),
        _ => return Err(ChunkError::UnknownTag(*tag)),
    }
    let (n, body) = read_count(rest)?;
    let (timestamps, mut cols) = decode_body(codec, body, n, 1)?;
    let values = cols.pop().unwrap_or_default();
    Ok(Chunk { timestamps, values })
}

/// Decodes a column chunk of any codec.
pub fn decode_columns(bytes: &[u8]) -> Result<Columns, ChunkError> {
    let (tag, rest) = bytes.split_first().ok_or(ChunkError::Empty)?;
    let codec = Codec::from_id(tag & 0x0f).ok_or(ChunkError::UnknownTag(*tag))?;
    match tag & 0xf0 {
        LAYOUT_COLUMNS => {}
        LAYOUT_SERIES => return Err(ChunkError::NotColumns(*tag)),
        _ => return Err(ChunkError::UnknownTag(*tag)),
    }
    let (n, rest) = read_count(rest)?;
    let (&ncols, body) = rest.split_first().ok_or(ChunkError::TruncatedHeader)?;
    if !(1..=MAX_COLUMNS).contains(&usize::from(ncols)) {
        return Err(ChunkError::BadColumnCount(ncols));
    }
    if n * (1 + usize::from(ncols)) > MAX_NUMBERS {
        return Err(ChunkError::TooManyNumbers {
            samples: n,
            columns: ncols,
        });
    }
    let (timestamps, columns) = decode_body(codec, body, n, usize::from(ncols))?;
    Ok(Columns {
        timestamps,
        columns,
    })
}

fn decode_body(
    codec: Codec,
    body: &[u8],
    n: usize,
    columns: usize,
) -> Result<(Vec<i64>, Vec<Vec<f64>>), ChunkError> {
    match codec {
        Codec::Gorilla => gorilla::decode(body, n, columns),
        Codec::Pco => pcodec::decode(body, n, columns),
    }
}

/// The sample count after the tag, checked against [`MAX_SAMPLES`].
fn read_count(bytes: &[u8]) -> Result<(usize, &[u8]), ChunkError> {
    let (n, rest) = read_varint(bytes)?;
    if n > MAX_SAMPLES as u64 {
        return Err(ChunkError::TooManySamples(n));
    }
    // At most MAX_SAMPLES, so it fits.
    Ok((n as usize, rest))
}

pub(crate) fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Unsigned LEB128, at most 10 bytes.
fn read_varint(bytes: &[u8]) -> Result<(u64, &[u8]), ChunkError> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return Err(ChunkError::Corrupt("varint overflows 64 bits"));
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, &bytes[i + 1..]));
        }
    }
    Err(ChunkError::TruncatedHeader)
}

#[cfg(test)]
mod tests;
