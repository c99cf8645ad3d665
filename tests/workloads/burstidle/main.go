// burstidle retains memory without leaking it: every -every it allocates -burst MiB in
// 1 MiB buffers, holds them for -hold, then drops them all and idles. After each burst
// HeapInuse falls back to near nothing while the runtime keeps the freed spans
// (HeapIdle-HeapReleased large), so RSS stays well above HeapInuse: retention, not a
// leak. With -free it calls debug.FreeOSMemory after each burst, the cure, for
// comparison. It serves net/http/pprof and expvar on -addr and prints
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
	"runtime/debug"
	"time"
)

// burst allocates mib MiB, touches every page, and keeps it all for hold.
func burst(mib int, hold time.Duration) {
	bufs := make([][]byte, mib)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<20)
		for j := 0; j < len(bufs[i]); j += 4096 {
			bufs[i][j] = 1
		}
	}
	time.Sleep(hold)
	for i := range bufs {
		bufs[i] = nil
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	size := flag.Int("burst", 256, "MiB allocated per burst")
	every := flag.Duration("every", 30*time.Second, "time from one burst to the next")
	hold := flag.Duration("hold", 2*time.Second, "how long a burst's memory stays live")
	free := flag.Bool("free", false, "call debug.FreeOSMemory after each burst")
	flag.Parse()

	go func() {
		for {
			burst(*size, *hold)
			if *free {
				debug.FreeOSMemory()
			}
			time.Sleep(*every)
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
