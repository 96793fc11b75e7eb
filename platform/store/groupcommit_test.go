package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
)

// TestBatchCommitsEveryWriterAndIsolatesFailures runs many concurrent Batch
// calls, some of which fail or panic: every succeeding call's write is
// committed, every failing call gets its own error, and nothing a failing
// call wrote survives.
func TestBatchCommitsEveryWriterAndIsolatesFailures(t *testing.T) {
	db := storetest.Open(t, schemaV1())
	errOdd := errors.New("odd writers fail")
	const writers = 200
	var wg sync.WaitGroup
	results := make([]error, writers)
	panics := make([]any, writers)
	for i := range writers {
		wg.Go(func() {
			defer func() { panics[i] = recover() }()
			results[i] = db.Batch(func(tx *bbolt.Tx) error {
				if err := store.BucketTx(tx, bucketThings).Put(store.Uint64Key(uint64(i)), []byte("v")); err != nil {
					return err
				}
				switch {
				case i%10 == 7:
					panic(fmt.Sprintf("writer %d panics", i))
				case i%2 == 1:
					return errOdd
				}
				return nil
			})
		})
	}
	wg.Wait()

	err := db.View(func(tx *bbolt.Tx) error {
		b := store.BucketTx(tx, bucketThings)
		for i := range writers {
			stored := b.Get(store.Uint64Key(uint64(i))) != nil
			switch {
			case i%10 == 7:
				if panics[i] == nil || stored {
					t.Errorf("writer %d: panic %v, stored %v; want its own panic and nothing stored", i, panics[i], stored)
				}
			case i%2 == 1:
				if !errors.Is(results[i], errOdd) || stored {
					t.Errorf("writer %d: %v, stored %v; want its own error and nothing stored", i, results[i], stored)
				}
			default:
				if results[i] != nil || !stored {
					t.Errorf("writer %d: %v, stored %v; want committed", i, results[i], stored)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCommitStatsCountTheGroups: concurrent writers share transactions,
// and the statistics say how many, for how many calls, with how many
// pages and how long.
func TestCommitStatsCountTheGroups(t *testing.T) {
	db := storetest.Open(t, schemaV1())
	if got := db.CommitStats(); got != (store.CommitStats{}) {
		t.Fatalf("CommitStats of a file no Batch wrote = %+v, want zero", got)
	}
	const writers = 64
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			if err := db.Batch(func(tx *bbolt.Tx) error {
				return store.BucketTx(tx, bucketThings).Put(store.Uint64Key(uint64(i)), []byte("v"))
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	st := db.CommitStats()
	if st.Calls != writers || st.Commits == 0 || st.Commits > writers {
		t.Errorf("Calls %d, Commits %d; want %d calls in 1 to %d commits", st.Calls, st.Commits, writers, writers)
	}
	if st.Pages < st.Commits {
		t.Errorf("Pages %d for %d commits; each writes at least its leaf", st.Pages, st.Commits)
	}
	if st.Commit <= 0 || st.Busy < st.Commit {
		t.Errorf("Busy %v, Commit %v; want 0 < Commit <= Busy", st.Busy, st.Commit)
	}
}
