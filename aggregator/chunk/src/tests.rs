//! Round trips of awkward series through every codec, and hostile bytes.

use proptest::prelude::*;

use super::*;

/// Prometheus' staleness marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn awkward_values() -> Vec<f64> {
    vec![
        f64::from_bits(STALE_NAN),
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7ff8_dead_beef_0001),
        f64::from_bits(0xfff0_0000_0000_0001),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::from_bits(1),
        -f64::from_bits(1),
        f64::MIN_POSITIVE / 3.0,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        1.0,
        1.0,
        123456789.0,
    ]
}

fn awkward_timestamps(n: usize) -> Vec<i64> {
    let base = [
        i64::MIN,
        i64::MAX,
        0,
        -1,
        i64::MIN,
        i64::MIN + 1,
        i64::MAX,
        5,
        5,
        5,
        4,
        -10_000,
        10_000,
        i64::MAX - 3,
        1,
        i64::MIN,
        1_795_657_349_329,
        1_795_657_349_329,
    ];
    (0..n).map(|i| base[i % base.len()]).collect()
}

fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[track_caller]
fn assert_round_trip(codec: Codec, ts: &[i64], values: &[f64]) {
    let bytes = encode_with(codec, ts, values);
    assert_eq!(
        bytes[0] & 0x0f,
        codec.id(),
        "{codec:?} fell back to another codec"
    );
    let chunk = decode(&bytes).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
    assert_eq!(chunk.timestamps, ts, "{codec:?} timestamps");
    assert!(
        same_bits(&chunk.values, values),
        "{codec:?} values: {:?} != {values:?}",
        chunk.values
    );
}

#[test]
fn every_codec_round_trips_awkward_values_bit_for_bit() {
    let values = awkward_values();
    let ts = awkward_timestamps(values.len());
    for codec in Codec::ALL {
        assert_round_trip(codec, &ts, &values);
        let reversed: Vec<f64> = values.iter().rev().copied().collect();
        assert_round_trip(codec, &ts, &reversed);
    }
}

#[test]
fn pco_keeps_nan_payloads_among_counter_like_values() {
    // pco's float-multiple and integer-multiple modes kick in on values like these; the
    // NaN payloads among them must survive those modes too.
    let mut values: Vec<f64> = (0..2000).map(|i| f64::from(i) * 4096.0).collect();
    for (i, bits) in [
        STALE_NAN,
        0x7ff8_0000_0000_0000,
        0xfff8_0000_0000_0abc,
        0x7ff0_0000_0000_0001,
    ]
    .into_iter()
    .enumerate()
    {
        values[100 + i * 400] = f64::from_bits(bits);
    }
    values[7] = -0.0;
    values[8] = f64::from_bits(3);
    let ts: Vec<i64> = (0..2000).map(|i| 1_795_657_349_329 + i * 10_000).collect();
    assert_round_trip(Codec::Pco, &ts, &values);
    let decimals: Vec<f64> = (0..2000)
        .map(|i| {
            if i % 97 == 0 {
                f64::from_bits(STALE_NAN)
            } else {
                f64::from(i) * 0.1
            }
        })
        .collect();
    assert_round_trip(Codec::Pco, &ts, &decimals);
}

#[test]
fn empty_and_single_sample_chunks_round_trip() {
    for codec in Codec::ALL {
        assert_round_trip(codec, &[], &[]);
        assert_round_trip(codec, &[i64::MIN], &[f64::from_bits(STALE_NAN)]);
        assert_round_trip(codec, &[42], &[-0.0]);
        let cols = decode_columns(&encode_columns_with(codec, &[], &[&[], &[]])).unwrap();
        assert_eq!(cols.columns, vec![Vec::<f64>::new(), Vec::new()]);
    }
}

#[test]
fn timestamp_gaps_that_overflow_naive_deltas_round_trip() {
    let ts = [
        i64::MIN,
        i64::MAX,
        i64::MIN,
        i64::MAX,
        0,
        i64::MIN,
        7,
        7,
        7,
        6,
        i64::MAX,
    ];
    let values = [1.0; 11];
    for codec in Codec::ALL {
        assert_round_trip(codec, &ts, &values);
    }
}

#[test]
fn columns_round_trip() {
    let ts: Vec<i64> = (0..60).map(|i| i * 60_000).collect();
    let min: Vec<f64> = (0..60).map(f64::from).collect();
    let max: Vec<f64> = (0..60).map(|i| f64::from(i) + 0.5).collect();
    let count = vec![6.0; 60];
    let mut last = awkward_values();
    last.resize(60, f64::NEG_INFINITY);
    let last_ts: Vec<f64> = ts.iter().map(|&t| (t + 59_000) as f64).collect();
    let cols: [&[f64]; 5] = [&min, &max, &count, &last, &last_ts];
    for codec in Codec::ALL {
        let bytes = encode_columns_with(codec, &ts, &cols);
        let got = decode_columns(&bytes).unwrap();
        assert_eq!(got.timestamps, ts);
        assert_eq!(got.columns.len(), 5);
        for (g, want) in got.columns.iter().zip(cols) {
            assert!(same_bits(g, want), "{codec:?}");
        }
        assert_eq!(decode(&bytes), Err(ChunkError::NotSeries(bytes[0])));
    }
    let series = encode(&ts, &min);
    assert_eq!(
        decode_columns(&series),
        Err(ChunkError::NotColumns(series[0]))
    );
}

#[test]
fn default_codec_is_the_one_encode_uses() {
    let bytes = encode(&[1, 2, 3], &[1.0, 2.0, 3.0]);
    assert_eq!(bytes[0], DEFAULT_CODEC.id());
}

#[test]
fn a_header_claiming_too_many_samples_is_refused_before_allocating() {
    let mut bytes = vec![0x01];
    write_varint(&mut bytes, MAX_SAMPLES as u64 + 1);
    assert_eq!(
        decode(&bytes),
        Err(ChunkError::TooManySamples(MAX_SAMPLES as u64 + 1))
    );
    let mut bytes = vec![0x01];
    write_varint(&mut bytes, MAX_SAMPLES as u64);
    bytes.extend_from_slice(&[0; 16]);
    assert!(matches!(decode(&bytes), Err(ChunkError::TooShort { .. })));
    let mut bytes = vec![0x02];
    write_varint(&mut bytes, u64::MAX);
    assert_eq!(decode(&bytes), Err(ChunkError::TooManySamples(u64::MAX)));
    assert_eq!(decode(&[]), Err(ChunkError::Empty));
    assert_eq!(decode(&[0x03, 0]), Err(ChunkError::UnknownTag(0x03)));
    assert_eq!(decode(&[0x01, 0x80]), Err(ChunkError::TruncatedHeader));
    assert_eq!(
        decode_columns(&[0x11, 1, 0]),
        Err(ChunkError::BadColumnCount(0))
    );
    assert_eq!(
        decode_columns(&[0x11, 1, 17]),
        Err(ChunkError::BadColumnCount(17))
    );
}

#[test]
fn a_chunk_whose_count_was_changed_decodes_within_bounds_or_fails() {
    // A constant pco column costs no bits a number, so a changed count can decode to
    // more samples than were written; the cap bounds what that costs.
    let ts: Vec<i64> = (0..50).map(|i| i * 10_000).collect();
    let constant = vec![1.0; 50];
    let varied: Vec<f64> = (0..50).map(|i| f64::from(i) * 1.5).collect();
    for codec in Codec::ALL {
        for values in [&constant, &varied] {
            let bytes = encode_with(codec, &ts, values);
            let (_, body) = read_count(&bytes[1..]).unwrap();
            for n in [0, 1, 49, 51, 1000, MAX_SAMPLES as u64] {
                let mut changed = vec![bytes[0]];
                write_varint(&mut changed, n);
                changed.extend_from_slice(body);
                if let Ok(chunk) = decode(&changed) {
                    assert_eq!(chunk.timestamps.len() as u64, n);
                    assert_eq!(chunk.values.len() as u64, n);
                }
            }
        }
    }
}

#[test]
fn every_truncation_of_a_chunk_is_an_error() {
    let values = awkward_values();
    let ts = awkward_timestamps(values.len());
    for codec in Codec::ALL {
        let bytes = encode_with(codec, &ts, &values);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "{codec:?} cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "{codec:?} with a trailing byte");
    }
}

#[test]
fn head_chunk_grows_and_reads_back() {
    let mut head = HeadChunk::new();
    assert!(head.is_empty());
    assert_eq!(decode(&head.bytes()).unwrap(), Chunk::default());
    let values = awkward_values();
    let ts = awkward_timestamps(values.len());
    for (i, (&t, &v)) in ts.iter().zip(&values).enumerate() {
        head.push(t, v).unwrap();
        assert_eq!(head.len(), i + 1);
        let chunk = decode(&head.bytes()).unwrap();
        assert_eq!(chunk.timestamps, ts[..=i]);
        assert!(same_bits(&chunk.values, &values[..=i]));
    }
    let (t2, v2): (Vec<i64>, Vec<f64>) = head.iter().unzip();
    assert_eq!(t2, ts);
    assert!(same_bits(&v2, &values));
    assert_eq!(head.bytes(), encode_with(Codec::Gorilla, &ts, &values));
}

#[test]
fn head_chunk_refuses_samples_past_max() {
    let mut head = HeadChunk::new();
    for i in 0..MAX_SAMPLES as i64 {
        head.push(i * 10_000, 1.0).unwrap();
    }
    assert_eq!(head.push(0, 1.0), Err(ChunkError::HeadFull));
    assert_eq!(head.len(), MAX_SAMPLES);
    assert_eq!(decode(&head.bytes()).unwrap().values.len(), MAX_SAMPLES);
}

#[test]
fn gorilla_regular_series_costs_about_two_bits_a_sample() {
    let ts: Vec<i64> = (0..720).map(|i| 1_795_657_349_329 + i * 10_000).collect();
    let values = vec![3.0; 720];
    let bytes = encode_with(Codec::Gorilla, &ts, &values);
    // 16 bytes for the first sample, 3 for the first delta, then 2 bits a sample.
    assert!(
        bytes.len() <= 3 + 16 + 3 + 720 / 4 + 1,
        "{} bytes",
        bytes.len()
    );
}

fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        any::<f64>(),
        (0u32..1000).prop_map(f64::from),
        Just(f64::from_bits(STALE_NAN)),
        Just(-0.0),
    ]
}

fn any_series() -> impl Strategy<Value = (Vec<i64>, Vec<f64>)> {
    let ts = prop_oneof![
        prop::collection::vec(any::<i64>(), 0..300),
        (any::<i64>(), prop::collection::vec(-20i64..20_020, 0..300)).prop_map(|(t0, deltas)| {
            deltas
                .iter()
                .scan(t0, |t, d| {
                    *t = t.wrapping_add(*d);
                    Some(*t)
                })
                .collect()
        }),
    ];
    ts.prop_flat_map(|ts| {
        let n = ts.len();
        (Just(ts), prop::collection::vec(any_f64(), n))
    })
}

proptest! {
    // 512 cases by default; PROPTEST_CASES=N for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_series_round_trip((ts, values) in any_series()) {
        for codec in Codec::ALL {
            let bytes = encode_with(codec, &ts, &values);
            let chunk = decode(&bytes).unwrap();
            prop_assert_eq!(&chunk.timestamps, &ts);
            prop_assert!(same_bits(&chunk.values, &values));
        }
    }

    #[test]
    fn arbitrary_columns_round_trip((ts, values) in any_series(), ncols in 1usize..5) {
        let cols: Vec<Vec<f64>> = (0..ncols).map(|c| values.iter().map(|v| v * c as f64).collect()).collect();
        let refs: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
        for codec in Codec::ALL {
            let got = decode_columns(&encode_columns_with(codec, &ts, &refs)).unwrap();
            prop_assert_eq!(&got.timestamps, &ts);
            for (g, want) in got.columns.iter().zip(&cols) {
                prop_assert!(same_bits(g, want));
            }
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
        let _ = decode_columns(&bytes);
    }

    #[test]
    fn decode_never_panics_on_damaged_chunks(
        (ts, values) in any_series(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        columns in any::<bool>(),
    ) {
        for codec in Codec::ALL {
            let mut bytes = if columns {
                encode_columns_with(codec, &ts, &[&values, &values])
            } else {
                encode_with(codec, &ts, &values)
            };
            // Keep the tag, so the damage reaches the codec.
            for (i, b) in &damage {
                if bytes.len() > 1 {
                    let at = 1 + i.index(bytes.len() - 1);
                    bytes[at] ^= b;
                }
            }
            let _ = decode(&bytes);
            let _ = decode_columns(&bytes);
            let cut = cut.index(bytes.len() + 1);
            let _ = decode(&bytes[..cut]);
            let _ = decode_columns(&bytes[..cut]);
        }
    }
}
