// goburst explodes the goroutine count: after -delay it starts -n goroutines at once
// (an unbounded "go f()" per item of a large batch), each sleeping for -hold, so the
// count jumps from a handful to tens of thousands within a second (a burst, not a
// slow leak), and StackInuse jumps with it. With -repeat it does it again every
// -delay. It serves net/http/pprof and expvar on -addr and prints "listening on ADDR"
// once serving.
package main

import (
	"flag"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

// process handles one item of the batch: here, it waits for a slow dependency.
func process(item int, hold time.Duration) {
	time.Sleep(hold)
	_ = item
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	n := flag.Int("n", 20000, "goroutines started in one burst")
	delay := flag.Duration("delay", 20*time.Second, "wait before the burst")
	hold := flag.Duration("hold", time.Hour, "how long each goroutine lives")
	repeat := flag.Bool("repeat", false, "burst again every -delay")
	flag.Parse()

	go func() {
		for {
			time.Sleep(*delay)
			for i := 0; i < *n; i++ {
				go process(i, *hold)
			}
			if !*repeat {
				return
			}
		}
	}()
	debugserve.Run(*addr)
}
