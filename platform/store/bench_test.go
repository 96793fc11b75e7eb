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
// concurrency of a busy service instance, under bbolt's default batch
// settings and under the store's.
func BenchmarkBatchPut(b *testing.B) {
	const writers = 50
	for _, bc := range []struct {
		name  string
		size  int
		delay time.Duration
	}{
		{"bbolt-defaults", 1000, 10 * time.Millisecond}, // bbolt keeps these internal
		{"store-defaults", 0, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			db, err := store.Open(store.Options{
				Path:          filepath.Join(b.TempDir(), "bench.db"),
				Schema:        schemaV1(),
				MaxBatchSize:  bc.size,
				MaxBatchDelay: bc.delay,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
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
						err := db.Batch(func(tx *bbolt.Tx) error {
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
