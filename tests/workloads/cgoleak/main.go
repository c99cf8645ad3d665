// cgoleak grows memory outside the Go heap: every -every it allocates -rate MiB that
// the Go runtime does not manage and never frees, touching every page so RSS grows
// while HeapSys, StackSys and the other runtime classes stay flat. Built with cgo, the
// memory comes from C.malloc (grow_cgo.go); without cgo, from anonymous syscall.Mmap
// mappings that are never unmapped (grow_nocgo.go). Growth stops at -max MiB. It serves
// net/http/pprof and expvar on -addr (the total is published as expvar
// "offheap_bytes" and the source as "offheap_source") and prints "listening on ADDR"
// once serving.
package main

import (
	"expvar"
	"flag"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

var offheap = expvar.NewInt("offheap_bytes")

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	rate := flag.Int("rate", 4, "MiB allocated off the Go heap per interval")
	every := flag.Duration("every", time.Second, "interval")
	max := flag.Int("max", 500, "stop growing at this many MiB")
	flag.Parse()

	expvar.NewString("offheap_source").Set(source)
	go func() {
		for range time.Tick(*every) {
			for i := 0; i < *rate && offheap.Value() < int64(*max)<<20; i++ {
				grow(1 << 20)
				offheap.Add(1 << 20)
			}
		}
	}()
	debugserve.Run(*addr)
}
