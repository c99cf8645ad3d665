// loadgen drives an HTTP endpoint for -duration and prints one JSON line with the
// throughput and latency percentiles. Closed loop by default (-concurrency workers,
// each sending its next request when the last is answered); with -rate it sends at a
// fixed rate instead, and a request's latency counts from when it was due, so that a
// stalled server is not hidden by requests that were never sent (coordinated omission).
// Requests answered during -warmup are not counted.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	Seconds     float64 `json:"seconds"`
	Requests    int     `json:"requests"`
	Errors      int64   `json:"errors"`
	PerSecond   float64 `json:"per_second"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	P999Ms      float64 `json:"p999_ms"`
	MaxMs       float64 `json:"max_ms"`
}

func main() {
	url := flag.String("url", "", "the URL to request (GET)")
	duration := flag.Duration("duration", 60*time.Second, "time measured, after the warmup")
	warmup := flag.Duration("warmup", 5*time.Second, "time sent but not counted")
	concurrency := flag.Int("concurrency", 4, "connections, and requests in flight at most")
	rate := flag.Float64("rate", 0, "requests per second at a fixed rate (0: closed loop)")
	flag.Parse()
	if *url == "" {
		log.Fatal("-url is required")
	}

	transport := &http.Transport{MaxIdleConnsPerHost: *concurrency, MaxConnsPerHost: *concurrency}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	start := time.Now()
	measureFrom := start.Add(*warmup)
	end := measureFrom.Add(*duration)
	var errors atomic.Int64

	// get sends one request; returns its latency from `due` and whether it counts.
	get := func(due time.Time) (time.Duration, bool) {
		resp, err := client.Get(*url)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		done := time.Now()
		counted := !due.Before(measureFrom) && done.Before(end)
		if err != nil {
			if counted {
				errors.Add(1)
			}
			return 0, false
		}
		return done.Sub(due), counted
	}

	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	mode := "closed"
	if *rate > 0 {
		mode = "rate"
		// A dispatcher hands out due times on the schedule; a late request does not
		// delay the next one unless every connection is busy.
		period := time.Duration(float64(time.Second) / *rate)
		due := make(chan time.Time, *concurrency)
		go func() {
			for i := 0; ; i++ {
				t := start.Add(time.Duration(i) * period)
				if !t.Before(end) {
					close(due)
					return
				}
				time.Sleep(time.Until(t))
				due <- t
			}
		}()
		for w := 0; w < *concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for t := range due {
					if d, ok := get(t); ok {
						mine = append(mine, d)
					}
				}
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			}()
		}
	} else {
		for w := 0; w < *concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for time.Now().Before(end) {
					if d, ok := get(time.Now()); ok {
						mine = append(mine, d)
					}
				}
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()

	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		i := int(p * float64(len(all)))
		if i >= len(all) {
			i = len(all) - 1
		}
		return float64(all[i]) / 1e6
	}
	r := result{
		Mode:        mode,
		Concurrency: *concurrency,
		Rate:        *rate,
		Seconds:     duration.Seconds(),
		Requests:    len(all),
		Errors:      errors.Load(),
		PerSecond:   float64(len(all)) / duration.Seconds(),
		P50Ms:       pct(0.50),
		P99Ms:       pct(0.99),
		P999Ms:      pct(0.999),
		MaxMs:       pct(1),
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		log.Fatal(err)
	}
}
