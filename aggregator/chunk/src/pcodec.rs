//! The pco codec: each column of a chunk (timestamps as i64, values as f64) compressed
//! by pco's wrapped format, which leaves the count of numbers to us. pco picks its own
//! delta order and mode (classic, integer multiples, float multiples) per column.

use pco::wrapped::{FileCompressor, FileDecompressor};
use pco::{ChunkConfig, PagingSpec};

use crate::ChunkError;

/// Appends the pco file header, then one pco chunk of `ts` and one per column. Nothing
/// is written for an empty series. Errors only if pco refuses its input.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    ts: &[i64],
    columns: &[&[f64]],
) -> Result<(), pco::errors::PcoError> {
    if ts.is_empty() {
        return Ok(());
    }
    // One page per column: the sample count in our header is then the page's count.
    let config = ChunkConfig::default().with_paging_spec(PagingSpec::Exact(vec![ts.len()]));
    let file = FileCompressor::default();
    file.write_header(&mut *out)?;
    write_column(&file, &config, ts, out)?;
    for col in columns {
        write_column(&file, &config, col, out)?;
    }
    Ok(())
}

fn write_column<T: pco::data_types::Number>(
    file: &FileCompressor,
    config: &ChunkConfig,
    nums: &[T],
    out: &mut Vec<u8>,
) -> Result<(), pco::errors::PcoError> {
    let mut chunk = file.chunk_compressor(nums, config)?;
    chunk.write_meta(&mut *out)?;
    chunk.write_page(0, &mut *out)?;
    Ok(())
}

/// Decodes `n` samples of `columns` values from `body`, which must hold nothing else.
/// Allocates `n` numbers per column and no more, whatever the pco metadata says.
pub(crate) fn decode(
    body: &[u8],
    n: usize,
    columns: usize,
) -> Result<(Vec<i64>, Vec<Vec<f64>>), ChunkError> {
    if n == 0 {
        if !body.is_empty() {
            return Err(ChunkError::TrailingBytes(body.len()));
        }
        return Ok((Vec::new(), vec![Vec::new(); columns]));
    }
    let (file, rest) = FileDecompressor::new(body).map_err(pco_error)?;
    let (ts, mut rest) = read_column::<i64>(&file, rest, n)?;
    let mut cols = Vec::with_capacity(columns);
    for _ in 0..columns {
        let (col, r) = read_column::<f64>(&file, rest, n)?;
        cols.push(col);
        rest = r;
    }
    if !rest.is_empty() {
        return Err(ChunkError::TrailingBytes(rest.len()));
    }
    Ok((ts, cols))
}

fn read_column<'a, T: pco::data_types::Number + Default>(
    file: &FileDecompressor,
    src: &'a [u8],
    n: usize,
) -> Result<(Vec<T>, &'a [u8]), ChunkError> {
    let (mut chunk, rest) = file.chunk_decompressor::<T, _>(src).map_err(pco_error)?;
    let mut page = chunk.page_decompressor(rest, n).map_err(pco_error)?;
    let mut nums = vec![T::default(); n];
    let progress = page.read(&mut nums).map_err(pco_error)?;
    if progress.n_processed != n || !progress.finished {
        return Err(ChunkError::Corrupt(
            "pco page shorter than the sample count",
        ));
    }
    Ok((nums, page.into_src()))
}

fn pco_error(e: pco::errors::PcoError) -> ChunkError {
    ChunkError::Pco(e.to_string())
}
