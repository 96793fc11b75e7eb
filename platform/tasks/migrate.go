package tasks

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
)

// MigrateKeysTx rewrites the keys of the tasks in a file from the
// tracker's first encoding, its own (ids joined by NUL, none after the
// last), to the kit's (store.Key: every id followed by NUL), which the
// tracker reads since. Values are unchanged: open tasks stay open, with
// their re-send times, and their answers close them as before.
//
// The tasks live in the kit's buckets of their owner's file, so each
// owner lists it once among its schema's migrations,
//
//	Migrations: []store.Migration{{To: 2, Up: tasks.MigrateKeysTx}}
//
// and the version it bumps makes code from before the change refuse the
// migrated file (store.ErrSchemaTooNew) rather than misread its tasks.
// A key of neither shape fails the migration, and with it the open, leaving
// the file as it was.
//
// It runs in the open's one transaction, which holds every rewritten page
// in memory until it commits: 100,000 tasks (with their 300,000 index
// entries) took 2.1 s and a heap peak of 340 MB on the development machine
// (BenchmarkMigrateKeys), and the cost grows with the number of tasks,
// since a final task is kept.
func MigrateKeysTx(tx *bolt.Tx) error {
	steps := []struct {
		bucket store.Bucket
		// prefix is the length of a key's fixed-width head (the re-send
		// index's time), ids the number of ids after it.
		prefix, ids int
	}{
		{store.BucketTasks, 0, 2},
		{store.BucketTasksByCause, 0, 5},
		{store.BucketTasksBySystem, 0, 3},
		{store.BucketTasksDue, 8, 2},
	}
	for _, st := range steps {
		if err := rekeyTx(tx, st.bucket, func(k []byte) ([]byte, error) {
			if len(k) < st.prefix {
				return nil, fmt.Errorf("key %q is too short", k)
			}
			ids := bytes.Split(k[st.prefix:], []byte{0})
			if len(ids) != st.ids {
				return nil, fmt.Errorf("key %q has %d ids, want %d", k, len(ids), st.ids)
			}
			parts := make([]string, len(ids))
			for i, id := range ids {
				parts[i] = string(id)
			}
			return append(bytes.Clone(k[:st.prefix]), store.Key(parts...)...), nil
		}); err != nil {
			return fmt.Errorf("tasks: migrate %s: %w", st.bucket, err)
		}
	}
	return nil
}

// rekeyTx replaces every key of bucket b by newKey(key). bbolt allows no
// change to a bucket while a cursor walks it, so the pairs are read first,
// then the bucket is emptied and written again.
func rekeyTx(tx *bolt.Tx, b store.Bucket, newKey func([]byte) ([]byte, error)) error {
	bk := tx.Bucket(b)
	if bk == nil {
		return nil
	}
	type pair struct{ k, v []byte }
	var pairs []pair
	if err := bk.ForEach(func(k, v []byte) error {
		nk, err := newKey(k)
		if err != nil {
			return err
		}
		// The value is copied: bbolt's slice is the page, which the
		// bucket's deletion below frees.
		pairs = append(pairs, pair{nk, bytes.Clone(v)})
		return nil
	}); err != nil {
		return err
	}
	if len(pairs) == 0 {
		return nil
	}
	if err := tx.DeleteBucket(b); err != nil {
		return err
	}
	bk, err := tx.CreateBucket(b)
	if err != nil {
		return err
	}
	// The rewrite keeps the keys' order (NUL sorts before every other
	// byte), so the bucket is filled in key order and its pages whole.
	bk.FillPercent = 1.0
	for _, p := range pairs {
		if err := bk.Put(p.k, p.v); err != nil {
			return err
		}
	}
	return nil
}

// BinaryTasksTx is the migration to the tracker's binary task records
// (codec.go). It changes nothing in the file: tasks written before are
// read as they are, and rewritten in binary when they next change. What
// it is for is the version it bumps, which makes code from before, which
// reads tasks only as JSON, refuse the file (store.ErrSchemaTooNew)
// rather than fail on every task written since.
// Owners list it after MigrateKeysTx:
//
//	Migrations: []store.Migration{{To: 2, Up: tasks.MigrateKeysTx}, {To: 3, Up: tasks.BinaryTasksTx}}
func BinaryTasksTx(*bolt.Tx) error { return nil }
