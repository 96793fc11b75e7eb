// Package schedule is the retention service's durable scheduler: a
// time-ordered index, in the service's bbolt file, of the items it must purge
// and when.
//
// The scheduler is generic over the caller's items. An item is an opaque key
// (the service builds it with store.Key from tenant, subject and category)
// carrying an opaque payload; the scheduler knows only its due time. Two
// buckets hold the state:
//
//   - BucketItems maps key → format, due time, indexed time, payload: every
//     tracked item.
//   - BucketDue maps store.TimeKey(indexed) + key → nothing: the scheduled
//     items in the order a sweep reaches them, so that finding the due ones
//     reads the head of the index and nothing else.
//
// An item is scheduled exactly when BucketDue holds its entry at the time its
// record says it is indexed at. Its due time is the record's, and it is never
// indexed later than it is due: the index may lag behind the record, but
// only ever early. That lag is what makes activity signals cheap. A signal
// moves an item's due time later; SetTx then rewrites only the item's record
// and leaves its entry where it is, so a signal rewrites the item's leaf of
// the items bucket (and the branches above it) and no page of the index.
// When a sweep reaches an entry whose item is not yet due, it moves the entry
// to the item's due time, once, however many signals moved the item in
// between. Moving an item earlier, or scheduling it anew, indexes it at its
// due time at once, so no sweep can reach an item after it is due.
//
// Firing an item deletes its entry and leaves its record as it was, so a
// sweep of due items writes only to the contiguous head of the index: its
// cost follows the number of due items, not of tracked ones, and not even the
// scattered pages of the items bucket are rewritten. An item that has fired,
// or was set with a zero due time, stays tracked and reports a zero due time
// until SetTx schedules it again: the retention service keeps a subject's
// clock after a purge so that a later signal can re-arm it.
//
// Methods whose names end in Tx run in the caller's transaction, so that a
// signal and the due time it moves, or a purge directive and the firing that
// issued it, commit together or not at all. That is what lets a sweep
// survive a crash: every item fires in the transaction that removes its
// entry from the index, and every entry moves in the transaction that
// rewrites the record saying where it is, so after a restart an item has
// either fired and left the index, or neither, and is fired by the next
// sweep; a move half done is rolled back whole and done again. Nothing fires
// twice and nothing is missed.
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
	// BucketItems maps an item's key → format(1) due(8) indexed(8)
	// payload: every tracked item, scheduled or not.
	BucketItems = store.Bucket("retention.schedule_items")

	// BucketDue maps store.TimeKey(indexed) + key → nothing: the scheduled
	// items in the order a sweep reaches them, by indexed time, then key.
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

// SetTx creates the item key or replaces its due time and payload. An item
// is never scheduled twice: if it is scheduled and the new due time is not
// before where it is indexed, as when activity pushes it later, its index
// entry stays where it is and only its record is rewritten (see the package
// comment); otherwise its old entry, if any, is removed and it is indexed at
// the new due time.
//
// A zero due tracks the item without scheduling it, and removes its entry at
// once rather than leaving it for a sweep, so that GetTx and Between need
// not tell a held item from a scheduled one by anything but its record. A
// due before 1970 is stored as the first instant of 1970 and one after 2262
// as the last instant store.TimeKey represents: both are still in the right
// order, and GetTx reports what was stored. SetTx keeps neither key nor
// payload: the caller may reuse them once tx ends.
//
// Under store.DB.Batch, SetTx is idempotent: running it twice leaves what
// running it once does.
func (s *Scheduler) SetTx(tx *bbolt.Tx, key []byte, due time.Time, payload []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	items, index := store.BucketTx(tx, BucketItems), store.BucketTx(tx, BucketDue)
	at := encodeDue(due)
	indexed, err := indexedTx(items, index, key)
	if err != nil {
		return err
	}
	// Lazily, when the entry may stay: it is never after the due time.
	keep := indexed != unscheduled && at != unscheduled && at >= indexed
	if !keep {
		if indexed != unscheduled {
			if err := index.Delete(indexKey(indexed, key)); err != nil {
				return fmt.Errorf("schedule: %w", err)
			}
		}
		indexed = at
		if at != unscheduled {
			if err := index.Put(indexKey(at, key), entryValue); err != nil {
				return fmt.Errorf("schedule: %w", err)
			}
		}
	}
	// bbolt keeps the slices passed to Put until the transaction ends, so
	// both are fresh copies, never the caller's.
	if err := items.Put(bytes.Clone(key), encodeItem(at, indexed, payload)); err != nil {
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
	v := items.Get(key)
	if v == nil {
		return nil
	}
	_, indexed, _, err := decodeItem(v)
	if err != nil {
		return fmt.Errorf("schedule: item %q: %w", key, err)
	}
	if indexed != unscheduled {
		// A fired item has no entry left; deleting a missing key is a
		// no-op.
		if err := index.Delete(indexKey(indexed, key)); err != nil {
			return fmt.Errorf("schedule: %w", err)
		}
	}
	if err := items.Delete(key); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	return nil
}

// GetTx returns the item key. ok is false if it is not tracked. due is zero
// if the item is tracked but not scheduled: set with a zero due, or fired.
// Otherwise it is the item's due time, even if its index entry lags behind
// it. The payload is a copy, the caller's to keep.
func (s *Scheduler) GetTx(tx *bbolt.Tx, key []byte) (due time.Time, payload []byte, ok bool, err error) {
	if err := checkKey(key); err != nil {
		return time.Time{}, nil, false, err
	}
	v := store.BucketTx(tx, BucketItems).Get(key)
	if v == nil {
		return time.Time{}, nil, false, nil
	}
	at, indexed, payload, err := decodeItem(v)
	if err != nil {
		return time.Time{}, nil, false, fmt.Errorf("schedule: item %q: %w", key, err)
	}
	// A fired item keeps its last due and indexed times in its record (see
	// the package comment); the index says whether it is still scheduled.
	if at != unscheduled && !hasEntry(store.BucketTx(tx, BucketDue), indexKey(indexed, key)) {
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

// NextDueTx returns a time no later than the earliest due time of a
// scheduled item, and false if none is scheduled, so that the service can
// sleep until then instead of polling. It reads one index entry, the first,
// and returns the time the item is indexed at: usually its due time, but
// earlier if a signal has since moved the item later (see the package
// comment). A caller woken that early sweeps and finds nothing due, which
// is harmless: that sweep moves the entry to the item's due time, and
// NextDueTx then reports a later time.
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

// Between calls fn for each item scheduled with a due time from from to
// until, both included, so that Between(tx, time.Time{}, now, fn) previews
// exactly what Sweep(now, …) would fire, and in the same order. That order
// is the index's: by the time each item is indexed at, then by key. It is
// due order, except that an item whose due time was moved later comes where
// it was indexed, ahead of items due between then and its due time; a
// caller that needs strict due order sorts what it gets.
//
// Because an item may be indexed before its due time, Between reads every
// index entry up to until, not only those from from: that costs little, for
// a sweep keeps the entries before now few, but a from far in the future
// does not make Between cheaper.
//
// An error from fn stops the walk and is returned as it is. key and payload
// are valid only until fn returns, and fn must not write to the scheduler's
// buckets.
func (s *Scheduler) Between(tx *bbolt.Tx, from, until time.Time, fn func(key []byte, due time.Time, payload []byte) error) error {
	items, index := store.BucketTx(tx, BucketItems), store.BucketTx(tx, BucketDue)
	// TimeKey, not encodeDue: a zero from means the beginning of time, not
	// "unscheduled".
	first, last := store.KeyUint64(store.TimeKey(from)), store.KeyUint64(store.TimeKey(until))
	if first > last {
		return nil
	}
	c := index.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		indexed, key, err := splitIndexKey(k)
		if err != nil {
			return err
		}
		if indexed > last {
			return nil
		}
		at, payload, ok, err := scheduledTx(items, indexed, key)
		if err != nil {
			return err
		}
		if !ok || at < first || at > last {
			continue
		}
		if err := fn(key, decodeDue(at), payload); err != nil {
			return err
		}
	}
	return nil
}

// Sweep fires every item due at now (due ≤ now), in write transactions of
// at most limit index entries each, until none is due. Each item fires in
// the transaction that removes it from the index: fire gets that
// transaction, and whatever it writes there (the purge directive, its
// outbox event) commits with the removal or not at all. An item that fires
// stays tracked and unscheduled unless fire moves or cancels it with SetTx
// or CancelTx; an item moved to a time not after now fires again within
// this Sweep. key and payload are valid only until fire returns and must not
// be modified.
//
// Items fire in the order Between reports them: by the time they are
// indexed at, then by key, which is due order except for items whose due
// time was moved later after they were indexed. On the way, Sweep moves the
// entry of each item indexed by now but not yet due to its due time; such a
// move counts toward limit but not toward fired.
//
// An error from fire rolls back its transaction, so none of that
// transaction's items leaves the index, and Sweep returns the error,
// wrapped in a *FireError that names the item. fired counts the items of
// the transactions that committed.
//
// A sweep reads the index entries up to now, one more, and their items: its
// cost does not grow with the items tracked beyond the depth of the
// B+trees.
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
// handles up to limit index entries up to now, firing the items that are
// due and moving the others to their due times, and reports more if there
// may be others. On error, tx must be rolled back: some items may have left
// the index already.
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
	entries := make([][]byte, 0, min(limit, 256))
	c := index.Cursor()
	for k, _ := c.First(); k != nil && len(entries) < limit; k, _ = c.Next() {
		indexed, _, err := splitIndexKey(k)
		if err != nil {
			return 0, false, err
		}
		if indexed > last {
			break
		}
		entries = append(entries, bytes.Clone(k))
	}

	for _, k := range entries {
		// An earlier fire in this transaction may have moved or cancelled
		// this item, taking its entry with it; then it is not due now.
		if !hasEntry(index, k) {
			continue
		}
		if err := index.Delete(k); err != nil {
			return 0, false, fmt.Errorf("schedule: %w", err)
		}
		indexed, key, _ := splitIndexKey(k)
		at, payload, ok, err := scheduledTx(items, indexed, key)
		if err != nil {
			return 0, false, err
		}
		if !ok {
			// A stray entry, deleted above without firing anything.
			continue
		}
		if at > last {
			// Moved later since it was indexed: index it where it is
			// due now, in the transaction that rewrites its record to
			// say so.
			if err := index.Put(indexKey(at, key), entryValue); err != nil {
				return 0, false, fmt.Errorf("schedule: %w", err)
			}
			if err := items.Put(bytes.Clone(key), encodeItem(at, at, payload)); err != nil {
				return 0, false, fmt.Errorf("schedule: %w", err)
			}
			continue
		}
		// The entry is deleted before fire runs, so that fire can
		// re-schedule the item, even at the same time, with SetTx. The
		// record stays as it is: without its entry it is unscheduled.
		if err := fire(tx, key, decodeDue(at), payload); err != nil {
			return 0, false, &FireError{Key: bytes.Clone(key), Err: err}
		}
		fired++
	}
	return fired, len(entries) == limit, nil
}

// FireError is the error of a fire function, with the item it failed on,
// so that a caller can set that one item aside and sweep the others.
type FireError struct {
	// Key is the item's key, a copy the caller may keep.
	Key []byte
	// Err is what fire returned.
	Err error
}

func (e *FireError) Error() string { return fmt.Sprintf("schedule: fire %q: %v", e.Key, e.Err) }

// Unwrap returns what fire returned.
func (e *FireError) Unwrap() error { return e.Err }

// indexedTx returns the time the item key is indexed at, or unscheduled if
// it is not tracked or not scheduled.
func indexedTx(items, index *bbolt.Bucket, key []byte) (uint64, error) {
	v := items.Get(key)
	if v == nil {
		return unscheduled, nil
	}
	_, indexed, _, err := decodeItem(v)
	if err != nil {
		return 0, fmt.Errorf("schedule: item %q: %w", key, err)
	}
	if indexed == unscheduled || !hasEntry(index, indexKey(indexed, key)) {
		// Set with a zero due, or fired.
		return unscheduled, nil
	}
	return indexed, nil
}

// scheduledTx returns the due time and payload of the item that the index
// entry (indexed, key) schedules, and false if the entry is stray: its item
// is gone, or indexed elsewhere. SetTx and CancelTx never leave such
// entries; checking anyway means that one could never fire an item early.
// The payload aliases the record.
func scheduledTx(items *bbolt.Bucket, indexed uint64, key []byte) (at uint64, payload []byte, ok bool, err error) {
	v := items.Get(key)
	if v == nil {
		return 0, nil, false, nil
	}
	at, stored, payload, err := decodeItem(v)
	if err != nil {
		return 0, nil, false, fmt.Errorf("schedule: item %q: %w", key, err)
	}
	return at, payload, stored == indexed && at != unscheduled && at >= indexed, nil
}

// hasEntry reports whether the index holds the entry k. It compares keys
// rather than asking Get for a non-nil value: bbolt's Get returns nil, in
// the transaction that wrote it, for a key put with a nil value.
func hasEntry(index *bbolt.Bucket, k []byte) bool {
	found, _ := index.Cursor().Seek(k)
	return bytes.Equal(found, k)
}

// entryValue is the value of every index entry: empty, and not nil, so that
// bbolt's Get tells an entry from its absence in any transaction.
var entryValue = []byte{}

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

// indexKey orders index entries by indexed time, then by item key.
func indexKey(indexed uint64, key []byte) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, timeLen+len(key)), indexed), key...)
}

// splitIndexKey returns the indexed time and item key of an index entry; key
// aliases k.
func splitIndexKey(k []byte) (indexed uint64, key []byte, err error) {
	if len(k) <= timeLen {
		return 0, nil, fmt.Errorf("schedule: corrupt due index key %x", k)
	}
	return binary.BigEndian.Uint64(k), k[timeLen:], nil
}

// An item is encoded as
//
//	format(1) due(8) indexed(8) payload(rest)
//
// with both times big-endian, unscheduled for none. indexed is where the
// item's index entry is, or was before it fired; unscheduled if it was set
// with a zero due. The format byte lets a later version change the layout
// and still read what this one wrote. Format 1, without indexed, never
// shipped and is not read.
const (
	formatV2      = 2
	itemHeaderLen = 1 + 2*timeLen
)

func encodeItem(at, indexed uint64, payload []byte) []byte {
	buf := make([]byte, itemHeaderLen, itemHeaderLen+len(payload))
	buf[0] = formatV2
	binary.BigEndian.PutUint64(buf[1:], at)
	binary.BigEndian.PutUint64(buf[1+timeLen:], indexed)
	return append(buf, payload...)
}

// decodeItem parses an encoded item. The payload aliases v.
func decodeItem(v []byte) (at, indexed uint64, payload []byte, err error) {
	if len(v) == 0 {
		return 0, 0, nil, errors.New("empty record")
	}
	if v[0] != formatV2 {
		return 0, 0, nil, fmt.Errorf("unknown record format %d", v[0])
	}
	if len(v) < itemHeaderLen {
		return 0, 0, nil, fmt.Errorf("record truncated to %d bytes", len(v))
	}
	return binary.BigEndian.Uint64(v[1:]), binary.BigEndian.Uint64(v[1+timeLen:]), v[itemHeaderLen:], nil
}
