//! Durability under crashes: raw collectors ingest without pause over mTLS while the
//! aggregator is killed with SIGKILL at seeded random moments (some near a compaction)
//! and started again on the same database and port. Every acknowledged sample comes
//! back once and bit for bit, a batch never acknowledged comes back whole or not at
//! all, and `goroscope status` counts what is stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use goroscope_proto::v1;
use goroscope_tests::raw::{self, RawIngest, decl, upsert};
use goroscope_tests::*;

const HOSTS: usize = 4;
/// Three series trail the clock by minutes, so their samples land in partitions that
/// are already closed (compacted at once, late chunks after that); the last one follows
/// the clock, so a flush carries its samples of the open partition over.
const METRICS: [&str; 4] = [
    "durability_lag_a",
    "durability_lag_b",
    "durability_lag_c",
    "durability_now",
];
const NOW_SERIES: usize = 3;
/// Samples of each series in one batch.
const PER_SERIES: usize = 4;
/// Time between two samples of a trailing series: a batch moves it on by 100 ms.
const STRIDE_MS: i64 = 25;
/// How far the trailing series start behind the start of the test.
const TRAIL_MS: i64 = 300_000;
/// Pause after each acknowledged batch: at most 40 batches per second per host, which
/// keeps the trailing series behind the clock.
const PACE: Duration = Duration::from_millis(25);
/// Batches per host at most.
const MAX_SEQ: u64 = 4000;
/// SIGKILLs, and how many of them come near the first compaction of their run (the
/// compaction thread first looks at the head 10 s after the database opens).
const KILLS: usize = 8;
const LONG_LIVES: usize = 2;
/// One-minute partitions compacted as soon as they end, two writer shards whatever the
/// machine, and no detectors: they read nothing this test checks.
const SETTINGS: &str = "[storage]\nblock = \"1m\"\nflush_grace = \"0s\"\nwriters = 2\n\
                        [detection]\nenabled = false\n";
const PID: u32 = 4100;
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn host_name(h: usize) -> String {
    format!("durab-{h}")
}

/// splitmix64: seeded, the same sequence everywhere, so a seed replays a run's choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// What became of a batch, as its writer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Sent, never acknowledged (the writer stopped waiting).
    Sent,
    /// Acknowledged on its stream.
    Acked,
    /// Its ack was lost, and a Welcome's last_acked_seq said it was stored.
    StoredPerWelcome,
    /// Never acknowledged, and the writer moved on without it (a collector that
    /// dropped it); it may be stored at most once.
    Abandoned,
}

impl Fate {
    /// The aggregator said this batch is durable.
    fn durable(self) -> bool {
        matches!(self, Fate::Acked | Fate::StoredPerWelcome)
    }
}

struct SentBatch {
    /// (series, timestamp, value bits), each timestamp used once per series.
    samples: Vec<(usize, i64, u64)>,
    fate: Fate,
    attempts: u32,
}

/// Everything one writer sent and heard.
#[derive(Default)]
struct Ledger {
    batches: BTreeMap<u64, SentBatch>,
    streams: u64,
    failed_sends: u64,
    /// Stored batches sent again (on a new stream) and acknowledged again.
    resent_stored: u64,
    problems: Vec<String>,
}

struct Writer {
    certs: Arc<Certs>,
    url: String,
    host: usize,
    epoch: u64,
    seed: u64,
    t0: i64,
    /// Whether a batch whose ack never came may be dropped instead of sent again.
    abandons: bool,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    deadline: Instant,
}

impl Writer {
    /// Sends batches 1, 2, ... until told to stop, each until it is acknowledged (or,
    /// for a writer that abandons, given up after a crash), reconnecting as the
    /// aggregator comes and goes.
    async fn run(self) -> Ledger {
        let host = host_name(self.host);
        let mut rng = Rng(self.seed ^ (self.host as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f));
        let mut ledger = Ledger::default();
        let mut stream: Option<RawIngest> = None;
        let mut first_on_stream = true;
        let mut next_seq = 1u64;
        let mut now_next = i64::MIN;
        // The highest batch the aggregator called durable (by an ack or a Welcome).
        let mut durable = 0u64;
        // A stored batch to send again first on a new stream.
        let mut resend: Option<u64> = None;
        loop {
            if Instant::now() > self.deadline {
                ledger
                    .problems
                    .push(format!("{host}: writer still busy at its deadline"));
                break;
            }
            let Some(s) = stream.as_mut() else {
                let opened = tokio::time::timeout(
                    Duration::from_secs(5),
                    RawIngest::try_open(&self.certs, &self.url, &host, self.epoch),
                )
                .await;
                let Ok(Ok(s)) = opened else {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    continue;
                };
                ledger.streams += 1;
                let last = s.welcome.last_acked_seq;
                let highest_sent = ledger.batches.keys().next_back().copied().unwrap_or(0);
                if last < durable {
                    ledger.problems.push(format!(
                        "{host}: a Welcome says seq {last} is the last stored, but seq {durable} \
                         was acknowledged"
                    ));
                }
                if last > highest_sent {
                    ledger.problems.push(format!(
                        "{host}: a Welcome says seq {last} is stored, but only {highest_sent} \
                         were sent"
                    ));
                }
                if let Some(b) = ledger
                    .batches
                    .get_mut(&next_seq)
                    .filter(|b| b.fate == Fate::Sent)
                {
                    if last >= next_seq {
                        // Stored, the ack lost: sending it again must not store it twice.
                        b.fate = Fate::StoredPerWelcome;
                        durable = durable.max(next_seq);
                        if rng.one_in(2) {
                            resend = Some(next_seq);
                        }
                        next_seq += 1;
                    } else if self.abandons && rng.one_in(2) {
                        b.fate = Fate::Abandoned;
                        next_seq += 1;
                    }
                }
                durable = durable.max(last);
                if resend.is_none() && durable > 0 && rng.one_in(4) {
                    resend = Some(durable);
                }
                stream = Some(s);
                first_on_stream = true;
                continue;
            };
            let seq = match resend {
                Some(seq) => seq,
                None => {
                    let pending = ledger
                        .batches
                        .get(&next_seq)
                        .is_some_and(|b| b.fate == Fate::Sent);
                    if self.stop.load(Ordering::SeqCst) && !pending {
                        break;
                    }
                    if next_seq > MAX_SEQ {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    ledger.batches.entry(next_seq).or_insert_with(|| SentBatch {
                        samples: generate(self.host, next_seq, self.t0, &mut now_next, &mut rng),
                        fate: Fate::Sent,
                        attempts: 0,
                    });
                    next_seq
                }
            };
            let sent = ledger.batches.get_mut(&seq).expect("generated above");
            sent.attempts += 1;
            let batch = encode(self.host, seq, &sent.samples, first_on_stream);
            match s.send(batch).await {
                Ok(ack) => {
                    first_on_stream = false;
                    if ack.seq != seq {
                        ledger
                            .problems
                            .push(format!("{host}: sent seq {seq}, ack names seq {}", ack.seq));
                    }
                    if ack.refused_count != 0 {
                        ledger.problems.push(format!(
                            "{host}: seq {seq} acknowledged with {} refusals: {:?}",
                            ack.refused_count, ack.refused
                        ));
                    }
                    if resend == Some(seq) {
                        resend = None;
                        ledger.resent_stored += 1;
                    } else {
                        sent.fate = Fate::Acked;
                        durable = durable.max(seq);
                        next_seq += 1;
                        self.acked.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(PACE).await;
                    }
                }
                Err(_) => {
                    // The aggregator died (or the stream broke): the batch stays pending
                    // and the next stream decides what to send.
                    ledger.failed_sends += 1;
                    resend = None;
                    stream = None;
                }
            }
        }
        ledger
    }
}

/// The samples of batch `seq` of host `h`. Finite values spell (host, seq, series,
/// index); NaN payloads do too; ±Inf, -0.0, -NaN and the staleness marker are mixed in.
fn generate(
    h: usize,
    seq: u64,
    t0: i64,
    now_next: &mut i64,
    rng: &mut Rng,
) -> Vec<(usize, i64, u64)> {
    let mut out = Vec::with_capacity(METRICS.len() * PER_SERIES);
    let wall = goroscope_proto::unix_ms();
    for j in 0..METRICS.len() {
        for i in 0..PER_SERIES {
            let ts = if j == NOW_SERIES {
                let ts = (wall - PER_SERIES as i64 + i as i64).max(*now_next);
                *now_next = ts + 1;
                ts
            } else {
                t0 - TRAIL_MS
                    + j as i64 * 20_000
                    + ((seq as i64 - 1) * PER_SERIES as i64 + i as i64) * STRIDE_MS
            };
            let id = ((h as u64) << 40) | (seq << 8) | ((j as u64) << 4) | i as u64;
            let value = match rng.below(16) {
                0 => f64::from_bits(0x7ff8_0000_0000_0000 | id),
                1 => f64::from_bits(0xfff8_0000_0000_0000 | id),
                2 => f64::INFINITY,
                3 => f64::NEG_INFINITY,
                4 => f64::from_bits(STALE_NAN),
                5 => -0.0,
                _ => h as f64 * 1e9 + seq as f64 * 1e3 + (j * 10 + i) as f64 + 0.5,
            };
            out.push((j, ts, value.to_bits()));
        }
    }
    out
}

/// A batch on the wire; the first on a stream declares the target and the series.
fn encode(h: usize, seq: u64, samples: &[(usize, i64, u64)], declare: bool) -> v1::Batch {
    let host = host_name(h);
    let mut series: Vec<v1::SeriesSamples> = (0..METRICS.len())
        .map(|j| v1::SeriesSamples {
            series_ref: j as u32,
            timestamp_deltas: Vec::new(),
            values: Vec::new(),
        })
        .collect();
    let mut previous: Vec<Option<i64>> = vec![None; METRICS.len()];
    for &(j, ts, bits) in samples {
        let delta = previous[j].map_or(ts, |p| ts - p);
        previous[j] = Some(ts);
        series[j].timestamp_deltas.push(delta);
        series[j].values.push(f64::from_bits(bits));
    }
    v1::Batch {
        seq,
        targets: if declare {
            vec![upsert(0, &host, PID, &[("service", "durability")])]
        } else {
            Vec::new()
        },
        series: if declare {
            METRICS
                .iter()
                .enumerate()
                .map(|(j, m)| decl(j as u32, 0, m))
                .collect()
        } else {
            Vec::new()
        },
        samples: series,
        ..Default::default()
    }
}

/// What a check found: counts for the report, and every way the store differs from
/// what was sent.
#[derive(Default)]
struct Findings {
    durable_samples: u64,
    present_samples: u64,
    undurable_batches: u64,
    undurable_present: u64,
    problems: Vec<String>,
}

impl Findings {
    fn summary(&self) -> String {
        format!(
            "{} acknowledged samples, {} returned, {} batches never acknowledged ({} of them \
             stored), {} problems",
            self.durable_samples,
            self.present_samples,
            self.undurable_batches,
            self.undurable_present,
            self.problems.len()
        )
    }
}

/// Reads every series back through QueryRange and `goroscope status -o json` and
/// compares them with the ledgers.
fn check(
    rt: &tokio::runtime::Runtime,
    certs: &Certs,
    url: &str,
    t0: i64,
    ledgers: &[Ledger],
    phase: &str,
) -> Findings {
    let mut f = Findings::default();
    // (host, series) -> timestamp -> the value bits of each copy stored.
    let mut stored: HashMap<(usize, usize), BTreeMap<i64, Vec<u64>>> = HashMap::new();
    for (j, metric) in METRICS.iter().enumerate() {
        let response = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                raw::query_client(certs, url).query_range(v1::QueryRangeRequest {
                    metric: (*metric).into(),
                    matchers: vec![],
                    start_ms: t0 - 3_600_000,
                    end_ms: goroscope_proto::unix_ms() + 600_000,
                }),
            )
            .await
        });
        let series = match response {
            Ok(Ok(r)) => r.into_inner().series,
            Ok(Err(status)) => {
                f.problems
                    .push(format!("{phase}: query {metric} failed: {status:?}"));
                continue;
            }
            Err(_) => {
                f.problems
                    .push(format!("{phase}: query {metric} took over 30s"));
                continue;
            }
        };
        for s in series {
            let host = s
                .target
                .as_ref()
                .map(|t| t.host.clone())
                .unwrap_or_default();
            let Some(h) = (0..HOSTS).find(|h| host_name(*h) == host) else {
                f.problems.push(format!(
                    "{phase}: {metric} has a series of unknown host {host:?}"
                ));
                continue;
            };
            let points = stored.entry((h, j)).or_default();
            for p in s.samples {
                points
                    .entry(p.timestamp_ms)
                    .or_default()
                    .push(p.value().to_bits());
            }
        }
    }
    for ((h, j), points) in &stored {
        for (ts, copies) in points {
            if copies.len() > 1 {
                f.problems.push(format!(
                    "{phase}: {}/{} at {ts} is returned {} times: {copies:x?}",
                    host_name(*h),
                    METRICS[*j],
                    copies.len()
                ));
            }
        }
    }
    f.present_samples = stored
        .values()
        .flat_map(|p| p.values())
        .map(|c| c.len() as u64)
        .sum();

    let status = goroscope_json(certs, url, &["status"]);
    let mut sent_samples = 0u64;
    for (h, ledger) in ledgers.iter().enumerate() {
        let host = host_name(h);
        // Seqs stored whole, in order, for the host's counters.
        let mut present_seqs = Vec::new();
        for (&seq, batch) in &ledger.batches {
            sent_samples += batch.samples.len() as u64;
            let mut found = 0;
            for &(j, ts, bits) in &batch.samples {
                let Some(copies) = stored.get(&(h, j)).and_then(|p| p.get(&ts)) else {
                    if batch.fate.durable() {
                        f.problems.push(format!(
                            "{phase}: {host} seq {seq} ({:?}): {} at {ts} is lost",
                            batch.fate, METRICS[j]
                        ));
                    }
                    continue;
                };
                found += 1;
                // Bit for bit: NaN payloads and the sign of a zero too.
                if copies[0] != bits {
                    f.problems.push(format!(
                        "{phase}: {host} seq {seq}: {} at {ts} is {:#018x}, sent {bits:#018x}",
                        METRICS[j], copies[0]
                    ));
                }
            }
            if batch.fate.durable() {
                f.durable_samples += batch.samples.len() as u64;
            } else {
                f.undurable_batches += 1;
                if found > 0 {
                    f.undurable_present += 1;
                }
            }
            if found != 0 && found != batch.samples.len() {
                f.problems.push(format!(
                    "{phase}: {host} seq {seq} ({:?}) is stored in part: {found} of {} samples",
                    batch.fate,
                    batch.samples.len()
                ));
            }
            if found == batch.samples.len() {
                present_seqs.push(seq);
            }
        }
        // A jump in the stored seqs after the first is a gap; the seqs it skips are
        // missed.
        let (mut gaps, mut missed) = (0u64, 0u64);
        for w in present_seqs.windows(2) {
            if w[1] > w[0] + 1 {
                gaps += 1;
                missed += w[1] - w[0] - 1;
            }
        }
        let per_batch = (METRICS.len() * PER_SERIES) as u64;
        let c = status["collectors"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["host"] == host.as_str()));
        let Some(c) = c else {
            f.problems.push(format!(
                "{phase}: status lists no collector {host}: {status}"
            ));
            continue;
        };
        let expect = [
            ("batches", present_seqs.len() as u64),
            ("samples", present_seqs.len() as u64 * per_batch),
            ("gaps", gaps),
            ("missed_scrapes", missed),
        ];
        for (key, want) in expect {
            if c[key].as_u64() != Some(want) {
                f.problems.push(format!(
                    "{phase}: status says {host} {key} = {}, the stored batches make {want}",
                    c[key]
                ));
            }
        }
    }
    // Anything returned that no writer sent.
    let sent: HashMap<(usize, usize, i64), ()> = ledgers
        .iter()
        .enumerate()
        .flat_map(|(h, l)| {
            l.batches
                .values()
                .flat_map(move |b| b.samples.iter().map(move |&(j, ts, _)| ((h, j, ts), ())))
        })
        .collect();
    for ((h, j), points) in &stored {
        for ts in points.keys() {
            if !sent.contains_key(&(*h, *j, *ts)) {
                f.problems.push(format!(
                    "{phase}: {}/{} at {ts} was never sent",
                    host_name(*h),
                    METRICS[*j]
                ));
            }
        }
    }
    match status["samples_stored"].as_u64() {
        Some(n) if n < f.durable_samples => f.problems.push(format!(
            "{phase}: status says {n} samples stored, {} were acknowledged",
            f.durable_samples
        )),
        Some(n) if n != f.present_samples => f.problems.push(format!(
            "{phase}: status says {n} samples stored, queries return {} (of {sent_samples} sent)",
            f.present_samples
        )),
        Some(_) => {}
        None => f
            .problems
            .push(format!("{phase}: no samples_stored in status: {status}")),
    }
    f
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Four raw collectors (one abandons what is not acknowledged when the aggregator dies,
/// the others send it again) ingest while the aggregator is SIGKILLed eight times, twice
/// near its first compaction, and restarted on the same database and port. Every
/// acknowledged sample is returned exactly once, bit for bit, before and after a last
/// crash and a compaction; no batch is stored in part; `goroscope status` agrees.
/// `GOROSCOPE_DURABILITY_SEED` replays a run's choices (the seed is printed).
#[test]
fn acknowledged_samples_survive_sigkills_exactly_once() {
    let _serial = detection_lock();
    let seed = std::env::var("GOROSCOPE_DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("durability: seed {seed} (replay with GOROSCOPE_DURABILITY_SEED={seed})");
    let started = Instant::now();
    let names: Vec<String> = (0..HOSTS).map(host_name).collect();
    let certs = Arc::new(Certs::new(
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("db");
    let port = free_port();
    let mut agg = Aggregator::start_with(&certs, &db, port, SETTINGS);
    let url = agg.url();
    let t0 = goroscope_proto::unix_ms();
    let rt = raw::runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(100);
    let mut rng = Rng(seed);
    let writers: Vec<_> = (0..HOSTS)
        .map(|h| {
            rt.spawn(
                Writer {
                    certs: certs.clone(),
                    url: url.clone(),
                    host: h,
                    epoch: (rng.next() >> 1).max(1),
                    seed,
                    t0,
                    abandons: h == HOSTS - 1,
                    stop: stop.clone(),
                    acked: acked.clone(),
                    deadline,
                }
                .run(),
            )
        })
        .collect();

    let mut problems = Vec::new();
    let mut long = Vec::new();
    while long.len() < LONG_LIVES {
        let k = rng.below(KILLS as u64) as usize;
        if !long.contains(&k) {
            long.push(k);
        }
    }
    let mut flushes = 0;
    for k in 0..KILLS {
        let delay = if long.contains(&k) {
            9_900 + rng.below(600)
        } else {
            100 + rng.below(1_900)
        };
        std::thread::sleep(Duration::from_millis(delay));
        if let Some(status) = agg.proc.try_exit() {
            problems.push(format!(
                "the aggregator exited on its own ({status}) before kill {k}:\n{}",
                tail(&agg.proc.output(), 20)
            ));
        }
        let before = acked.load(Ordering::Relaxed);
        agg.proc.kill();
        let out = agg.proc.output();
        let flushed: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("head flushed into chunks"))
            .collect();
        flushes += flushed.len();
        for bad in ["panicked", "storage write failed", "head flush failed"] {
            if out.contains(bad) {
                problems.push(format!("run {k} logged {bad:?}:\n{}", tail(&out, 20)));
            }
        }
        eprintln!(
            "durability: kill {k}: SIGKILL {delay} ms after start, {before} batches acked \
             so far, {} flushes in that run {flushed:?}",
            flushed.len()
        );
        agg = Aggregator::start_with(&certs, &db, port, SETTINGS);
        let out = agg.proc.output();
        if out.contains("could not be decoded") || out.contains("cannot be decoded") {
            problems.push(format!("restart {k} skipped records:\n{}", tail(&out, 20)));
        }
    }
    // A last stretch on a stable aggregator, then every writer finishes its batch.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let ledgers: Vec<Ledger> = rt.block_on(async {
        let mut ledgers = Vec::new();
        for w in writers {
            let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
            match tokio::time::timeout(left, w).await {
                Ok(Ok(ledger)) => ledgers.push(ledger),
                Ok(Err(e)) => panic!("a writer failed: {e} (seed {seed})"),
                Err(_) => panic!("a writer is still running past its deadline (seed {seed})"),
            }
        }
        ledgers
    });
    for (h, l) in ledgers.iter().enumerate() {
        let count = |fate| l.batches.values().filter(|b| b.fate == fate).count();
        let resent = l.batches.values().filter(|b| b.attempts > 1).count();
        eprintln!(
            "durability: {}: {} batches: {} acked, {} stored per a Welcome, {} abandoned, \
             {} unanswered; {resent} sent more than once, {} stored ones sent again; \
             {} streams, {} failed sends",
            host_name(h),
            l.batches.len(),
            count(Fate::Acked),
            count(Fate::StoredPerWelcome),
            count(Fate::Abandoned),
            count(Fate::Sent),
            l.resent_stored,
            l.streams,
            l.failed_sends,
        );
        problems.extend(l.problems.iter().cloned());
    }

    let live = check(&rt, &certs, &url, t0, &ledgers, "after the crashes");
    eprintln!("durability: after the crashes: {}", live.summary());
    problems.extend(live.problems);

    // Once more: a crash with nothing in flight, then a compaction of what it replayed.
    agg.proc.kill();
    agg = Aggregator::start_with(&certs, &db, port, SETTINGS);
    agg.proc
        .wait_for_line("head flushed into chunks", Duration::from_secs(30));
    let last = check(
        &rt,
        &certs,
        &url,
        t0,
        &ledgers,
        "after a last crash and a flush",
    );
    eprintln!(
        "durability: after a last crash and a flush: {}",
        last.summary()
    );
    problems.extend(last.problems);
    eprintln!(
        "durability: {flushes} flushes before the last crash; {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    assert!(
        live.durable_samples > 0,
        "nothing was acknowledged (seed {seed})"
    );
    assert!(
        problems.is_empty(),
        "seed {seed} (replay with GOROSCOPE_DURABILITY_SEED={seed}): {} problems:\n{}",
        problems.len(),
        problems
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(agg);
}
