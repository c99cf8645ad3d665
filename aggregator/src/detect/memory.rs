//! Memory diagnoses from the runtime's MemStats (expvar) and /proc: a heap that leaks,
//! RSS the runtime retains (not a leak), memory growing outside the Go heap, stacks
//! growing with goroutines, and a garbage collector that thrashes.

use serde_json::json;

use super::trend::{Finding, rising};
use super::window::Window;

const MIB: f64 = 1024.0 * 1024.0;

/// `heap-leak`: heap in use rises (by 4 MiB and 20% at least) across at least 3 GC
/// cycles of the window, while the goroutine count is stable. A growing live heap
/// spaces its cycles out (each waits for the heap to grow by GOGC percent), so few
/// cycles is the leak's shape; garbage alone would fall back at each of them. A heap
/// that follows a swinging goroutine count (work coming and going) is load, and a
/// heap growing with goroutines is a goroutine leak's memory side: neither is called.
pub fn heap_leak(heap_inuse: &Window, gc_cycles: &Window, goroutines: &Window) -> Option<Finding> {
    let rise = rising(heap_inuse, 4.0 * MIB, 0.2)?;
    let cycles = match (gc_cycles.points().first(), gc_cycles.last()) {
        (Some(a), Some(b)) => b.1 - a.1,
        _ => return None,
    };
    if cycles < 3.0 || !stable(goroutines) || rising(goroutines, 50.0, 0.2).is_some() {
        return None;
    }
    let mut evidence = rise.evidence();
    evidence["gc_cycles_in_window"] = json!(cycles);
    Some(Finding {
        diagnosis: "heap-leak",
        evidence,
        advice: "The live heap keeps growing across garbage collections: something keeps \
                 references (a map or cache without eviction, globals, sub-slices of large \
                 arrays). Compare two heap profiles minutes apart to see what grows."
            .into(),
    })
}

/// Whether a count keeps to one level over the window: its 10th to 90th percentile
/// spread within half its median (or 50). No points: nothing says otherwise.
pub fn stable(w: &Window) -> bool {
    let mut values: Vec<f64> = w.points().iter().map(|p| p.1).collect();
    if values.is_empty() {
        return true;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    at(0.9) - at(0.1) <= (0.5 * at(0.5)).max(50.0)
}

/// The latest MemStats of a target, for the judgements made on one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemNow {
    pub rss: f64,
    pub heap_inuse: f64,
    pub heap_idle: f64,
    pub heap_released: f64,
    pub stack_inuse: f64,
}

/// `rss-retention`, reported as *not a leak*: RSS far above what the heap and stacks
/// use (by 32 MiB and half again at least), with most of the difference idle heap the
/// runtime has not returned, while heap in use is not rising.
pub fn rss_retention(now: MemNow, heap_inuse: &Window) -> Option<Finding> {
    let used = now.heap_inuse + now.stack_inuse;
    let retained = now.heap_idle - now.heap_released;
    if now.rss < used * 1.5 + 32.0 * MIB || retained < 0.5 * (now.rss - used) {
        return None;
    }
    if heap_inuse.covered() < super::trend::MIN_COVERED_S || rising(heap_inuse, MIB, 0.05).is_some()
    {
        return None;
    }
    Some(Finding {
        diagnosis: "rss-retention",
        evidence: json!({
            "rss_bytes": now.rss,
            "heap_inuse_bytes": now.heap_inuse,
            "stack_inuse_bytes": now.stack_inuse,
            "heap_idle_not_released_bytes": retained,
            "leak": false,
        }),
        advice: "Not a leak: the heap in use is flat, and the runtime keeps freed memory \
                 for reuse. If RSS itself is the problem, set GOMEMLIMIT, or \
                 GODEBUG=madvdontneed=1 so freed memory leaves RSS at once."
            .into(),
    })
}

/// `offheap-growth`: RSS rises (by 16 MiB and 20% at least) while what the Go runtime
/// manages (`go_memstats_sys_bytes`) grows by less than a quarter of it: memory from C
/// (cgo) or mappings the Go heap does not see.
pub fn offheap_growth(rss: &Window, go_sys: &Window) -> Option<Finding> {
    let rise = rising(rss, 16.0 * MIB, 0.2)?;
    let runtime_growth = match (go_sys.points().first(), go_sys.last()) {
        (Some(a), Some(b)) => b.1 - a.1,
        _ => return None,
    };
    let rss_growth = rise.to - rise.from;
    if runtime_growth > 0.25 * rss_growth {
        return None;
    }
    let mut evidence = rise.evidence();
    evidence["runtime_sys_growth_bytes"] = json!(runtime_growth);
    Some(Finding {
        diagnosis: "offheap-growth",
        evidence,
        advice: "RSS grows while the Go runtime's own memory is flat: the growth is outside \
                 the Go heap (C allocations through cgo, or mappings). Heap profiles will not \
                 show it; look at the cgo code's allocations and frees."
            .into(),
    })
}

/// `gc-thrash`: more than one garbage collection a second over the window while the
/// runtime spends more than 10% of its CPU in them, or more than 5% with the heap goal
/// within 20% of the heap (GOGC or GOMEMLIMIT too tight). Frequent cycles that cost
/// little (a small heap with a high allocation rate) are not thrash.
pub fn gc_thrash(
    gc_cycles: &Window,
    cpu_fraction: f64,
    next_gc: f64,
    heap_alloc: f64,
) -> Option<Finding> {
    let points = gc_cycles.points();
    let (first, last) = (points.first()?, points.last()?);
    let span = last.0 - first.0;
    if span < super::trend::MIN_COVERED_S {
        return None;
    }
    let per_s = (last.1 - first.1) / span;
    // HeapAlloc counts garbage not yet collected, so NextGC / HeapAlloc nears 1 before
    // every cycle of a healthy program: tight only counts when the cycles also cost.
    let tight = heap_alloc > 0.0 && next_gc / heap_alloc < 1.2;
    if per_s <= 1.0 || !(cpu_fraction > 0.1 || (tight && cpu_fraction > 0.05)) {
        return None;
    }
    Some(Finding {
        diagnosis: "gc-thrash",
        evidence: json!({
            "gc_per_s": per_s,
            "gc_cpu_fraction": cpu_fraction,
            "next_gc_over_heap": if heap_alloc > 0.0 { next_gc / heap_alloc } else { 0.0 },
            "window_s": span,
        }),
        advice: "The garbage collector runs more than once a second and takes a large share \
                 of the CPU: GOGC is too low, GOMEMLIMIT too tight, or the program allocates \
                 in a storm. Raise GOGC or the limit, or allocate less in the hot path."
            .into(),
    })
}

/// `stack-growth`: stack memory rises (by 2 MiB and 20% at least) with the goroutine
/// count: the memory side of a goroutine leak or explosion.
pub fn stack_growth(stack_inuse: &Window, goroutines: &Window) -> Option<Finding> {
    let rise = rising(stack_inuse, 2.0 * MIB, 0.2)?;
    let with = rising(goroutines, 100.0, 0.2)?;
    let mut evidence = rise.evidence();
    evidence["goroutines_from"] = json!(with.from);
    evidence["goroutines_to"] = json!(with.to);
    Some(Finding {
        diagnosis: "stack-growth",
        evidence,
        advice: "Stack memory grows with the goroutine count: each goroutine holds at least a \
                 2 KiB stack. Find why goroutines accumulate (see the goroutine diagnosis)."
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(f: impl Fn(f64) -> f64) -> Window {
        let mut w = Window::new(1800.0);
        for t in (0..600).step_by(10) {
            let t = f64::from(t);
            w.push(t, f(t));
        }
        w
    }

    #[test]
    fn a_growing_heap_across_collections_is_a_leak_unless_goroutines_grow_with_it() {
        let heap = window(|t| 50.0 * MIB + t * 0.1 * MIB);
        let cycles = window(|t| (t / 20.0).floor());
        let flat = window(|t| 30.0 + (t / 10.0) % 3.0);
        let f = heap_leak(&heap, &cycles, &flat).unwrap();
        assert_eq!(f.diagnosis, "heap-leak");
        assert!(f.evidence["gc_cycles_in_window"].as_f64().unwrap() >= 29.0);
        // Few collections: the heap may just be growing towards its goal.
        let rare = window(|t| (t / 300.0).floor());
        assert!(heap_leak(&heap, &rare, &flat).is_none());
        // Goroutines swinging with the load: the heap follows them.
        let swinging = window(|t| 100.0 + 600.0 * (((t / 10.0) as u64 * 7919 % 13) as f64 / 13.0));
        assert!(!stable(&swinging));
        assert!(heap_leak(&heap, &cycles, &swinging).is_none());
        // Goroutines growing too: that is a goroutine leak's memory side.
        let growing = window(|t| 30.0 + t);
        assert!(heap_leak(&heap, &cycles, &growing).is_none());
    }

    #[test]
    fn retained_idle_memory_is_not_a_leak_and_is_said_so() {
        let flat = window(|t| 20.0 * MIB + (t % 30.0) * 1000.0);
        let now = MemNow {
            rss: 300.0 * MIB,
            heap_inuse: 20.0 * MIB,
            heap_idle: 270.0 * MIB,
            heap_released: 10.0 * MIB,
            stack_inuse: MIB,
        };
        let f = rss_retention(now, &flat).unwrap();
        assert_eq!(f.evidence["leak"], false);
        assert!(f.advice.starts_with("Not a leak"));
        // Released to the OS already: nothing retained to speak of.
        let released = MemNow {
            heap_released: 260.0 * MIB,
            ..now
        };
        assert!(rss_retention(released, &flat).is_none());
        // A rising heap is not retention.
        let rising_heap = window(|t| 20.0 * MIB + t * MIB);
        assert!(rss_retention(now, &rising_heap).is_none());
    }

    #[test]
    fn rss_growing_outside_the_runtime_is_offheap() {
        let rss = window(|t| 100.0 * MIB + t * 0.2 * MIB);
        let sys = window(|_| 40.0 * MIB);
        assert_eq!(
            offheap_growth(&rss, &sys).unwrap().diagnosis,
            "offheap-growth"
        );
        let sys_growing = window(|t| 40.0 * MIB + t * 0.2 * MIB);
        assert!(offheap_growth(&rss, &sys_growing).is_none());
    }

    #[test]
    fn stacks_growing_with_goroutines_is_stack_growth() {
        let stacks = window(|t| 8.0 * MIB + t * 0.05 * MIB);
        let goroutines = window(|t| 1000.0 + t * 10.0);
        assert!(stack_growth(&stacks, &goroutines).is_some());
        let steady = window(|_| 1000.0);
        assert!(stack_growth(&stacks, &steady).is_none());
    }

    #[test]
    fn a_collector_running_all_the_time_thrashes() {
        let storm = window(|t| t * 5.0);
        assert!(gc_thrash(&storm, 0.3, 11.0 * MIB, 10.0 * MIB).is_some());
        // Busy but keeping up: cheap collections, room to the goal.
        assert!(gc_thrash(&storm, 0.02, 20.0 * MIB, 10.0 * MIB).is_none());
        // Frequent and near the goal (sampled just before a cycle) but nearly free.
        assert!(gc_thrash(&storm, 0.0014, 17.6 * MIB, 15.3 * MIB).is_none());
        assert!(gc_thrash(&storm, 0.07, 11.0 * MIB, 10.0 * MIB).is_some());
        let calm = window(|t| t / 30.0);
        assert!(gc_thrash(&calm, 0.3, 11.0 * MIB, 10.0 * MIB).is_none());
    }
}
