// tickerleak leaks tickers and their goroutines: every -every it handles -rate
// simulated requests, each starting a goroutine with time.NewTicker(-tick) whose
// refresh loop never exits and whose Stop is never called. The goroutines wait in
// "chan receive" on the ticker's channel and wake every -tick, so the timer heap and
// the CPU spent on wake-ups grow too. Growth stops at -max leaked goroutines. It serves
// net/http/pprof and expvar on -addr and prints "listening on ADDR" once serving.
package main

import (
	"flag"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

// refresh polls for changes for as long as the process lives.
func refresh(tick time.Duration) {
	t := time.NewTicker(tick) // t.Stop() is never called
	n := 0
	for range t.C {
		n++
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	rate := flag.Int("rate", 50, "requests per interval (each leaks a ticker goroutine)")
	every := flag.Duration("every", time.Second, "request interval")
	tick := flag.Duration("tick", 5*time.Second, "period of each leaked ticker")
	max := flag.Int("max", 20000, "stop leaking after this many goroutines")
	flag.Parse()

	go func() {
		leaked := 0
		for range time.Tick(*every) {
			for i := 0; i < *rate && leaked < *max; i++ {
				go refresh(*tick)
				leaked++
			}
		}
	}()
	debugserve.Run(*addr)
}
