package schedule

import (
	"bytes"
	"time"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
)

// RangeTx calls fn for each tracked item whose key starts with prefix and
// sorts after after (from the first when after is empty), in key order,
// with its due time as GetTx reports it (zero when not scheduled). It lets
// the service walk one tenant's items, to re-evaluate them under new rules
// or to preview. An error from fn stops the walk and is returned as it is.
// payload is a copy, fn's to keep; fn must not write to the scheduler's
// buckets.
func (s *Scheduler) RangeTx(tx *bbolt.Tx, prefix, after []byte, fn func(key []byte, due time.Time, payload []byte) error) error {
	c := store.BucketTx(tx, BucketItems).Cursor()
	k, _ := c.Seek(prefix)
	if len(after) > 0 {
		k, _ = c.Seek(after)
		if k != nil && bytes.Equal(k, after) {
			k, _ = c.Next()
		}
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		key := bytes.Clone(k)
		due, payload, _, err := s.GetTx(tx, key)
		if err != nil {
			return err
		}
		if err := fn(key, due, payload); err != nil {
			return err
		}
	}
	return nil
}
