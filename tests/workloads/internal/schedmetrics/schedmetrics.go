// Package schedmetrics serves the Go scheduler's figures from runtime/metrics at
// /metrics in the Prometheus text format, without a client library: the scheduling
// latency histogram (merged down to about 20 exponential buckets), GOMAXPROCS, the
// runnable goroutines (when the runtime keeps that count, Go 1.26 on) and the
// goroutine count.
package schedmetrics

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"runtime/metrics"
	"strconv"
)

const (
	latencies  = "/sched/latencies:seconds"
	gomaxprocs = "/sched/gomaxprocs:threads"
	runnable   = "/sched/goroutines/runnable:goroutines"
	goroutines = "/sched/goroutines:goroutines"
)

// Bounds are the `le` bounds of the served histogram: 2µs doubling up to about 8.4s
// (23 buckets), plus +Inf. The runtime's own histogram has hundreds of buckets; a
// goroutine queued behind hundreds of others waits seconds.
var Bounds = func() []float64 {
	b := make([]float64, 23)
	for i := range b {
		b[i] = 2e-6 * math.Pow(2, float64(i))
	}
	return b
}()

// Handler answers every request with the current figures.
func Handler() http.Handler {
	supported := map[string]bool{}
	for _, d := range metrics.All() {
		supported[d.Name] = true
	}
	var names []string
	for _, n := range []string{latencies, gomaxprocs, runnable, goroutines} {
		if supported[n] {
			names = append(names, n)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		samples := make([]metrics.Sample, len(names))
		for i, n := range names {
			samples[i].Name = n
		}
		metrics.Read(samples)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		out := bufio.NewWriter(w)
		defer out.Flush()
		for _, s := range samples {
			switch s.Name {
			case latencies:
				if s.Value.Kind() == metrics.KindFloat64Histogram {
					writeHistogram(out, "go_sched_latencies_seconds",
						"Time goroutines spent runnable before running (from "+latencies+").",
						s.Value.Float64Histogram())
				}
			case gomaxprocs:
				writeGauge(out, "go_sched_gomaxprocs_threads", "GOMAXPROCS (from "+gomaxprocs+").", s.Value)
			case runnable:
				writeGauge(out, "go_sched_goroutines_runnable_goroutines",
					"Goroutines ready to run, waiting for a P (from "+runnable+").", s.Value)
			case goroutines:
				writeGauge(out, "go_goroutines", "Goroutines that exist now (from "+goroutines+").", s.Value)
			}
		}
	})
}

func writeGauge(out *bufio.Writer, name, help string, v metrics.Value) {
	var f float64
	switch v.Kind() {
	case metrics.KindUint64:
		f = float64(v.Uint64())
	case metrics.KindFloat64:
		f = v.Float64()
	default:
		return
	}
	fmt.Fprintf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", name, help, name, name, format(f))
}

// Merged is a histogram in cumulative Prometheus form.
type Merged struct {
	// Cumulative counts per bound of Bounds, then the +Inf count (the total).
	Cumulative []uint64
	// The sum of the observations, each taken at its runtime bucket's midpoint (the
	// runtime keeps no sum).
	Sum float64
}

// Merge folds the runtime's buckets into Bounds. A runtime bucket [lo, hi) counts in
// the first bound at or above hi: a bucket that straddles a bound is counted above it,
// so a cumulative count never claims an observation is lower than it may have been.
func Merge(h *metrics.Float64Histogram, bounds []float64) Merged {
	m := Merged{Cumulative: make([]uint64, len(bounds)+1)}
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		lo, hi := h.Buckets[i], h.Buckets[i+1]
		// The outermost buckets may be open-ended.
		mid := (lo + hi) / 2
		switch {
		case math.IsInf(lo, -1):
			mid = math.Max(hi, 0)
		case math.IsInf(hi, 1):
			mid = lo
		}
		m.Sum += mid * float64(c)
		j := len(bounds)
		for k, b := range bounds {
			if hi <= b {
				j = k
				break
			}
		}
		m.Cumulative[j] += c
	}
	for j := 1; j < len(m.Cumulative); j++ {
		m.Cumulative[j] += m.Cumulative[j-1]
	}
	return m
}

func writeHistogram(out *bufio.Writer, name, help string, h *metrics.Float64Histogram) {
	m := Merge(h, Bounds)
	fmt.Fprintf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	for k, b := range Bounds {
		fmt.Fprintf(out, "%s_bucket{le=\"%s\"} %d\n", name, format(b), m.Cumulative[k])
	}
	total := m.Cumulative[len(Bounds)]
	fmt.Fprintf(out, "%s_bucket{le=\"+Inf\"} %d\n", name, total)
	fmt.Fprintf(out, "%s_sum %s\n%s_count %d\n", name, format(m.Sum), name, total)
}

func format(f float64) string {
	return strconv.FormatFloat(f, 'g', -1, 64)
}
