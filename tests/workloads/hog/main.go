// hog takes memory and never gives it back: every -every it allocates -step MiB and
// writes to every page, so that the kernel must back it, until a limit stops it (in a
// memory cgroup, the OOM killer). It prints "ready" once started.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	step := flag.Int("step", 8, "MiB taken per interval")
	every := flag.Duration("every", 100*time.Millisecond, "interval")
	flag.Parse()
	fmt.Println("ready")
	os.Stdout.Sync()
	var kept [][]byte
	for range time.Tick(*every) {
		b := make([]byte, *step<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		kept = append(kept, b)
	}
}
