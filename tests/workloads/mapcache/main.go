// mapcache leaks heap through a cache that never evicts: every -every it stores -rate
// entries of -size bytes under fresh keys in a global map, so HeapInuse and HeapAlloc
// rise steadily across GC cycles while the goroutine count stays flat. Growth stops
// once the cache holds -max MiB. It serves net/http/pprof and expvar on -addr (the
// cache's size is published as expvar "cache_entries" and "cache_bytes") and prints
// "listening on ADDR" once serving.
package main

import (
	"expvar"
	"flag"
	"fmt"
	"sync"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

var (
	mu    sync.Mutex
	cache = map[string][]byte{} // written on every lookup miss, never pruned

	entries = expvar.NewInt("cache_entries")
	bytes   = expvar.NewInt("cache_bytes")
)

// lookup returns the rendering of key, computing and caching it on a miss.
func lookup(key string, size int) []byte {
	mu.Lock()
	defer mu.Unlock()
	if v, ok := cache[key]; ok {
		return v
	}
	v := make([]byte, size)
	for i := range v {
		v[i] = byte(i) // touch it, as a real rendering would
	}
	cache[key] = v
	entries.Add(1)
	bytes.Add(int64(size))
	return v
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	rate := flag.Int("rate", 512, "new cache entries per interval")
	size := flag.Int("size", 4096, "bytes per entry")
	every := flag.Duration("every", time.Second, "interval")
	max := flag.Int("max", 500, "stop growing once the cache holds this many MiB")
	flag.Parse()

	go func() {
		n := 0
		for range time.Tick(*every) {
			for i := 0; i < *rate && bytes.Value() < int64(*max)<<20; i++ {
				lookup(fmt.Sprintf("user:%d", n), *size) // every key is new
				n++
			}
		}
	}()
	debugserve.Run(*addr)
}
