// late starts listening some time after it starts, as a service that loads its state
// first: it prints "ready" at once, serves net/http/pprof and expvar on -addr after
// -delay, and then prints "listening on ADDR".
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
	delay := flag.Duration("delay", 5*time.Second, "time before listening")
	flag.Parse()
	fmt.Println("ready")
	os.Stdout.Sync()
	time.Sleep(*delay)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, nil))
}
