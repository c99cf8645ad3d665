// execer is a Go program that replaces itself with another program after -after, as a
// launcher or a wrapper does: `execer -after 3s /bin/sleep 600`. Same pid, same start
// time, another executable. It prints "ready" at once.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"syscall"
	"time"
)

func main() {
	after := flag.Duration("after", 3*time.Second, "time before the exec")
	flag.Parse()
	if flag.NArg() == 0 {
		log.Fatal("usage: execer [-after D] PROGRAM [ARG...]")
	}
	fmt.Println("ready")
	os.Stdout.Sync()
	time.Sleep(*after)
	err := syscall.Exec(flag.Arg(0), flag.Args(), os.Environ())
	log.Fatalf("exec %s: %v", flag.Arg(0), err)
}
