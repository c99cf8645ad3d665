// gcstorm thrashes the garbage collector: it sets GOGC to -gogc (10 by default, via
// debug.SetGCPercent), keeps a pointer-rich live set of -live MiB that every cycle must
// mark, and runs -workers goroutines that allocate short-lived garbage as fast as they
// can (paced by -pause). GC cycles come back to back, NextGC/HeapAlloc stays near 1.1
// and the GC CPU fraction is high. It serves net/http/pprof and expvar on -addr and
// prints "listening on ADDR" once serving.
package main

import (
	"flag"
	"runtime/debug"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

type node struct {
	next *node
	val  [6]int64
}

var live []*node // the long-lived set every GC cycle marks

// churn allocates garbage that dies at once.
func churn(pause time.Duration) {
	var sink *node
	for i := 0; ; i++ {
		n := &node{next: sink}
		if i%64 == 0 {
			sink = nil
		} else {
			sink = n
		}
		if pause > 0 && i%4096 == 0 {
			time.Sleep(pause)
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	gogc := flag.Int("gogc", 10, "GC percent (as GOGC)")
	liveMiB := flag.Int("live", 64, "MiB of long-lived pointer-rich data")
	workers := flag.Int("workers", 2, "allocating goroutines")
	pause := flag.Duration("pause", 0, "sleep after every 4096 allocations per worker")
	flag.Parse()

	debug.SetGCPercent(*gogc)
	for n := 0; n < *liveMiB<<20/64; n++ {
		var prev *node
		if len(live) > 0 {
			prev = live[len(live)-1]
		}
		live = append(live, &node{next: prev})
	}
	for i := 0; i < *workers; i++ {
		go churn(*pause)
	}
	debugserve.Run(*addr)
}
