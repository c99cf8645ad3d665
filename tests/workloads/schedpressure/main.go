// schedpressure keeps more CPU-bound goroutines than GOMAXPROCS busy, so runnable
// goroutines queue for a P and scheduling latency climbs: it sets GOMAXPROCS to
// -procs, starts -workers goroutines that compute in short bursts, and adds -ramp more
// every -every (up to -max), so the latency trend rises. It serves net/http/pprof and
// expvar on -addr, and /metrics with the scheduler's figures (internal/schedmetrics),
// and prints "listening on ADDR" once serving.
//
// -max stays under 256 by default: past that many runnable goroutines a P's local run
// queue overflows into the global one, which is read once every 61 schedules, and the
// debug endpoints (woken from the network poller into that queue) answer in seconds,
// past the collector's 3 s scrape timeout.
package main

import (
	"expvar"
	"flag"
	"net/http"
	"runtime"
	"time"

	"goroscope.test/workloads/internal/debugserve"
	"goroscope.test/workloads/internal/schedmetrics"
)

var workers = expvar.NewInt("workers")

// sink keeps the compiler from dropping the work.
var sink = expvar.NewInt("sink")

// work computes for about `burst`, sleeps `idle`, and again, forever: a busy request
// handler that never blocks on I/O for long. Each burst is shorter than the runtime's
// 10 ms preemption slice, so the goroutine gives up its P by sleeping, as a handler
// would by waiting for its next request.
func work(seed uint64, burst, idle time.Duration) {
	x := seed | 1
	for {
		end := time.Now().Add(burst)
		for time.Now().Before(end) {
			for i := 0; i < 1000; i++ {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
			}
		}
		sink.Set(int64(x & 0xff))
		time.Sleep(idle)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars, /debug/pprof/ and /metrics")
	procs := flag.Int("procs", 1, "GOMAXPROCS")
	n := flag.Int("workers", 64, "CPU-bound goroutines at start")
	ramp := flag.Int("ramp", 2, "goroutines added every -every")
	every := flag.Duration("every", time.Second, "interval between ramp steps")
	max := flag.Int("max", 240, "workers at most (see the package comment)")
	burst := flag.Duration("burst", 100*time.Microsecond, "CPU time of each burst")
	idle := flag.Duration("idle", 10*time.Millisecond, "sleep between bursts")
	flag.Parse()

	runtime.GOMAXPROCS(*procs)
	start := func(k int) {
		for i := 0; i < k && int(workers.Value()) < *max; i++ {
			go work(uint64(workers.Value())+1, *burst, *idle)
			workers.Add(1)
		}
	}
	start(*n)
	go func() {
		for range time.Tick(*every) {
			start(*ramp)
		}
	}()
	http.Handle("/metrics", schedmetrics.Handler())
	debugserve.Run(*addr)
}
