package tasks_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/tasks/taskstest"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// BenchmarkPipeline measures the whole pipeline with five subscribing
// systems and NATS as shipped (SyncAlways): b.N erasures, each its own
// cause, committed by 50 concurrent writers; a cause's latency runs from
// its commit to the commit of its fifth outcome in the tracker. Every
// subscriber records each outcome in its bbolt ledger before answering.
// Run with -benchtime=2000x.
func BenchmarkPipeline(b *testing.B) {
	const systems, writers = 5, 50
	var committed sync.Map // cause id → commit time
	latencies := make(chan time.Duration, b.N)
	f := startWith(b, taskstest.Options{SyncAlways: true, OnComplete: func(causeID string) {
		if at, ok := committed.Load(causeID); ok {
			latencies <- time.Since(at.(time.Time))
		}
	}})
	names := make([]string, systems)
	for i := range systems {
		names[i] = fmt.Sprint("system-", i)
		f.subscribe(b, names[i], map[contract.Kind]subscriber.Handler{
			contract.KindErasureRequested: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
				return subscriber.Erased(), nil
			},
		}, func(cfg *subscriber.Config) { cfg.Workers = 32 })
	}
	expect := taskstest.SDK(names...)

	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				cause := fmt.Sprint("req-", n)
				ev := taskstest.Erasure(cause)
				ev.SubjectId = fmt.Sprint("subject-", n) // each request is another person's
				committed.Store(cause, time.Now())
				if err := f.DB.Batch(func(tx *bolt.Tx) error {
					return f.Tracker.PublishTx(context.Background(), tx, ev, expect)
				}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	all := make([]time.Duration, 0, b.N)
	timeout := time.After(5 * time.Minute)
	for len(all) < b.N {
		select {
		case d := <-latencies:
			all = append(all, d)
		case <-timeout:
			b.Fatalf("%d of %d causes completed", len(all), b.N)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(all[len(all)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Milliseconds()), "p99-ms")
}
