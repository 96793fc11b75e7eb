package store

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.etcd.io/bbolt"
)

// Backup writes a consistent copy of the database to path while the
// service keeps running: it copies the snapshot of one read transaction
// (bbolt's Tx.WriteTo), so writers are not blocked and the copy is the
// database as of one commit. The copy is written next to path, synced and
// renamed over it, so path always holds a whole backup, the previous one
// until the new one is complete. It returns the backup's size.
//
// Copying the file with cp while the service writes can tear it between
// pages of different commits; the process that holds the file is the only
// one that can copy it consistently, since bbolt locks the file against
// other openers.
func (db *DB) Backup(path string) (int64, error) {
	var n int64
	err := WriteFileAtomic(path, func(w io.Writer) error {
		return db.bolt.View(func(tx *bbolt.Tx) (err error) {
			n, err = tx.WriteTo(w)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	return n, nil
}

// WriteFileAtomic writes a file through write so that path holds either
// its previous content or the whole new one, even across a crash: write
// fills a temporary file beside path, which is synced, renamed over path,
// and the rename made durable by syncing the folder. When write fails,
// path is left as it was.
func WriteFileAtomic(path string, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // after a rename, a no-op
	err = write(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
