// wgleak leaks goroutines on sync primitives: every -every it runs -rate batches whose
// WaitGroup gets one Add more than it gets Done, so the goroutine waiting for the batch
// blocks forever in sync.WaitGroup.Wait ("semacquire" / "sync.WaitGroup.Wait"); and it
// starts -lockers goroutines that try to Lock a mutex taken once at start and never
// unlocked ("sync.Mutex.Lock"). Growth stops at -max leaked goroutines. It serves
// net/http/pprof and expvar on -addr and prints "listening on ADDR" once serving.
package main

import (
	"flag"
	"fmt"
	"sync"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

var (
	mu    sync.Mutex // taken at start, never released
	count int
)

// batch runs n jobs but adds n+1 to the WaitGroup: the waiter never wakes.
func batch(n int) {
	var wg sync.WaitGroup
	wg.Add(n + 1)
	for i := 0; i < n; i++ {
		go func() { defer wg.Done() }()
	}
	go func() {
		wg.Wait()
		fmt.Println("batch done") // never reached
	}()
}

// bump waits for the mutex forever.
func bump() {
	mu.Lock()
	count++
	mu.Unlock()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	rate := flag.Int("rate", 50, "leaky WaitGroup batches per interval (one waiter each)")
	lockers := flag.Int("lockers", 50, "goroutines per interval blocked on the held mutex")
	every := flag.Duration("every", time.Second, "interval")
	max := flag.Int("max", 50000, "stop leaking after this many goroutines")
	flag.Parse()

	mu.Lock() // the early return that forgot to Unlock
	go func() {
		leaked := 0
		for range time.Tick(*every) {
			for i := 0; i < *rate && leaked < *max; i++ {
				batch(3)
				leaked++
			}
			for i := 0; i < *lockers && leaked < *max; i++ {
				go bump()
				leaked++
			}
		}
	}()
	debugserve.Run(*addr)
}
