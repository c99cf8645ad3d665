// steady is a healthy service: a fixed pool of workers, steady allocation churn, and
// net/http/pprof plus expvar on -addr. With -spin it also keeps one goroutine busy on
// the CPU (in spin), for CPU profiles to see. It prints "listening on ADDR" once
// serving.
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
	busy := flag.Bool("spin", false, "keep one goroutine busy on the CPU")
	flag.Parse()

	if *busy {
		go spin()
	}
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

// spin computes without end, yielding now and then.
func spin() {
	x := uint64(1)
	for i := 0; ; i++ {
		x = x*6364136223846793005 + 1442695040888963407
		if i%(1<<20) == 0 {
			time.Sleep(time.Millisecond)
		}
		if x == 0 {
			fmt.Println(x)
		}
	}
}
