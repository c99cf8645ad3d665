// chanleak leaks goroutines on abandoned channels: every -every it handles -rate
// simulated requests, each starting a producer that sends its result on an unbuffered
// channel and a consumer that waits on another channel; the handler gives up on both,
// so the producer stays blocked in "chan send" and the consumer in "chan receive"
// forever. Growth stops at -max leaked goroutines. It serves net/http/pprof and expvar
// on -addr and prints "listening on ADDR" once serving.
package main

import (
	"flag"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

// handle starts a producer and a consumer and returns without using either channel.
func handle() {
	results := make(chan int)
	go func() {
		results <- 42 // nobody receives: blocked in chan send
	}()
	jobs := make(chan int)
	go func() {
		for j := range jobs { // nobody sends or closes: blocked in chan receive
			_ = j
		}
	}()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	rate := flag.Int("rate", 50, "requests per interval (each leaks two goroutines)")
	every := flag.Duration("every", time.Second, "request interval")
	max := flag.Int("max", 50000, "stop leaking after this many goroutines")
	flag.Parse()

	go func() {
		leaked := 0
		for range time.Tick(*every) {
			for i := 0; i < *rate && leaked < *max; i++ {
				handle()
				leaked += 2
			}
		}
	}()
	debugserve.Run(*addr)
}
