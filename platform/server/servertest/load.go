package servertest

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Load calls call from 50 goroutines, n calls in all (i from 0 to n-1),
// and returns the rate and the 99th percentile latency: the concurrency
// the benchmarks' figures are stated for. A failed call fails b and ends
// its goroutine.
func Load(b *testing.B, n int, call func(i int) error) (perSecond float64, p99 time.Duration) {
	const clients = 50
	latencies := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t := time.Now()
				if err := call(i); err != nil {
					b.Error(err)
					return
				}
				latencies[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	return float64(n) / elapsed.Seconds(), latencies[n*99/100]
}
