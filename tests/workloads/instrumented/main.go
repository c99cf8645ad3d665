// instrumented is a service instrumented the usual way, with client_golang: the Go
// collector (runtime/metrics names included), the process collector, and metrics of its
// own with labels (a histogram, a summary, a counter whose label value needs escaping).
// It serves /metrics only (no pprof, no expvar) on -addr, in OpenMetrics when asked,
// and prints "listening on ADDR" once serving.
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address for /metrics")
	flag.Parse()

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsAll)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "app_request_duration_seconds",
		Help:    "Time to answer a request, by route and status code.",
		Buckets: []float64{0.005, 0.05, 0.5, 5},
	}, []string{"route", "code"})
	size := prometheus.NewSummaryVec(prometheus.SummaryOpts{
		Name:       "app_response_size_bytes",
		Help:       "Size of the answers, by route.",
		Objectives: map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.99: 0.001},
	}, []string{"route"})
	odd := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "app_odd_labels_total",
		Help: "A counter whose labels need escaping, and one that collides with a target label.",
	}, []string{"path", "service"})
	reg.MustRegister(latency, size, odd)
	odd.WithLabelValues("C:\\dir \"quoted\"\nnext", "inner").Add(3)

	go func() {
		routes := []string{"/api", "/health"}
		for range time.Tick(20 * time.Millisecond) {
			route := routes[rand.IntN(len(routes))]
			latency.WithLabelValues(route, "200").Observe(rand.Float64() / 10)
			size.WithLabelValues(route).Observe(float64(rand.IntN(4096)))
		}
	}()

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, mux))
}
