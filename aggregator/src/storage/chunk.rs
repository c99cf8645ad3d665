//! The encoding of a chunk: the compressed points of one series in one partition.

use super::head::Points;
use super::records;

/// Encodes points in time order.
pub fn encode(points: &[(i64, f64)]) -> Vec<u8> {
    records::encode_headlog([(0u64, points)].into_iter())
}

/// Decodes a chunk; an error says why it cannot be read.
pub fn decode(bytes: &[u8]) -> Result<Points, String> {
    let mut series = records::decode_headlog(bytes).map_err(|e| e.to_string())?;
    match series.pop() {
        Some((_, points)) if series.is_empty() => Ok(points),
        _ => Err("a chunk holds one series".into()),
    }
}
