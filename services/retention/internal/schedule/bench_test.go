package schedule_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/retention/internal/schedule"
)

// Run with, for example:
//
//	go test -run '^$' -bench . -benchtime 20x ./internal/schedule/
//
// Building the million tracked items takes a while, once per benchmark.

// benchKey is the key of tracked item i, shaped like the service's
// tenant/subject/category keys.
func benchKey(i int) []byte {
	return store.Key(fmt.Sprintf("tenant-%02d", i%50), fmt.Sprintf("subject-%08d", i), "usage")
}

// benchPayload stands for what the service stores with an item: the rule
// and action to apply.
var benchPayload = []byte("rule-0001\x00erase\x00")

// dueItem is an item a benchmark expects to be due.
type dueItem struct {
	key []byte
	at  time.Time
}

// buildTracked creates, at path, a file tracking n items of which every
// (n/due)th is due at t0 and the others scheduled over the five years after
// it, all due times in random order, as retention deadlines are. It returns
// the due items.
func buildTracked(b *testing.B, path string, n, due int) []dueItem {
	b.Helper()
	const perTx = 50_000
	start := time.Now()
	db, err := store.Open(store.Options{Path: path, Schema: schema})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s := schedule.New(db)
	rng := rand.New(rand.NewPCG(1, 2))
	every := n + 1
	if due > 0 {
		every = n / due
	}
	var dues []dueItem
	for lo := 0; lo < n; lo += perTx {
		err := db.Update(func(tx *bbolt.Tx) error {
			for i := lo; i < min(lo+perTx, n); i++ {
				at := t0.Add(time.Duration(1 + rng.Int64N(int64(5*365*24*time.Hour))))
				if i%every == 0 {
					at = t0.Add(-time.Duration(rng.Int64N(int64(365 * 24 * time.Hour))))
					dues = append(dues, dueItem{benchKey(i), at})
				}
				if err := s.SetTx(tx, benchKey(i), at, benchPayload); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("built %d tracked items, %d due, in %s", n, len(dues), time.Since(start).Round(time.Millisecond))
	return dues
}

// BenchmarkSweep times one Sweep of 10,000 due items among 10,000 and among
// 1,000,000 tracked ones, with a fire that does nothing: the target
// is that the second takes at most twice as long as the first.
func BenchmarkSweep(b *testing.B) {
	const due = 10_000
	dir := b.TempDir() // the parent's, so the built files outlive each run
	for _, bc := range []struct {
		name    string
		tracked int
	}{
		{"10k-due-of-10k", 10_000},
		{"10k-due-of-1M", 1_000_000},
	} {
		path := filepath.Join(dir, bc.name+".db")
		var dues []dueItem
		b.Run(bc.name, func(b *testing.B) {
			if dues == nil {
				dues = buildTracked(b, path, bc.tracked, due)
			}
			db, err := store.Open(store.Options{Path: path, Schema: schema})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			s := schedule.New(db)
			noop := func(*bbolt.Tx, []byte, time.Time, []byte) error { return nil }
			b.ResetTimer()
			for range b.N {
				fired, err := s.Sweep(t0, schedule.DefaultSweepLimit, noop)
				if err != nil || fired != due {
					b.Fatalf("Sweep fired %d, err %v; want %d", fired, err, due)
				}
				// Schedule the fired items again for the next round.
				b.StopTimer()
				err = db.Update(func(tx *bbolt.Tx) error {
					for _, d := range dues {
						if err := s.SetTx(tx, d.key, d.at, benchPayload); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/sweep")
		})
	}
}

// BenchmarkActivitySignals measures durable activity signals with
// 1,000,000 items tracked: 50 concurrent reporters each move a random item's
// due date, each call acknowledged only after its group commit's fsync.
// "single" moves one item per call, as the single signal RPC does; "batch"
// moves 100 items per call in one transaction, as the batch RPC does.
func BenchmarkActivitySignals(b *testing.B) {
	const (
		tracked   = 1_000_000
		reporters = 50
	)
	path := filepath.Join(b.TempDir(), "signals.db")
	buildTracked(b, path, tracked, 0)
	db, err := store.Open(store.Options{Path: path, Schema: schema})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s := schedule.New(db)

	// Activity at T moves the inactivity purge to T plus the rule's
	// period, so new due times arrive in time order, after the rest.
	var clock atomic.Int64
	nextDue := func() time.Time { return t0.Add(6 * 365 * 24 * time.Hour).Add(time.Duration(clock.Add(1))) }

	for _, bc := range []struct {
		name    string
		perCall int
		unit    string
	}{
		{"single", 1, "signals/s"},
		{"batch-100", 100, "items/s"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for r := range reporters {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(r), 7))
					keys := make([][]byte, bc.perCall)
					dues := make([]time.Time, bc.perCall)
					for next.Add(1) <= int64(b.N) {
						for i := range keys {
							keys[i], dues[i] = benchKey(rng.IntN(tracked)), nextDue()
						}
						// Idempotent, as Batch requires: a re-run sets the
						// same due times again.
						err := db.Batch(func(tx *bbolt.Tx) error {
							for i, k := range keys {
								if err := s.SetTx(tx, k, dues[i], benchPayload); err != nil {
									return err
								}
							}
							return nil
						})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*bc.perCall)/b.Elapsed().Seconds(), bc.unit)
		})
	}
}
