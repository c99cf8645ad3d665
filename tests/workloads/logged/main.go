// logged serves net/http/pprof and expvar on -addr and prints one line per request,
// "request PATH?QUERY ua=USER-AGENT", so that a test can tell what a collector (and
// which: collectors name their host in the User-Agent) asked for. It prints
// "listening on ADDR" once serving.
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
	"sync"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	goroutines := flag.Int("goroutines", 100, "idle goroutines to keep")
	flag.Parse()
	block := make(chan struct{})
	for i := 0; i < *goroutines; i++ {
		go func() { <-block }()
	}
	var mu sync.Mutex
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fmt.Printf("request %s ua=%s\n", r.URL.RequestURI(), r.UserAgent())
		os.Stdout.Sync()
		mu.Unlock()
		http.DefaultServeMux.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, logged))
}
