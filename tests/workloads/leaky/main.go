// leaky leaks goroutines the way a forgotten channel does: every interval it starts
// -rate watchers, each blocked forever on a receive from a channel nobody closes
// ("chan receive"). With -orphans N it also leaks N goroutines per interval the way a
// timed-out request does: a sender blocked forever on a channel nobody else holds any
// more, a leak the garbage collector can prove (Go 1.26's goroutineleak profile, when
// built with GOEXPERIMENT=goroutineleakprofile). It serves net/http/pprof and expvar
// on -addr and prints "listening on ADDR" once serving.
package main

import (
	_ "expvar"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"time"
)

// Pool hands out subscriptions; each subscription starts a watcher that waits for an
// update that never comes, because Unsubscribe was never written.
type Pool struct {
	updates []chan struct{}
}

func (p *Pool) Subscribe() {
	ch := make(chan struct{})
	p.updates = append(p.updates, ch)
	go p.watch(ch)
}

func (p *Pool) watch(ch chan struct{}) {
	<-ch
}

// fetch waits for an answer no longer than timeout; when it gives up, the goroutine
// computing the answer stays blocked on its send forever.
func fetch(timeout time.Duration) {
	ch := make(chan int)
	go func() {
		time.Sleep(10 * time.Millisecond)
		ch <- 42
	}()
	select {
	case <-ch:
	case <-time.After(timeout):
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	rate := flag.Int("rate", 5, "goroutines leaked per interval")
	every := flag.Duration("every", time.Second, "leak interval")
	orphans := flag.Int("orphans", 0, "goroutines leaked per interval on channels nobody holds")
	flag.Parse()

	pool := &Pool{}
	go func() {
		for range time.Tick(*every) {
			for i := 0; i < *rate; i++ {
				pool.Subscribe()
			}
			for i := 0; i < *orphans; i++ {
				fetch(time.Millisecond)
			}
		}
	}()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, nil))
}
