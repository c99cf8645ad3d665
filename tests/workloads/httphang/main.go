// httphang leaks goroutines the way an HTTP client without a timeout does: it starts a
// local server whose /slow handler never answers, and every -every it sends -rate
// requests to it with an http.Client that has no Timeout and a context that is never
// cancelled. Each request leaves a caller blocked in net/http's round trip ("select"),
// a connection reader in "IO wait" (persistConn.readLoop) plus a writer, and a server
// goroutine stuck in the handler. Requests stop at -max (each holds two sockets). It
// serves net/http/pprof and expvar on -addr and prints "listening on ADDR" once serving.
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"goroscope.test/workloads/internal/debugserve"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /debug/vars and /debug/pprof/")
	rate := flag.Int("rate", 10, "hanging requests per interval")
	every := flag.Duration("every", time.Second, "request interval")
	max := flag.Int("max", 1000, "stop after this many hanging requests")
	flag.Parse()

	// The slow backend: its handler waits for a signal nobody sends.
	never := make(chan struct{})
	backend := http.NewServeMux()
	backend.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		<-never
	})
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatalf("listen backend: %v", err)
	}
	go http.Serve(bl, backend)
	url := "http://" + bl.Addr().String() + "/slow"

	// No Timeout, no ResponseHeaderTimeout: a request waits as long as the server does.
	client := &http.Client{Transport: &http.Transport{}}
	go func() {
		sent := 0
		for range time.Tick(*every) {
			for i := 0; i < *rate && sent < *max; i++ {
				sent++
				go func() {
					resp, err := client.Get(url)
					if err != nil {
						log.Printf("get: %v", err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}()
			}
		}
	}()
	debugserve.Run(*addr)
}
