// Package schedule is the retention service's durable scheduler: a
// time-ordered index, in the service's bbolt file, of the items it must purge
// and when.
//
// The scheduler is generic over the caller's items. An item is an opaque key
// (the service builds it with store.Key from tenant, subject and category)
// carrying an opaque payload; the scheduler knows only its due time. Two
// buckets hold the state:
//
//   - BucketItems maps key → format, due time, payload: every tracked item.
//   - BucketDue maps store.TimeKey(due) + key → nothing: the scheduled items
//     in due order, so that finding the due ones reads the head of the
//     index and nothing else.
//
// An item is scheduled exactly when BucketDue holds its entry. Firing an
// item deletes that entry and leaves the item's record as it was, so a
// sweep writes only to the contiguous head of the index: its cost follows
// the number of due items, not of tracked ones, and not even the scattered
// pages of the items bucket are rewritten. An item that has fired, or was
// set with a zero due time, stays tracked and reports a zero due time until
// SetTx schedules it again: the retention service keeps a subject's clock
// after a purge so that a later signal can re-arm it.
//
// Methods whose names end in Tx run in the caller's transaction, so that a
// signal and the due time it moves, or a purge directive and the firing that
// issued it, commit together or not at all. That is what lets a sweep
// survive a crash: every item fires in the transaction that removes it from
// the index, so after a restart an item has either fired and left the index,
// or neither, and is fired by the next sweep. Nothing fires twice and
// nothing is missed.
//
// The scheduler never reads the clock: Sweep is given the time, so that the
// service drives it from its injected clock.Clock and tests move time
// instead of sleeping.
package schedule

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
)

// The scheduler's buckets, which the service lists in its store.Schema.
var (
	// BucketItems maps an item's key → format(1) due(8) payload: every
	// tracked item, scheduled or not.
	BucketItems = store.Bucket("retention.schedule_items")

	// BucketDue maps store.TimeKey(due) + key → nothing: the scheduled
	// items in due order, then key order.
	BucketDue = store.Bucket("retention.schedule_due")
)

// Buckets are the scheduler's buckets, for the service's store.Schema.
var Buckets = []store.Bucket{BucketItems, BucketDue}

// DefaultSweepLimit is a sensible per-transaction bound for Sweep: large
// enough that one fsync is shared by many items, small enough that a backlog
// never holds bbolt's single writer for long.
const DefaultSweepLimit = 1000

// MaxKeyLen is the longest item key: a due index key is the item key behind
// an 8-byte time, and bbolt rejects keys over bbolt.MaxKeySize.
const MaxKeyLen = bbolt.MaxKeySize - timeLen

// ErrInvalidKey is returned for an empty key or one longer than MaxKeyLen.
var ErrInvalidKey = errors.New("schedule: key must be 1 to MaxKeyLen bytes")

// Scheduler reads and writes the scheduler's buckets. It holds no state of
// its own beyond the database, so it is safe for concurrent use and any
// number of them may share a file.
type Scheduler struct {
	db *store.DB
}

// New returns a scheduler over db, whose schema must include Buckets. Only
// Sweep uses db; the Tx methods use the caller's transaction.
func New(db *store.DB) *Scheduler { return &Scheduler{db: db} }

// SetTx creates the item key or replaces its due time and payload, removing
// its old index entry so that an item is never scheduled twice. A zero due
// tracks the item without scheduling it. A due before 1970 is stored as the
// first instant of 1970 and one after 2262 as the last instant
// store.TimeKey represents: both are still in the right order, and GetTx
// reports what was stored. SetTx keeps neither key nor payload: the caller
// may reuse them once tx ends.
//
// Under store.DB.Batch, SetTx is idempotent: running it twice leaves what
// running it once does.
func (s *Scheduler) SetTx(tx *bbolt.Tx, key []byte, due time.Time, payload []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	items, index := store.BucketTx(tx, BucketItems), store.BucketTx(tx, BucketDue)
	if err := unindexTx(items, index, key); err != nil {
		return err
	}
	at := encodeDue(due)
	// bbolt keeps the slices passed to Put until the transaction ends, so
	// both are fresh copies, never the caller's.
	if err := items.Put(bytes.Clone(key), encodeItem(at, payload)); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	if at == unscheduled {
		return nil
	}
	if err := index.Put(indexKey(at, key), nil); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	return nil
}

// CancelTx stops tracking key, removing its index entry. Cancelling a key
// that is not tracked does nothing.
func (s *Scheduler) CancelTx(tx *bbolt.Tx, key []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	items, index := store.BucketTx(tx, BucketItems), store.BucketTx(tx, BucketDue)
	if err := unindexTx(items, index, key); err != nil {
		return err
	}
	if err := items.Delete(key); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	return nil
}

// GetTx returns the item key. ok is false if it is not tracked. due is zero
// if the item is tracked but not scheduled: set with a zero due, or fired.
// The payload is a copy, the caller's to keep.
func (s *Scheduler) GetTx(tx *bbolt.Tx, key []byte) (due time.Time, payload []byte, ok bool, err error) {
	if err := checkKey(key); err != nil {
		return time.Time{}, nil, false, err
	}
	v := store.BucketTx(tx, BucketItems).Get(key)
	if v == nil {
		return time.Time{}, nil, false, nil
	}
	at, payload, err := decodeItem(v)
	if err != nil {
		return time.Time{}, nil, false, fmt.Errorf("schedule: item %q: %w", key, err)
	}
	// A fired item keeps its last due time in its record (see the package
	// comment); the index says whether it is still scheduled.
	if at != unscheduled && store.BucketTx(tx, BucketDue).Get(indexKey(at, key)) == nil {
		at = unscheduled
	}
	return decodeDue(at), bytes.Clone(payload), true, nil
}

// Len returns the number of tracked items, scheduled or not. It reads the
// bucket's statistics, which walks the items bucket's pages: cheap next to
// a sweep, but not meant for every request.
func (s *Scheduler) Len(tx *bbolt.Tx) int {
	return store.BucketTx(tx, BucketItems).Stats().KeyN
}

// NextDueTx returns the earliest due time of a scheduled item, and false if
// none is scheduled, so that the service can sleep until then instead of
// polling. It reads one index entry.
func (s *Scheduler) NextDueTx(tx *bbolt.Tx) (time.Time, bool, error) {
	k, _ := store.BucketTx(tx, BucketDue).Cursor().First()
	if k == nil {
		return time.Time{}, false, nil
	}
	at, _, err := splitIndexKey(k)
	if err != nil {
		return time.Time{}, false, err
	}
	return decodeDue(at), true, nil
}

// Between calls fn for each item scheduled from from to until, both
// included, in due order and then key order, so that Between(tx, time.Time{},
// now, fn) previews exactly what Sweep(now, …) would fire. An error from fn
// stops the walk and is returned as it is. key and payload are valid only
// until fn returns, and fn must not write to the scheduler's buckets.
func (s *Scheduler) Between(tx *bbolt.Tx, from, until time.Time, fn func(key []byte, due time.Time, payload []byte) error) error {
	items, index := store.BucketTx(tx, BucketItems), store.BucketTx(tx, BucketDue)
	// TimeKey, not encodeDue: a zero from means the beginning of time, not
	// "unscheduled".
	last := store.KeyUint64(store.TimeKey(until))
	c := index.Cursor()
	for k, _ := c.Seek(store.TimeKey(from)); k != nil; k, _ = c.Next() {
		at, key, err := splitIndexKey(k)
		if err != nil {
			return err
		}
		if at > last {
			return nil
		}
		payload, ok, err := scheduledTx(items, at, key)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := fn(key, decodeDue(at), payload); err != nil {
			return err
		}
	}
	return nil
}

// Sweep fires every item due at now (due ≤ now), in due order, in write
// transactions of at most limit items each, until none is due. Each item
// fires in the transaction that removes it from the index: fire gets that
// transaction, and whatever it writes there (the purge directive, its
// outbox event) commits with the removal or not at all. An item that fires
// stays tracked and unscheduled unless fire moves or cancels it with SetTx
// or CancelTx; an item moved to a time not after now fires again within
// this Sweep. key and payload are valid only until fire returns and must not
// be modified.
//
// An error from fire rolls back its transaction, so none of that
// transaction's items leaves the index, and Sweep returns the error,
// wrapped. fired counts the items of the transactions that committed.
//
// A sweep reads the due index entries, one more, and the due items: its cost
// does not grow with the items tracked beyond the depth of the B+trees.
func (s *Scheduler) Sweep(now time.Time, limit int, fire func(tx *bbolt.Tx, key []byte, due time.Time, payload []byte) error) (fired int, err error) {
	if limit <= 0 {
		return 0, fmt.Errorf("schedule: sweep limit %d is not positive", limit)
	}
	for {
		var n int
		var more bool
		err := s.db.Update(func(tx *bbolt.Tx) error {
			var err error
			n, more, err = s.SweepTx(tx, now, limit, fire)
			return err
		})
		if err != nil {
			return fired, err
		}
		fired += n
		if !more {
			return fired, nil
		}
	}
}

// SweepTx is one transaction of Sweep, for a caller that runs its own loop,
// such as one that stops between transactions when its context ends. It
// fires up to limit items due at now and reports more if there may be
// others. On error, tx must be rolled back: some items may have left the
// index already.
func (s *Scheduler) SweepTx(tx *bbolt.Tx, now time.Time, limit int, fire func(tx *bbolt.Tx, key []byte, due time.Time, payload []byte) error) (fired int, more bool, err error) {
	if limit <= 0 {
		return 0, false, fmt.Errorf("schedule: sweep limit %d is not positive", limit)
	}
	if fire == nil {
		return 0, false, errors.New("schedule: sweep without a fire function")
	}
	items, index := store.BucketTx(tx, BucketItems), store.BucketTx(tx, BucketDue)

	// Collected first: deleting under a bbolt cursor can skip entries, and
	// fire may write to the index.
	last := store.KeyUint64(store.TimeKey(now))
	due := make([][]byte, 0, min(limit, 256))
	c := index.Cursor()
	for k, _ := c.First(); k != nil && len(due) < limit; k, _ = c.Next() {
		at, _, err := splitIndexKey(k)
		if err != nil {
			return 0, false, err
		}
		if at > last {
			break
		}
		due = append(due, bytes.Clone(k))
	}

	for _, k := range due {
		// An earlier fire in this transaction may have moved or cancelled
		// this item, taking its entry with it; then it is not due now.
		if index.Get(k) == nil {
			continue
		}
		if err := index.Delete(k); err != nil {
			return 0, false, fmt.Errorf("schedule: %w", err)
		}
		at, key, _ := splitIndexKey(k)
		payload, ok, err := scheduledTx(items, at, key)
		if err != nil {
			return 0, false, err
		}
		if !ok {
			// A stray entry, deleted above without firing anything.
			continue
		}
		// The entry is deleted before fire runs, so that fire can
		// re-schedule the item, even at the same time, with SetTx.
		if err := fire(tx, key, decodeDue(at), payload); err != nil {
			return 0, false, fmt.Errorf("schedule: fire %q: %w", key, err)
		}
		fired++
	}
	return fired, len(due) == limit, nil
}

// unindexTx removes the index entry of the item key, if any.
func unindexTx(items, index *bbolt.Bucket, key []byte) error {
	v := items.Get(key)
	if v == nil {
		return nil
	}
	at, _, err := decodeItem(v)
	if err != nil {
		return fmt.Errorf("schedule: item %q: %w", key, err)
	}
	if at == unscheduled {
		return nil
	}
	// A fired item has no entry left; deleting a missing key is a no-op.
	if err := index.Delete(indexKey(at, key)); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	return nil
}

// scheduledTx returns the payload of the item that the index entry (at, key)
// schedules, and false if the entry is stray: its item is gone or due at
// another time. SetTx and CancelTx never leave such entries; checking anyway
// means that one could never fire an item early.
func scheduledTx(items *bbolt.Bucket, at uint64, key []byte) (payload []byte, ok bool, err error) {
	v := items.Get(key)
	if v == nil {
		return nil, false, nil
	}
	stored, payload, err := decodeItem(v)
	if err != nil {
		return nil, false, fmt.Errorf("schedule: item %q: %w", key, err)
	}
	return payload, stored == at, nil
}

func checkKey(key []byte) error {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return fmt.Errorf("%w (got %d)", ErrInvalidKey, len(key))
	}
	return nil
}

// Due times are stored as store.TimeKey stores them, nanoseconds since 1970
// as a big-endian uint64, so that a record and its index entry agree to the
// byte. unscheduled marks an item with no due time: TimeKey never produces
// it, since it clamps to math.MaxInt64.
const (
	timeLen            = 8
	unscheduled uint64 = math.MaxUint64
)

func encodeDue(t time.Time) uint64 {
	if t.IsZero() {
		return unscheduled
	}
	return store.KeyUint64(store.TimeKey(t))
}

func decodeDue(at uint64) time.Time {
	if at == unscheduled {
		return time.Time{}
	}
	return time.Unix(0, int64(at)).UTC()
}

// indexKey orders index entries by due time, then by item key.
func indexKey(at uint64, key []byte) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, timeLen+len(key)), at), key...)
}

// splitIndexKey returns the due time and item key of an index entry; key
// aliases k.
func splitIndexKey(k []byte) (at uint64, key []byte, err error) {
	if len(k) <= timeLen {
		return 0, nil, fmt.Errorf("schedule: corrupt due index key %x", k)
	}
	return binary.BigEndian.Uint64(k), k[timeLen:], nil
}

// An item is encoded as
//
//	format(1) due(8) payload(rest)
//
// with the due time big-endian, unscheduled for none. The format byte lets a
// later version change the layout and still read what this one wrote.
const (
	formatV1      = 1
	itemHeaderLen = 1 + timeLen
)

func encodeItem(at uint64, payload []byte) []byte {
	buf := make([]byte, itemHeaderLen, itemHeaderLen+len(payload))
	buf[0] = formatV1
	binary.BigEndian.PutUint64(buf[1:], at)
	return append(buf, payload...)
}

// decodeItem parses an encoded item. The payload aliases v.
func decodeItem(v []byte) (at uint64, payload []byte, err error) {
	if len(v) == 0 {
		return 0, nil, errors.New("empty record")
	}
	if v[0] != formatV1 {
		return 0, nil, fmt.Errorf("unknown record format %d", v[0])
	}
	if len(v) < itemHeaderLen {
		return 0, nil, fmt.Errorf("record truncated to %d bytes", len(v))
	}
	return binary.BigEndian.Uint64(v[1:]), v[itemHeaderLen:], nil
}
