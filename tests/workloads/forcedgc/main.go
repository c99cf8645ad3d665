// forcedgc forces garbage collections by hand: every -every (300 ms by default) it
// calls runtime.GC(), as code that "helps" the collector does, while a worker
// allocates a modest amount of garbage. NumForcedGC (go_gc_forced_cycles_total) rises
// by about one per -every and accounts for nearly every GC cycle. It serves
// net/http/pprof and expvar on -addr and prints "listening on ADDR" once serving.
package main

import (
	"flag"
	"runtime"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

// work allocates a 64 KiB buffer every 10 ms and drops it.
func work() {
	var sink []byte
	for range time.Tick(10 * time.Millisecond) {
		sink = make([]byte, 64<<10)
		sink[0] = 1
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	every := flag.Duration("every", 300*time.Millisecond, "time between runtime.GC() calls")
	flag.Parse()

	go work()
	go func() {
		for range time.Tick(*every) {
			runtime.GC()
		}
	}()
	debugserve.Run(*addr)
}
