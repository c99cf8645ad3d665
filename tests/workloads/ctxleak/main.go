// ctxleak leaks goroutines the way middleware that drops the request context does:
// every -every it handles -rate simulated requests; each starts a background watcher
// with context.Background() instead of the request's context, so the watcher's select
// on ctx.Done() never fires and it waits forever ("select"). Growth stops at -max
// leaked goroutines. It serves net/http/pprof and expvar on -addr and prints
// "listening on ADDR" once serving.
package main

import (
	"context"
	"flag"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

// watch waits for the request to end or for an update; neither ever happens.
func watch(ctx context.Context, updates <-chan string) {
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-updates:
			_ = u
		}
	}
}

// handle does the request's work under reqCtx, but starts its watcher under
// context.Background(), so cancelling reqCtx does not reach the watcher.
func handle(reqCtx context.Context) {
	go watch(context.Background(), make(chan string))
	<-reqCtx.Done()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	rate := flag.Int("rate", 100, "requests per interval (each leaks one goroutine)")
	every := flag.Duration("every", time.Second, "request interval")
	max := flag.Int("max", 50000, "stop leaking after this many goroutines")
	flag.Parse()

	go func() {
		leaked := 0
		for range time.Tick(*every) {
			for i := 0; i < *rate && leaked < *max; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				handle(ctx)
				cancel()
				leaked++
			}
		}
	}()
	debugserve.Run(*addr)
}
