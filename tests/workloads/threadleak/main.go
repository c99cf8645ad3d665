// threadleak leaks OS threads: every -every it starts -rate goroutines that call
// runtime.LockOSThread, never unlock, and block in a raw read(2) on a pipe nobody
// writes to. Each one pins a thread in the kernel, so the OS thread count grows far
// past GOMAXPROCS while the goroutines sit in "syscall". Growth stops at -max leaked
// threads. It serves net/http/pprof and expvar on -addr and prints "listening on ADDR"
// once serving.
package main

import (
	"flag"
	"log"
	"runtime"
	"syscall"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

// block pins its thread and waits on fd for data that never comes.
func block(fd int) {
	runtime.LockOSThread() // no UnlockOSThread
	buf := make([]byte, 1)
	for {
		if _, err := syscall.Read(fd, buf); err != nil && err != syscall.EINTR {
			log.Printf("read: %v", err)
			select {} // keep the thread locked anyway
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	rate := flag.Int("rate", 5, "threads leaked per interval")
	every := flag.Duration("every", time.Second, "interval")
	max := flag.Int("max", 500, "stop leaking after this many threads")
	flag.Parse()

	// A blocking pipe (not in the netpoller); the write end stays open and unused,
	// so reads neither return data nor EOF.
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		log.Fatalf("pipe: %v", err)
	}
	go func() {
		leaked := 0
		for range time.Tick(*every) {
			for i := 0; i < *rate && leaked < *max; i++ {
				go block(p[0])
				leaked++
			}
		}
	}()
	debugserve.Run(*addr)
}
