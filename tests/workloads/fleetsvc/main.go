// fleetsvc is a service as a fleet runs it: it handles simulated requests, each calling
// a backend under a deadline. The backend answers on a channel of its own; when it is
// slower than the deadline, the handler gives up and returns. With a buffered result
// channel (resultBuffer = 1) the late answer lands in the buffer and the backend's
// goroutine ends; with an unbuffered one (resultBuffer = 0) nobody ever receives it and
// that goroutine stays blocked in "chan send" forever: one leaked goroutine per timed-out
// request (an abandoned channel).
//
// Every -every it handles -rate requests, spread over the interval; the backend takes
// -latency and the handler waits -timeout, so by default every request times out.
// Requests pause while the process has -max goroutines. It serves net/http/pprof and
// expvar on -addr and prints "listening on ADDR" once serving; expvar counts the
// requests and the timeouts.
package main

import (
	"context"
	"expvar"
	"flag"
	"runtime"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

// resultBuffer is the capacity of the channel a backend call answers on.
const resultBuffer = 1

var (
	requests = expvar.NewInt("requests_total")
	timeouts = expvar.NewInt("request_timeouts_total")
)

type result struct {
	items int
	err   error
}

// callBackend starts a backend call that answers after latency.
func callBackend(latency time.Duration) <-chan result {
	answer := make(chan result, resultBuffer)
	go func() {
		time.Sleep(latency)
		answer <- result{items: 3}
	}()
	return answer
}

// handle serves one request: the backend's answer, or the deadline's error.
func handle(timeout, latency time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	select {
	case r := <-callBackend(latency):
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	rate := flag.Int("rate", 20, "requests per interval")
	every := flag.Duration("every", time.Second, "request interval")
	latency := flag.Duration("latency", 30*time.Millisecond, "time the backend takes to answer")
	timeout := flag.Duration("timeout", 10*time.Millisecond, "time a request waits for the backend")
	limit := flag.Int("max", 20000, "goroutines at which requests pause")
	flag.Parse()

	go func() {
		for range time.Tick(*every / time.Duration(max(*rate, 1))) {
			if runtime.NumGoroutine() >= *limit {
				continue
			}
			go func() {
				requests.Add(1)
				if handle(*timeout, *latency) != nil {
					timeouts.Add(1)
				}
			}()
		}
	}()
	debugserve.Run(*addr)
}
