// Package debugserve serves a workload's net/http/pprof and expvar endpoints and says
// where, the way every workload does.
package debugserve

import (
	_ "expvar" // /debug/vars
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // /debug/pprof/
	"os"
)

// Run listens on addr, prints "listening on ADDR" once serving, and serves the default
// mux (with whatever handlers the workload added) until serving fails.
func Run(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("listen %s: %v", addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, nil))
}
