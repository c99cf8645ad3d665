//! The chunk codec study (docs/chunks.md): every fixture series, cut into chunks of 2
//! hours, of 15 minutes, and whole, through every codec. Prints bytes per sample (chunk header
//! included), encode and decode nanoseconds per sample, per kind of series and overall,
//! and the bytes per sample after zstd level 3 on 4 KiB blocks of chunks, as RocksDB
//! stores them at the bottom level, and on each chunk alone (no help from neighbours).
//! Checks that every chunk decodes bit for bit.
//!
//!   cargo bench -p goroscope-chunk --bench codecs [-- FIXTURE.txt.zst]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use goroscope_chunk::{Codec, decode, encode_with};

/// RocksDB's default block size; zstd compresses each block on its own.
const BLOCK_BYTES: usize = 4096;
const ZSTD_LEVEL: i32 = 3;
/// Each timing is the fastest of this many passes over all chunks.
const PASSES: usize = 5;

struct Series {
    kind: String,
    name: String,
    service: String,
    timestamps: Vec<i64>,
    values: Vec<f64>,
}

fn load(path: &str) -> Vec<Series> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let text = zstd::decode_all(&raw[..]).unwrap_or_else(|e| panic!("unzstd {path}: {e}"));
    let text = String::from_utf8(text).expect("fixtures are UTF-8 text");
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 6, "fixture line: {line}");
            let mut t: i64 = f[3].parse().expect("first timestamp");
            let mut timestamps = vec![t];
            for d in f[4].split(',').filter(|d| !d.is_empty()) {
                t += d.parse::<i64>().expect("timestamp delta");
                timestamps.push(t);
            }
            let values: Vec<f64> = f[5]
                .split(',')
                .map(|v| match v {
                    "NaN" => f64::NAN,
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().expect("value"),
                })
                .collect();
            assert_eq!(timestamps.len(), values.len(), "fixture line: {line}");
            Series {
                kind: f[0].to_owned(),
                name: f[1].to_owned(),
                service: f[2].to_owned(),
                timestamps,
                values,
            }
        })
        .collect()
}

/// A series cut at multiples of `span` ms since the epoch, as storage cuts them.
fn chunks(s: &Series, span: i64) -> Vec<(&[i64], &[f64])> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=s.timestamps.len() {
        if i == s.timestamps.len()
            || s.timestamps[i].div_euclid(span) != s.timestamps[start].div_euclid(span)
        {
            out.push((&s.timestamps[start..i], &s.values[start..i]));
            start = i;
        }
    }
    out
}

#[derive(Default, Clone, Copy)]
struct Row {
    series: usize,
    chunks: usize,
    samples: usize,
    bytes: usize,
    zstd_bytes: usize,
    zstd_alone: usize,
    encode: Duration,
    decode: Duration,
}

fn fastest(mut f: impl FnMut()) -> Duration {
    (0..PASSES)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Zstd over the encoded chunks packed into blocks of about BLOCK_BYTES.
fn zstd_blocks(encoded: &[Vec<u8>]) -> usize {
    let mut total = 0;
    let mut block = Vec::with_capacity(2 * BLOCK_BYTES);
    for (i, c) in encoded.iter().enumerate() {
        block.extend_from_slice(c);
        if block.len() >= BLOCK_BYTES || i + 1 == encoded.len() {
            let z = zstd::bulk::compress(&block, ZSTD_LEVEL).expect("zstd in memory");
            // RocksDB keeps a block uncompressed when compressing does not pay.
            total += z.len().min(block.len());
            block.clear();
        }
    }
    total
}

fn measure(codec: Codec, chunks: &[(&[i64], &[f64])]) -> Row {
    let encoded: Vec<Vec<u8>> = chunks
        .iter()
        .map(|(t, v)| encode_with(codec, t, v))
        .collect();
    for ((t, v), bytes) in chunks.iter().zip(&encoded) {
        let got = decode(bytes).expect("a chunk just encoded decodes");
        assert_eq!(got.timestamps, *t, "{codec:?} timestamps");
        assert!(
            got.values
                .iter()
                .zip(*v)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{codec:?} values"
        );
    }
    let encode = fastest(|| {
        for (t, v) in chunks {
            black_box(encode_with(codec, black_box(t), black_box(v)));
        }
    });
    let decode = fastest(|| {
        for bytes in &encoded {
            black_box(decode(black_box(bytes)).ok());
        }
    });
    Row {
        series: 0,
        chunks: chunks.len(),
        samples: chunks.iter().map(|(t, _)| t.len()).sum(),
        bytes: encoded.iter().map(Vec::len).sum(),
        zstd_bytes: zstd_blocks(&encoded),
        zstd_alone: encoded
            .iter()
            .map(|c| {
                zstd::bulk::compress(c, ZSTD_LEVEL)
                    .expect("zstd in memory")
                    .len()
                    .min(c.len())
            })
            .sum(),
        encode,
        decode,
    }
}

fn main() {
    let default = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/series.txt.zst");
    // `cargo bench` passes --bench; the first other argument names a fixture file.
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| default.to_owned());
    let mut series = load(&path);
    // Storage keys start with the series id, and a target's series get their ids
    // together: a block holds the chunks of one target's series, then the next target's.
    series.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    let mut kinds: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for s in &series {
        kinds.entry(&s.kind).or_default().push(s);
    }
    println!(
        "fixtures: {path}: {} series, {} samples",
        series.len(),
        series.iter().map(|s| s.values.len()).sum::<usize>()
    );
    // "whole": each series' recording in one chunk, the nearest the fixtures come to a
    // full 2-hour chunk (720 samples at the default 10 s interval).
    let spans = [
        ("2h", 2 * 3600 * 1000),
        ("15m", 15 * 60 * 1000),
        ("whole", i64::MAX),
    ];
    for (span_name, span) in spans {
        println!();
        println!(
            "| chunks | kind | series | chunks | samples/chunk | codec | bytes/sample | + zstd-3, 4 KiB blocks | + zstd-3, chunk alone | encode ns/sample | decode ns/sample |"
        );
        println!("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|");
        let groups = kinds
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .chain([("all", series.iter().collect())]);
        for (kind, members) in groups {
            let cs: Vec<(&[i64], &[f64])> = members.iter().flat_map(|s| chunks(s, span)).collect();
            print_rows(span_name, kind, members.len(), &cs);
        }
        // What the values alone cost: the same chunks with timestamps exactly 10 s
        // apart, which both codecs store in a few bytes a chunk. This is the cost of a
        // series whose timestamps are stored once for all series of its target.
        let all: Vec<(&[i64], &[f64])> = series.iter().flat_map(|s| chunks(s, span)).collect();
        let regular: Vec<Vec<i64>> = all
            .iter()
            .map(|(t, _)| (0..t.len() as i64).map(|i| t[0] + i * 10_000).collect())
            .collect();
        let cs: Vec<(&[i64], &[f64])> = regular
            .iter()
            .zip(&all)
            .map(|(t, (_, v))| (t.as_slice(), *v))
            .collect();
        print_rows(span_name, "all, values only", series.len(), &cs);
    }
    print_target(&series);
}

/// Which series meet the product's target of 0.3 bytes a sample, with the default
/// codec on 2-hour chunks, each chunk zstd-compressed alone (no help from neighbours).
fn print_target(series: &[Series]) {
    const TARGET: f64 = 0.3;
    let span = 2 * 3600 * 1000;
    let mut per_series: Vec<(f64, &Series)> = series
        .iter()
        .map(|s| {
            let bytes: usize = chunks(s, span)
                .iter()
                .map(|(t, v)| {
                    let c = goroscope_chunk::encode(t, v);
                    zstd::bulk::compress(&c, ZSTD_LEVEL)
                        .expect("zstd in memory")
                        .len()
                        .min(c.len())
                })
                .sum();
            (bytes as f64 / s.values.len() as f64, s)
        })
        .collect();
    per_series.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!();
    println!(
        "default codec ({}), 2h chunks, zstd-3 per chunk: series at most {TARGET} bytes/sample, by kind",
        goroscope_chunk::DEFAULT_CODEC.name()
    );
    let mut kinds: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (b, s) in &per_series {
        let e = kinds.entry(&s.kind).or_default();
        e.1 += 1;
        if *b <= TARGET {
            e.0 += 1;
        }
    }
    for (k, (ok, all)) in kinds {
        println!("  {k}: {ok} of {all}");
    }
    let mut services: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (b, s) in &per_series {
        let e = services.entry(&s.service).or_default();
        e.0 += (b * s.values.len() as f64) as usize;
        e.1 += s.values.len();
    }
    println!("bytes/sample by program:");
    for (svc, (bytes, n)) in services {
        println!("  {svc}: {:.3}", bytes as f64 / n as f64);
    }
    let short = per_series
        .iter()
        .filter(|(_, s)| s.values.len() < 100)
        .count();
    println!("the 15 costliest series of at least 100 samples ({short} series have fewer):");
    for (b, s) in per_series
        .iter()
        .filter(|(_, s)| s.values.len() >= 100)
        .take(15)
    {
        println!("  {b:.2} {} {} ({})", s.service, s.name, s.kind);
    }
}

fn print_rows(span_name: &str, kind: &str, series: usize, cs: &[(&[i64], &[f64])]) {
    for codec in Codec::ALL {
        let mut r = measure(codec, cs);
        r.series = series;
        let per = |x: usize| x as f64 / r.samples as f64;
        let ns = |d: Duration| d.as_nanos() as f64 / r.samples as f64;
        println!(
            "| {span_name} | {kind} | {} | {} | {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} |",
            r.series,
            r.chunks,
            r.samples as f64 / r.chunks as f64,
            codec.name(),
            per(r.bytes),
            per(r.zstd_bytes),
            per(r.zstd_alone),
            ns(r.encode),
            ns(r.decode),
        );
    }
}
