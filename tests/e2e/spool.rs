//! The disk spool end to end: an aggregator down for two minutes with a collector
//! restart in between loses no sample; a damaged spool file costs only its damaged
//! record.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use goroscope_tests::*;

use crate::STARTUP;

/// How long the aggregator stays down in the restart test (the scenario).
const DOWN: Duration = Duration::from_secs(120);

/// A collector that reconnects within a second or two of the aggregator's return.
fn collector(certs: &Certs, host: &str, url: &str, extra_env: &[(&str, &str)]) -> Proc {
    let mut cmd = collector_command(certs, host, url, &format!("collector-{host}"));
    cmd.env("GOROSCOPE_COLLECTOR_LIMITS__MAX_BACKOFF", "1s");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Proc::spawn(&format!("collector {host}"), &mut cmd)
}

/// The timestamps of the scrapes a collector took (its debug line "sampled").
fn scrape_times(collector: &Proc) -> Vec<i64> {
    collector
        .output()
        .lines()
        .filter(|l| l.contains(" sampled "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("timestamp_ms="))?
                .parse()
                .ok()
        })
        .collect()
}

fn rss_times(certs: &Certs, url: &str, pid: u32) -> Vec<i64> {
    series(certs, url, "process_resident_memory_bytes", pid, "15m")
        .into_iter()
        .map(|p| p.0)
        .collect()
}

/// The aggregator is down for two minutes; halfway, the collector is restarted (SIGTERM,
/// as a rollout does). Every scrape either collector run took meanwhile is stored once
/// the aggregator is back, exactly once each. Takes about two and a half minutes.
#[test]
fn every_sample_taken_while_the_aggregator_is_down_survives_a_collector_restart() {
    let steady = Workload::start("steady", &[]);
    let certs = Certs::new(&["e2e-spool"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut agg = Aggregator::start(&certs, &data.path().join("db"), port);
    let url = agg.url();
    let mut first = collector(&certs, "e2e-spool", &url, &[]);
    eventually(STARTUP, "samples before the outage", || {
        (rss_times(&certs, &url, steady.pid()).len() >= 2).then_some(())
    });

    agg.proc.kill();
    let down_at = goroscope_proto::unix_ms();
    let started = Instant::now();
    std::thread::sleep(DOWN / 2);
    assert!(first.terminate().success(), "{}", first.output());
    let second = collector(&certs, "e2e-spool", &url, &[]);
    second.wait_for_line("spool: unacknowledged scrapes of a previous run", STARTUP);
    std::thread::sleep(DOWN.saturating_sub(started.elapsed()));
    let agg = Aggregator::start(&certs, &agg.data_dir, port);
    let up_at = goroscope_proto::unix_ms();

    let taken: BTreeSet<i64> = scrape_times(&first)
        .into_iter()
        .chain(scrape_times(&second))
        .filter(|t| (down_at..up_at).contains(t))
        .collect();
    // One scrape a second, less the restart's gap.
    assert!(
        taken.len() >= 100,
        "{} scrapes taken: {taken:?}",
        taken.len()
    );
    let stored = eventually(STARTUP, "every scrape of the outage stored", || {
        let s = rss_times(&certs, &url, steady.pid());
        let window: Vec<i64> = s
            .iter()
            .copied()
            .filter(|t| (down_at..up_at).contains(t))
            .collect();
        (window.len() >= taken.len()).then_some(window)
    });
    let stored_set: BTreeSet<i64> = stored.iter().copied().collect();
    assert_eq!(stored.len(), stored_set.len(), "no sample is stored twice");
    let missing: Vec<&i64> = taken.difference(&stored_set).collect();
    assert!(missing.is_empty(), "scrapes lost: {missing:?}");
    assert_eq!(stored_set, taken);
    drop(agg);
}

/// Bytes flipped in the middle of a spool segment (a real write to the file while the
/// collector is stopped): the collector starts, skips and reports that one record,
/// and delivers every other scrape.
#[test]
fn a_corrupted_spool_segment_costs_only_its_damaged_record() {
    let steady = Workload::start("steady", &[]);
    let host = "e2e-spoolbad";
    let certs = Certs::new(&[host]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let small_segments = [("GOROSCOPE_COLLECTOR_SPOOL__SEGMENT_BYTES", "16384")];
    // No aggregator yet: every scrape stays in the spool.
    let mut first = collector(&certs, host, &url, &small_segments);
    first.wait_for_line("aggregator stream failed", STARTUP);
    std::thread::sleep(Duration::from_secs(8));
    assert!(first.terminate().success(), "{}", first.output());

    let spool = certs.spool_dir(host);
    let records = goroscope_collector::spool::inspect(&spool).unwrap();
    assert!(records.len() >= 6, "{records:?}");
    // A record inside a segment, with valid records on both sides.
    let victim = records[records.len() / 2].clone();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&victim.segment)
        .unwrap();
    let at = victim.offset + victim.len / 2;
    let mut byte = [0u8; 1];
    std::fs::File::open(&victim.segment)
        .unwrap()
        .read_exact_at(&mut byte, at)
        .unwrap();
    file.write_all_at(&[!byte[0]], at).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let agg = Aggregator::start(&certs, &data.path().join("db"), port);
    let metrics_port = free_port();
    let mut cmd = collector_command(&certs, host, &url, &format!("collector-{host}"));
    cmd.arg(format!("--metrics-listen=127.0.0.1:{metrics_port}"))
        .env("GOROSCOPE_COLLECTOR_SPOOL__SEGMENT_BYTES", "16384");
    let mut second = Proc::spawn("collector after the damage", &mut cmd);

    let expected: BTreeSet<i64> = records
        .iter()
        .filter(|r| r.id != victim.id)
        .map(|r| r.timestamp_ms)
        .collect();
    let stored: BTreeSet<i64> = eventually(STARTUP, "the undamaged records delivered", || {
        let s: BTreeSet<i64> = rss_times(&certs, &url, steady.pid()).into_iter().collect();
        expected.is_subset(&s).then_some(s)
    });
    assert!(
        !stored.contains(&victim.timestamp_ms),
        "the damaged record's scrape cannot have been delivered"
    );
    second.wait_for_line("spool: skipped damaged bytes", STARTUP);
    let report = second.wait_for_line("reporting lost data to the aggregator", STARTUP);
    assert!(report.contains("spool_corrupt"), "{report}");
    let addr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let (_, body) = raw::http_get(addr, "/metrics");
    assert!(
        body.lines()
            .any(|l| l
                == "goroscope_collector_spool_records_dropped_total{reason=\"spool_corrupt\"} 1"),
        "{body}"
    );
    // And it carries on: new scrapes arrive.
    let after = goroscope_proto::unix_ms();
    eventually(STARTUP, "new samples after the recovery", || {
        rss_times(&certs, &url, steady.pid())
            .iter()
            .any(|t| *t > after)
            .then_some(())
    });
    assert!(
        second.try_exit().is_none(),
        "the collector is still running"
    );
    drop(agg);
}
