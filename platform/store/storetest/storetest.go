// Package storetest opens throwaway store databases for tests.
package storetest

import (
	"path/filepath"
	"testing"

	"github.com/lethe-privacy/lethe/platform/store"
)

// Open opens a fresh database for schema in a temporary folder and closes it
// when the test ends.
func Open(t testing.TB, schema store.Schema) *store.DB {
	t.Helper()
	return OpenAt(t, filepath.Join(t.TempDir(), "store.db"), schema)
}

// OpenAt opens the database at path, closing it when the test ends. A test
// that closes a database itself and opens the same path again exercises a
// restart.
func OpenAt(t testing.TB, path string, schema store.Schema) *store.DB {
	t.Helper()
	db, err := store.Open(store.Options{Path: path, Schema: schema})
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("storetest: close %s: %v", path, err)
		}
	})
	return db
}
