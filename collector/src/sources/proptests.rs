//! Every parser of what a process or the kernel hands the collector takes any bytes:
//! it returns a value or an error, never panics, never allocates what the input claims.

use proptest::prelude::*;

use super::{buildinfo, expvar, pprof, proc};

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
}
