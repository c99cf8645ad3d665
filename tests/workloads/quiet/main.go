// quiet is a Go process with no HTTP endpoint at all: goroscope can only read /proc
// and its build info. It prints "ready" once running.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	fmt.Println("ready")
	os.Stdout.Sync()
	for {
		time.Sleep(time.Hour)
	}
}
