package consenttest

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// TestGenerateWritesWhatItCounts generates a small data set and reads it
// back as the service would: every record under its subject, one change
// per record, objection, restriction and purpose, and the tenant's
// revision at the last of them.
func TestGenerateWritesWhatItCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "consent.db")
	spec := Spec{Tenant: "retail", Country: "DE", Subjects: 3000, Now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Seed: 1}
	res, err := Generate(path, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records < 5*spec.Subjects || res.Objections+res.Restrictions == 0 {
		t.Fatalf("result %+v: want at least 5 records a subject and some limits", res)
	}
	db, err := store.Open(store.Options{Path: path, Schema: storage.Schema})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	counts := map[string]int{}
	if err := db.View(func(tx *bolt.Tx) error {
		for _, b := range []store.Bucket{storage.BucketRecords, storage.BucketObjections, storage.BucketRestrictions, storage.BucketChanges, storage.BucketPurposes} {
			if err := storage.Each(tx, b, nil, func(_, _ []byte) error { counts[string(b)]++; return nil }); err != nil {
				return err
			}
		}
		changes, err := storage.ChangesTx(tx, spec.Tenant, res.Revision-1, 10)
		if err != nil || len(changes) != 1 || changes[0].Revision != res.Revision {
			t.Errorf("last change: %v, %v; want revision %d", changes, err, res.Revision)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if counts[string(storage.BucketRecords)] != res.Records || counts[string(storage.BucketObjections)] != res.Objections ||
		counts[string(storage.BucketRestrictions)] != res.Restrictions || counts[string(storage.BucketPurposes)] != len(Purposes) {
		t.Errorf("stored %v, result %+v", counts, res)
	}
	if want := res.Records + res.Objections + res.Restrictions + len(Purposes); counts[string(storage.BucketChanges)] != want || uint64(want) != res.Revision {
		t.Errorf("%d changes, revision %d; want %d", counts[string(storage.BucketChanges)], res.Revision, want)
	}
}
