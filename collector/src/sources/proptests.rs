//! Every parser of what a process or the kernel hands the collector takes any bytes:
//! it returns a value or an error, never panics, never allocates what the input claims.

use proptest::prelude::*;

use super::{buildinfo, cgroup, environ, expvar, pprof, proc};

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
}
