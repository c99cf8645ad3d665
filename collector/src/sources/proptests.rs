//! Every parser of what a process or the kernel hands the collector takes any bytes:
//! it returns a value or an error, never panics, never allocates what the input claims.

use proptest::prelude::*;

use super::{buildinfo, cgroup, environ, expvar, pprof, proc, prometheus};

proptest! {
    #[test]
    fn the_pprof_index_parser_takes_any_bytes(page in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = pprof::parse_goroutine_count(&page);
    }

    #[test]
    fn the_pprof_index_parser_takes_any_text_around_a_row(
        before in ".{0,64}", count in ".{0,12}", after in ".{0,64}"
    ) {
        let page = format!("{before}<tr><td>{count}</td><td><a href='goroutine?debug=1'>goroutine</a></td></tr>{after}");
        let _ = pprof::parse_goroutine_count(page.as_bytes());
    }

    #[test]
    fn the_expvar_parser_takes_any_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut out = Vec::new();
        let _ = expvar::parse(&body, &mut out);
    }

    #[test]
    fn the_build_info_parser_takes_any_section(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = buildinfo::parse_build_info_section(&data);
        let mut framed = b"\xff Go buildinf:".to_vec();
        framed.extend_from_slice(&data);
        let _ = buildinfo::parse_build_info_section(&framed);
    }

    #[test]
    fn the_proc_parsers_take_any_text(text in "\\PC{0,300}") {
        let _ = proc::parse_stat(&text);
        let _ = proc::parse_status(&text);
        let _ = proc::parse_net_tcp(&text, false);
        let _ = proc::parse_net_tcp(&text, true);
        let _ = proc::parse_fib_trie_locals(&text);
        let _ = proc::parse_if_inet6_globals(&text);
        let _ = proc::parse_smaps_rollup(&text);
    }

    #[test]
    fn the_stat_parser_takes_any_process_name(comm in ".{0,40}", rest in "[0-9 -]{0,120}") {
        let _ = proc::parse_stat(&format!("42 ({comm}) S {rest}"));
    }

    #[test]
    fn the_cgroup_parsers_take_any_text(text in "\\PC{0,300}") {
        let m = cgroup::parse_membership(&text);
        let _ = cgroup::Identity::of(&m);
        let _ = cgroup::identity_in(&text);
        let _ = cgroup::parse_number(&text);
        let _ = cgroup::parse_v2_limit(&text);
        let _ = cgroup::parse_cpu_max(&text);
        let _ = cgroup::keyed(&text, "oom_kill");
    }

    #[test]
    fn the_cgroup_reader_takes_any_membership(
        lines in prop::collection::vec(("[0-9x]{0,3}", "[a-z,=]{0,12}", "[/a-z.:_-]{0,40}"), 0..8)
    ) {
        // Paths of every shape against recorded trees: a value or nothing, never a
        // read outside the tree (a climbing path is refused) and never a panic.
        let text: String = lines.iter().map(|(i, c, p)| format!("{i}:{c}:{p}\n")).collect();
        let m = cgroup::parse_membership(&text);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sources/testdata/cgroup");
        for tree in ["v1", "v2"] {
            let r = cgroup::read(&cgroup::Layout::probe(&root.join(tree)), &m);
            prop_assert!(r.metrics.iter().all(|(_, v)| v.is_finite() && *v >= 0.0));
        }
    }

    #[test]
    fn the_environ_parser_takes_any_bytes(env in prop::collection::vec(any::<u8>(), 0..512), complete: bool) {
        let got = environ::parse(&env, complete);
        prop_assert!(got.len() <= environ::RUNTIME_VARS.len());
        prop_assert!(got.iter().all(|(k, _)| environ::RUNTIME_VARS.contains(&k.as_str())));
    }

    #[test]
    fn the_exposition_parser_takes_any_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut cache = prometheus::SeriesCache::new(&[("service".into(), "x".into())]);
        let _ = prometheus::parse(&body, &mut cache, 100);
    }

    #[test]
    fn the_exposition_parser_takes_any_text_in_a_sample(
        name in "[a-z_:0-9]{0,12}", labels in "[{}=\",a-z\\\\ ]{0,40}", value in "\\PC{0,12}",
        rest in "[ #{}a-z0-9.=\"]{0,30}"
    ) {
        let body = format!("# TYPE {name} histogram\n{name}{labels} {value}{rest}\n{name}_created 1\n");
        let mut cache = prometheus::SeriesCache::new(&[("service".into(), "x".into())]);
        if let Ok(p) = prometheus::parse(body.as_bytes(), &mut cache, 3) {
            prop_assert!(p.series.len() <= 3);
            for (id, _) in &p.series {
                prop_assert!(goroscope_proto::rules::check_metric_name(&id.name).is_ok());
                prop_assert!(id.labels.windows(2).all(|w| w[0].0 < w[1].0));
                for (k, v) in id.labels.iter() {
                    prop_assert!(goroscope_proto::rules::check_label(k, v).is_ok());
                    prop_assert!(&**k != "service");
                }
            }
        }
    }
}

/// A body as large as the response limit, of one huge line or of many series, is read
/// in bounded time and kept to the cap.
#[test]
fn a_huge_exposition_is_capped() {
    let mut cache = prometheus::SeriesCache::new(&[]);
    let many: String = (0..200_000)
        .map(|i| format!("m{{i=\"{i}\"}} {i}\n"))
        .collect();
    let p = prometheus::parse(many.as_bytes(), &mut cache, 2000).unwrap();
    assert_eq!((p.series.len(), p.capped), (2000, 198_000));
    assert!(cache.len() <= 4000);
    let line = format!("m{{v=\"{}\"}} 1\n", "x".repeat(8 << 20));
    let p = prometheus::parse(line.as_bytes(), &mut cache, 2000).unwrap();
    assert!(p.series[0].0.labels[0].1.len() <= goroscope_proto::rules::MAX_LABEL_VALUE);
    let open = format!("m{{v=\"{}", "x".repeat(1 << 20));
    assert!(prometheus::parse(open.as_bytes(), &mut cache, 2000).is_err());
}
