// steady is a healthy service: a fixed pool of workers, steady allocation churn, and
// net/http/pprof plus expvar on -addr. It prints "listening on ADDR" once serving.
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

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	workers := flag.Int("workers", 8, "worker goroutines")
	flag.Parse()

	for i := 0; i < *workers; i++ {
		go work(i)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, nil))
}

// work allocates and drops short-lived buffers, so the heap churns but does not grow.
func work(id int) {
	var sink [][]byte
	for tick := range time.Tick(50 * time.Millisecond) {
		sink = append(sink, make([]byte, 16<<10))
		if len(sink) > 64 {
			sink = sink[:0]
		}
		_ = tick
		_ = id
	}
}
