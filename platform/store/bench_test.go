package store_test

import (
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
)

// BenchmarkBatchPut measures Batch throughput with 50 concurrent writers, the
// concurrency of a busy service instance: bbolt's own timer-based Batch with
// its defaults and tuned to the writers, against the store's group commit.
func BenchmarkBatchPut(b *testing.B) {
	const writers = 50
	for _, bc := range []struct {
		name  string
		size  int
		delay time.Duration
	}{
		{"bbolt-batch-defaults", 1000, 10 * time.Millisecond},
		{"bbolt-batch-64-2ms", 64, 2 * time.Millisecond},
		{"bbolt-batch-50-2ms", writers, 2 * time.Millisecond},
		{"store-group-commit", 0, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			db, err := store.Open(store.Options{Path: filepath.Join(b.TempDir(), "bench.db"), Schema: schemaV1()})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			batch := db.Batch
			if bc.size > 0 {
				db.Bolt().MaxBatchSize, db.Bolt().MaxBatchDelay = bc.size, bc.delay
				batch = db.Bolt().Batch
			}
			value := make([]byte, 128)
			var next atomic.Uint64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range writers {
				wg.Go(func() {
					for {
						n := next.Add(1)
						if n > uint64(b.N) {
							return
						}
						err := batch(func(tx *bbolt.Tx) error {
							return store.BucketTx(tx, bucketThings).Put(store.Uint64Key(n), value)
						})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
		})
	}
}
