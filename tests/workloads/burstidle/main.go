// burstidle retains memory without leaking it: every -every it allocates -burst MiB in
// 1 MiB buffers, holds them for -hold, then drops them all and idles. After each burst
// HeapInuse falls back to near nothing while the runtime keeps the freed spans
// (HeapIdle-HeapReleased large), so RSS stays well above HeapInuse: retention, not a
// leak. With -free it calls debug.FreeOSMemory after each burst, the cure, for
// comparison. By default (-lazyfree) the program re-executes itself, same pid, with
// GODEBUG=madvdontneed=0, so the runtime returns freed memory with MADV_FREE: the
// scavenger counts it as released at once (HeapReleased rises) but the kernel leaves
// it in RSS as LazyFree until memory runs short, and RSS stays at the burst's peak.
// With -lazyfree=false (MADV_DONTNEED, the Linux default since Go 1.16) the background
// scavenger gives the memory back within seconds and RSS falls with HeapInuse.
// After dropping a burst it keeps serving small requests (garbage in 64 KiB
// buffers) until the next GC cycle has run, so the burst is collected by an ordinary
// GC, not a forced one. It serves net/http/pprof and expvar on -addr and prints
// "listening on ADDR" once serving.
package main

import (
	"flag"
	"log"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"syscall"
	"time"

	"goroscope.test/workloads/internal/debugserve"
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

// settle allocates short-lived 64 KiB buffers until a GC cycle completes (or limit
// bytes have been allocated), as the requests after a batch job would.
func settle(limit int) {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	start := s[0].Value.Uint64()
	var sink []byte
	for done := 0; done < limit; done += 64 << 10 {
		sink = make([]byte, 64<<10)
		sink[0] = 1
		if done%(4<<20) == 0 {
			metrics.Read(s)
			if s[0].Value.Uint64() > start {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	size := flag.Int("burst", 256, "MiB allocated per burst")
	every := flag.Duration("every", 30*time.Second, "time from one burst to the next")
	hold := flag.Duration("hold", 2*time.Second, "how long a burst's memory stays live")
	free := flag.Bool("free", false, "call debug.FreeOSMemory after each burst")
	lazy := flag.Bool("lazyfree", true, "re-exec with GODEBUG=madvdontneed=0 (MADV_FREE)")
	flag.Parse()

	if *lazy && !strings.Contains(os.Getenv("GODEBUG"), "madvdontneed=") {
		env := append(os.Environ(), "GODEBUG=madvdontneed=0")
		if g := os.Getenv("GODEBUG"); g != "" {
			env = append(os.Environ(), "GODEBUG="+g+",madvdontneed=0")
		}
		err := syscall.Exec("/proc/self/exe", os.Args, env)
		log.Printf("re-exec with madvdontneed=0: %v; going on without it", err)
	}

	go func() {
		for {
			burst(*size, *hold)
			settle(4 * *size << 20)
			if *free {
				debug.FreeOSMemory()
			}
			time.Sleep(*every)
		}
	}()
	debugserve.Run(*addr)
}
