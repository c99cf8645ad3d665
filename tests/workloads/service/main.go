// service is an HTTP service as the observer-effect benchmark needs one: a small JSON
// handler at /work (a SHA-256 of the request's query, timed in a client_golang
// histogram), -park goroutines parked on channel receives in a few distinct stacks (as a
// server's idle connections, workers and timers are), and every debug source on the
// same address: net/http/pprof, expvar and a client_golang /metrics. It prints
// "listening on ADDR" once serving.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"net/http"
	"time"

	"goroscope.test/workloads/internal/debugserve"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /work and the debug endpoints")
	park := flag.Int("park", 10000, "goroutines parked on channel receives")
	flag.Parse()

	// Four kinds of parked goroutine, so a stack summary has more than one signature.
	parked := [4]chan struct{}{make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})}
	for i := 0; i < *park; i++ {
		switch i % 4 {
		case 0:
			go idleConnection(parked[0])
		case 1:
			go waitForJob(parked[1])
		case 2:
			go waitForTimer(parked[2])
		default:
			go waitForShutdown(parked[3])
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "Time to answer a request, by route.",
		Buckets: prometheus.DefBuckets,
	}, []string{"route"})
	reg.MustRegister(latency)
	work := latency.WithLabelValues("/work")

	http.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sum := sha256.Sum256([]byte(r.URL.RawQuery))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"sum\":%q}\n", hex.EncodeToString(sum[:]))
		work.Observe(time.Since(start).Seconds())
	})
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))

	debugserve.Run(*addr)
}

func idleConnection(c chan struct{})  { <-c }
func waitForJob(c chan struct{})      { <-c }
func waitForTimer(c chan struct{})    { <-c }
func waitForShutdown(c chan struct{}) { <-c }
