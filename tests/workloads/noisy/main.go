// noisy is a healthy but noisy service: a worker pool that every -every resizes itself
// to a random size between -min and -max (so the goroutine count swings by hundreds up
// and down with no trend), each worker allocating and dropping a -size buffer every
// -tick (so the GC is busy but keeps up and the heap stays bounded). Nothing leaks; a
// detector should stay quiet. It serves net/http/pprof and expvar on -addr and prints
// "listening on ADDR" once serving.
package main

import (
	"flag"
	"math/rand/v2"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

// work churns small buffers until told to quit.
func work(quit <-chan struct{}, size int, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	var keep [][]byte
	for {
		select {
		case <-quit:
			return
		case <-t.C:
			keep = append(keep, make([]byte, size))
			if len(keep) > 16 {
				keep = keep[:0]
			}
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	lo := flag.Int("min", 100, "smallest pool size")
	hi := flag.Int("max", 800, "largest pool size")
	every := flag.Duration("every", 2*time.Second, "time between resizes")
	size := flag.Int("size", 1024, "bytes each worker allocates per tick")
	tick := flag.Duration("tick", 50*time.Millisecond, "allocation period of each worker")
	flag.Parse()
	if *hi < *lo {
		*hi = *lo
	}

	quit := make(chan struct{})
	go func() {
		running := 0
		for {
			want := *lo + rand.IntN(*hi-*lo+1)
			for ; running < want; running++ {
				go work(quit, *size, *tick)
			}
			for ; running > want; running-- {
				quit <- struct{}{}
			}
			time.Sleep(*every)
		}
	}()
	debugserve.Run(*addr)
}
