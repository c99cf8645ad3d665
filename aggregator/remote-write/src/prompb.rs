//! The remote-write 1.0 messages (prometheus/prompb `remote.proto` and `types.proto`,
//! the fields this exporter sends, under their field numbers) and the request body:
//! the encoded `WriteRequest` compressed with snappy's block format.

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use prost::encoding::{DecodeContext, WireType};

/// `prometheus.WriteRequest`. Field 2 is reserved upstream; 3 (metadata) is not sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: one series' labels, sorted by name with `__name__` among
/// them, and its samples, oldest first. Fields 3 (exemplars) and 4 (native
/// histograms) are not sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`: `double value = 1; int64 timestamp = 2;` (milliseconds since
/// the Unix epoch).
///
/// Written by hand rather than derived: proto3 leaves out a value equal to the default,
/// and a derived encoder compares `value != 0.0`, which drops -0.0 (it equals 0.0) and
/// would reach the receiver as +0.0. This one leaves out only the all-zero bit pattern,
/// so every value, NaN payloads and signed zeros included, arrives bit for bit.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub value: f64,
    pub timestamp: i64,
}

impl PartialEq for Sample {
    /// Bit equality, so that NaN equals the same NaN and -0.0 differs from 0.0.
    fn eq(&self, other: &Self) -> bool {
        self.value.to_bits() == other.value.to_bits() && self.timestamp == other.timestamp
    }
}

impl Eq for Sample {}

impl Message for Sample {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.value.to_bits() != 0 {
            prost::encoding::double::encode(1, &self.value, buf);
        }
        if self.timestamp != 0 {
            prost::encoding::int64::encode(2, &self.timestamp, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => prost::encoding::double::merge(wire_type, &mut self.value, buf, ctx),
            2 => prost::encoding::int64::merge(wire_type, &mut self.timestamp, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if self.value.to_bits() != 0 {
            len += prost::encoding::double::encoded_len(1, &self.value);
        }
        if self.timestamp != 0 {
            len += prost::encoding::int64::encoded_len(2, &self.timestamp);
        }
        len
    }

    fn clear(&mut self) {
        *self = Sample::default();
    }
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// The label carrying the metric name.
pub const METRIC_NAME: &str = "__name__";

/// The HTTP body of one request: `request` encoded, then compressed with snappy's
/// block format (remote-write does not use the framed stream format).
pub fn encode(request: &WriteRequest) -> Bytes {
    let raw = request.encode_to_vec();
    // Compressing into a buffer of `max_compress_len` cannot fail; the error case is
    // an input over snappy's 4 GiB block limit, far above any request we build.
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default();
    Bytes::from(compressed)
}

/// The inverse of [`encode`], for tests and tools.
pub fn decode(body: &[u8]) -> Result<WriteRequest, DecodeError> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a snappy block: {0}")]
    Snappy(String),
    #[error("not a WriteRequest: {0}")]
    Protobuf(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "up"), Label::new("job", "a")],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1000,
                }],
            }],
        }
    }

    #[test]
    fn write_request_encodes_to_the_bytes_of_the_prompb_field_numbers() {
        // Written out by hand from remote.proto / types.proto:
        // WriteRequest.timeseries = 1 (len), TimeSeries.labels = 1 (len),
        // TimeSeries.samples = 2 (len), Label.name = 1, Label.value = 2 (len),
        // Sample.value = 1 (fixed64), Sample.timestamp = 2 (varint).
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x0a, 40,                                   // timeseries, 40 bytes
              0x0a, 14,                                 // labels, 14 bytes
                0x0a, 8, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_',
                0x12, 2, b'u', b'p',
              0x0a, 8,                                  // labels, 8 bytes
                0x0a, 3, b'j', b'o', b'b',
                0x12, 1, b'a',
              0x12, 12,                                 // samples, 12 bytes
                0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f,     // value 1.0, little endian
                0x10, 0xe8, 0x07,                       // timestamp 1000
        ];
        assert_eq!(small().encode_to_vec(), expected);
    }

    #[test]
    fn negative_zero_and_zero_timestamp_are_encoded_as_the_wire_expects() {
        let s = Sample {
            value: -0.0,
            timestamp: 0,
        };
        // -0.0 is 0x8000000000000000: written, little endian; timestamp 0 left out.
        assert_eq!(s.encode_to_vec(), [0x09, 0, 0, 0, 0, 0, 0, 0, 0x80]);
        assert_eq!(Sample::default().encode_to_vec(), Vec::<u8>::new());
        let back = Sample::decode(&[0x09, 0, 0, 0, 0, 0, 0, 0, 0x80][..]).unwrap();
        assert_eq!(back.value.to_bits(), (-0.0f64).to_bits());
    }

    #[test]
    fn values_survive_encoding_bit_for_bit() {
        let values = [
            f64::NAN,
            f64::from_bits(0x7ff8_0000_0000_0001), // Prometheus' "normal" NaN
            f64::from_bits(0xfff0_0000_0000_0abc), // a signalling NaN with a payload
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            5e-324,
            -1.5e300,
        ];
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label::new("__name__", "x")],
                samples: values
                    .iter()
                    .enumerate()
                    .map(|(i, &value)| Sample {
                        value,
                        timestamp: -5 + i as i64,
                    })
                    .collect(),
            }],
        };
        let back = decode(&encode(&request)).unwrap();
        let bits: Vec<u64> = back.timeseries[0]
            .samples
            .iter()
            .map(|s| s.value.to_bits())
            .collect();
        let want: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, want);
        assert_eq!(back, request);
    }

    #[test]
    fn body_is_a_snappy_block_not_a_snappy_stream() {
        let request = small();
        let body = encode(&request);
        // A block starts with the uncompressed length as a varint; a framed stream
        // starts with the stream identifier chunk 0xff 06 00 00 "sNaPpY".
        assert_eq!(body[0] as usize, request.encoded_len());
        assert_ne!(body[0], 0xff);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        assert_eq!(raw, request.encode_to_vec());
        assert!(decode(b"\xff\x06\x00\x00sNaPpY").is_err());
    }

    #[test]
    fn large_requests_round_trip_and_compress() {
        let request = WriteRequest {
            timeseries: (0..200)
                .map(|i| TimeSeries {
                    labels: vec![
                        Label::new("__name__", "go_goroutines"),
                        Label::new("instance", format!("host-{i}:9090")),
                    ],
                    samples: (0..10)
                        .map(|t| Sample {
                            value: (i * t) as f64,
                            timestamp: 1_700_000_000_000 + t * 15_000,
                        })
                        .collect(),
                })
                .collect(),
        };
        let body = encode(&request);
        assert!(
            body.len() < request.encoded_len() / 2,
            "{} bytes",
            body.len()
        );
        assert_eq!(decode(&body).unwrap(), request);
    }
}
