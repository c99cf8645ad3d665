//! expvar's `/debug/vars`: the process's `runtime.MemStats`, as JSON.
//!
//! Only the fields goroscope uses are decoded; the others (the PauseNs ring, BySize, the
//! service's own vars) are skipped by the parser without being kept.

use serde::Deserialize;

use super::Metrics;

pub const PATH: &str = "/debug/vars";

#[derive(Debug, thiserror::Error)]
pub enum ExpvarError {
    #[error("/debug/vars is not expvar JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("/debug/vars has no memstats")]
    NoMemStats,
}

#[derive(Deserialize)]
struct Vars {
    memstats: Option<MemStats>,
}

#[derive(Deserialize)]
struct MemStats {
    #[serde(rename = "Alloc")]
    alloc: u64,
    #[serde(rename = "TotalAlloc")]
    total_alloc: u64,
    #[serde(rename = "Sys")]
    sys: u64,
    #[serde(rename = "Mallocs")]
    mallocs: u64,
    #[serde(rename = "Frees")]
    frees: u64,
    #[serde(rename = "HeapAlloc")]
    heap_alloc: u64,
    #[serde(rename = "HeapSys")]
    heap_sys: u64,
    #[serde(rename = "HeapIdle")]
    heap_idle: u64,
    #[serde(rename = "HeapInuse")]
    heap_inuse: u64,
    #[serde(rename = "HeapReleased")]
    heap_released: u64,
    #[serde(rename = "HeapObjects")]
    heap_objects: u64,
    #[serde(rename = "StackInuse")]
    stack_inuse: u64,
    #[serde(rename = "StackSys")]
    stack_sys: u64,
    #[serde(rename = "NextGC")]
    next_gc: u64,
    #[serde(rename = "LastGC")]
    last_gc: u64,
    #[serde(rename = "PauseTotalNs")]
    pause_total_ns: u64,
    #[serde(rename = "NumGC")]
    num_gc: u64,
    #[serde(rename = "NumForcedGC")]
    num_forced_gc: u64,
    #[serde(rename = "GCCPUFraction")]
    gc_cpu_fraction: f64,
}

/// Parses a `/debug/vars` body and appends its MemStats metrics to `out`.
pub fn parse(body: &[u8], out: &mut Metrics) -> Result<(), ExpvarError> {
    let vars: Vars = serde_json::from_slice(body)?;
    let m = vars.memstats.ok_or(ExpvarError::NoMemStats)?;
    out.extend_from_slice(&[
        ("go_memstats_alloc_bytes", m.alloc as f64),
        ("go_memstats_alloc_bytes_total", m.total_alloc as f64),
        ("go_memstats_sys_bytes", m.sys as f64),
        ("go_memstats_mallocs_total", m.mallocs as f64),
        ("go_memstats_frees_total", m.frees as f64),
        ("go_memstats_heap_alloc_bytes", m.heap_alloc as f64),
        ("go_memstats_heap_sys_bytes", m.heap_sys as f64),
        ("go_memstats_heap_idle_bytes", m.heap_idle as f64),
        ("go_memstats_heap_inuse_bytes", m.heap_inuse as f64),
        ("go_memstats_heap_released_bytes", m.heap_released as f64),
        ("go_memstats_heap_objects", m.heap_objects as f64),
        ("go_memstats_stack_inuse_bytes", m.stack_inuse as f64),
        ("go_memstats_stack_sys_bytes", m.stack_sys as f64),
        ("go_memstats_next_gc_bytes", m.next_gc as f64),
        ("go_memstats_last_gc_time_seconds", m.last_gc as f64 / 1e9),
        ("go_gc_pause_seconds_total", m.pause_total_ns as f64 / 1e9),
        ("go_gc_cycles_total", m.num_gc as f64),
        ("go_gc_forced_cycles_total", m.num_forced_gc as f64),
        ("go_memstats_gc_cpu_fraction", m.gc_cpu_fraction),
    ]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
"cmdline": ["/srv/billing","-port","6060"],
"custom": {"deep": [1, 2, {"x": "y"}]},
"memstats": {"Alloc":1048576,"TotalAlloc":9437184,"Sys":12582912,"Lookups":0,"Mallocs":3000,"Frees":1000,
"HeapAlloc":1048576,"HeapSys":7864320,"HeapIdle":5767168,"HeapInuse":2097152,"HeapReleased":4194304,
"HeapObjects":2000,"StackInuse":524288,"StackSys":524288,"MSpanInuse":1,"MSpanSys":1,"MCacheInuse":1,
"MCacheSys":1,"BuckHashSys":1,"GCSys":1,"OtherSys":1,"NextGC":4194304,"LastGC":1700000000000000000,
"PauseTotalNs":2500000,"PauseNs":[1,2,3],"PauseEnd":[1,2,3],"NumGC":12,"NumForcedGC":2,
"GCCPUFraction":0.0125,"EnableGC":true,"DebugGC":false,"BySize":[{"Size":0,"Mallocs":0,"Frees":0}]}
}"#;

    fn get(m: &Metrics, name: &str) -> f64 {
        m.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn parses_memstats_of_a_real_shape() {
        let mut m = Metrics::new();
        parse(SAMPLE.as_bytes(), &mut m).unwrap();
        assert_eq!(get(&m, "go_memstats_heap_inuse_bytes"), 2097152.0);
        assert_eq!(get(&m, "go_memstats_heap_released_bytes"), 4194304.0);
        assert_eq!(get(&m, "go_gc_cycles_total"), 12.0);
        assert_eq!(get(&m, "go_gc_forced_cycles_total"), 2.0);
        assert_eq!(get(&m, "go_gc_pause_seconds_total"), 0.0025);
        assert_eq!(get(&m, "go_memstats_last_gc_time_seconds"), 1.7e9);
    }

    #[test]
    fn garbage_and_missing_memstats_are_errors() {
        let mut m = Metrics::new();
        assert!(matches!(
            parse(b"<html>oops</html>", &mut m),
            Err(ExpvarError::Json(_))
        ));
        assert!(matches!(
            parse(b"{\"cmdline\":[]}", &mut m),
            Err(ExpvarError::NoMemStats)
        ));
        assert!(matches!(
            parse(br#"{"memstats":{"Alloc":"many"}}"#, &mut m),
            Err(ExpvarError::Json(_))
        ));
        assert!(m.is_empty());
    }
}
