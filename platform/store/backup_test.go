package store_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
)

// TestBackupWhileWriting: a backup taken while writers commit is one
// commit's consistent snapshot: every write acknowledged before it began
// is in it, bbolt's own consistency check passes, and it opens as the
// service's database with its schema. A second backup replaces the first.
func TestBackupWhileWriting(t *testing.T) {
	dir := t.TempDir()
	db := storetest.OpenAt(t, filepath.Join(dir, "registry.db"), schemaV1())
	for i := range 500 {
		put(t, db, bucketThings, fmt.Sprintf("before-%03d", i), "v")
	}

	// Writers keep committing during the backups.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				err := db.Batch(func(tx *bbolt.Tx) error {
					return store.BucketTx(tx, bucketThings).Put(fmt.Appendf(nil, "during-%d-%d", w, i), make([]byte, 512))
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	backup := filepath.Join(dir, "backup", "registry.db")
	var sizes []int64
	for range 2 {
		if err := os.MkdirAll(filepath.Dir(backup), 0o700); err != nil {
			t.Fatal(err)
		}
		n, err := db.Backup(backup)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, n)
	}
	stop.Store(true)
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	restored := storetest.OpenAt(t, backup, schemaV1())
	if err := restored.View(func(tx *bbolt.Tx) error {
		var first error
		for err := range tx.Check() { // drained: the check runs until its channel closes
			if first == nil {
				first = err
			}
		}
		return first
	}); err != nil {
		t.Fatalf("the backup is inconsistent: %v", err)
	}
	for i := range 500 {
		if got := get(t, restored, bucketThings, fmt.Sprintf("before-%03d", i)); got != "v" {
			t.Fatalf("before-%03d = %q in the backup", i, got)
		}
	}
	if matches, _ := filepath.Glob(backup + ".tmp-*"); len(matches) != 0 {
		t.Errorf("temporary files left: %v", matches)
	}
	if sizes[0] == 0 || sizes[1] == 0 {
		t.Errorf("backup sizes %v", sizes)
	}
}
