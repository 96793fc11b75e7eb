package dsar

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestDestroyOnCommit: the keys a write transaction destroys are
// overwritten with zeros in dsar.keys once it commits, all of them, and
// not before; a transaction that rolls back destroys none, and its list
// is not carried into the next transaction that commits.
func TestDestroyOnCommit(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "dsar.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	path := filepath.Join(dir, "dsar.keys")
	k, err := openKeyring(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	var refs []slotRef
	for range 4 {
		ref, _, err := k.New()
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	// onDisk reports whether ref's slot in the file still holds its tag.
	onDisk := func(ref slotRef) bool {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		slot := data[ref.Slot*slotSize : (ref.Slot+1)*slotSize]
		return slot[0] == 1 && bytes.Equal(slot[1:1+tagSize], ref.Tag)
	}
	rollBack := errors.New("roll back")
	if err := db.Update(func(tx *bolt.Tx) error {
		k.DestroyOnCommit(tx, refs[0])
		return rollBack
	}); !errors.Is(err, rollBack) {
		t.Fatalf("update = %v", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		k.DestroyOnCommit(tx, refs[1])
		k.DestroyOnCommit(tx, refs[2])
		if !onDisk(refs[1]) || !onDisk(refs[2]) {
			t.Error("a key was destroyed before its transaction committed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false, false, true} {
		if _, ok := k.Key(refs[i]); ok != want {
			t.Errorf("key %d present = %v, want %v", i, ok, want)
		}
		if got := onDisk(refs[i]); got != want {
			t.Errorf("key %d in dsar.keys = %v, want %v", i, got, want)
		}
	}
	// A commit without keys to destroy leaves the rolled-back one alone.
	if err := db.Update(func(tx *bolt.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !onDisk(refs[0]) || k.Len() != 2 {
		t.Errorf("the key of a transaction that rolled back was destroyed; %d keys left", k.Len())
	}
}
