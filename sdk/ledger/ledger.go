// Package ledger is a subscriber's durable memory of the Lethe events it has
// answered, kept in a bbolt file.
//
// JetStream delivers at least once, and its de-duplication by Nats-Msg-Id
// lasts only the stream's duplicate window (minutes), while an event can be
// redelivered, or re-sent by Lethe's task tracker, for as long as the
// stream keeps it (30 days by default). The ledger closes that gap: it maps
// each event id to the outcome the system gave, so a duplicate is answered
// with the same outcome without acting twice.
//
// It also keeps, per (source, tenant, subject, restriction id), the highest
// event sequence recorded, so that an older restriction event that arrives
// after a newer one is recognised as superseded (see [Ledger.Superseded]).
//
// # Exactly-once side effects
//
// A handler whose side effect lives in the same bbolt file as the ledger
// records the outcome in the transaction that makes the change, so the
// change and the "answered" mark commit together or not at all:
//
//	err := db.Update(func(tx *bbolt.Tx) error {
//		if err := tx.Bucket(subscribers).Delete(key); err != nil {
//			return err
//		}
//		return l.RecordTx(tx, ev, outcome)
//	})
//
// The subscriber package wraps this as Event.Record. A crash after the
// commit leaves the event unacknowledged; on redelivery the ledger already
// holds the outcome, and the subscriber re-sends it without running the
// handler again.
//
// # Retention
//
// Entries are swept [Options.Retention] after they were recorded (30 days
// by default). The retention must be at least the stream's max age: an
// event id forgotten while the stream can still redeliver the event would
// be acted on twice. Sweeping walks a time index, so its cost is
// proportional to the entries that expired, not to the ledger's size.
package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// DefaultRetention is how long entries are kept when [Options.Retention] is
// zero: the default max age of the LETHE stream.
const DefaultRetention = 30 * 24 * time.Hour

var (
	// ErrRecorded is returned by [Ledger.RecordTx] when the event already
	// has an outcome: the event is a duplicate that another delivery
	// answered first. Roll the transaction back; its side effect was
	// already made once.
	ErrRecorded = errors.New("ledger: the event already has an outcome")

	// ErrSuperseded is returned by [Ledger.RecordTx] when a newer event
	// about the same restriction was recorded: applying this one would
	// undo the newer one. Roll the transaction back and answer
	// NOT_APPLICABLE.
	ErrSuperseded = errors.New("ledger: a newer event about the same restriction was recorded")
)

// Bucket layout, all below one root bucket so that the ledger can share a
// file with the system's own data.
var (
	bucketRoot = []byte("lethe.ledger")
	// event id → record (see encodeRecord)
	bucketOutcomes = []byte("outcomes")
	// recorded at (8 bytes) | event id → empty
	bucketOutcomesByTime = []byte("outcomes_by_time")
	// mark key (see markKey) → sequence (8 bytes) | updated at (8 bytes)
	bucketMarks = []byte("marks")
	// updated at (8 bytes) | mark key → empty
	bucketMarksByTime = []byte("marks_by_time")
	// event id → deadline (8 bytes, Unix nanoseconds) | Event (binary
	// protobuf): events acknowledged while the system answers later (see
	// Ledger.Wait). Added without a schema change: an older ledger gets
	// the bucket when opened, an older binary ignores it.
	bucketWaiting = []byte("waiting")
	// root key holding the schema version
	keySchema = []byte("schema")
)

// schemaVersion is the layout above. A ledger written by a newer version
// is refused rather than misread.
const schemaVersion = 1

// sweepBatch bounds the entries one sweep transaction deletes, so that a
// large backlog does not hold bbolt's single writer for long.
const sweepBatch = 1000

// Options configures a Ledger.
type Options struct {
	// Retention is how long an entry is kept after it was recorded;
	// DefaultRetention when zero. It must be at least the max age of the
	// LETHE stream, or a redelivered event could be acted on twice.
	Retention time.Duration
	// Now tells the time; time.Now when nil. Tests inject a clock to
	// expire entries without waiting.
	Now func() time.Time
}

// Ledger records the outcome a system gave for each event. It is safe for
// concurrent use.
type Ledger struct {
	db        *bbolt.DB
	owned     bool
	retention time.Duration
	now       func() time.Time
}

// Open opens, or creates, a ledger in its own bbolt file at path. Close
// closes the file. To record outcomes atomically with the system's own
// data, keep that data in the same file ([Ledger.DB]) or use [New] on the
// system's database.
func Open(path string, opts Options) (*Ledger, error) {
	// Without a timeout a second process opening the same file would wait
	// for the lock forever.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("ledger: %s is locked by another process (is the system already running?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	l, err := New(db, opts)
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	l.owned = true
	return l, nil
}

// New returns the ledger kept in db, creating its buckets if needed. The
// caller keeps ownership of db: Close leaves it open.
func New(db *bbolt.DB, opts Options) (*Ledger, error) {
	if opts.Retention < 0 {
		return nil, fmt.Errorf("ledger: retention must not be negative, got %s", opts.Retention)
	}
	l := &Ledger{db: db, retention: opts.Retention, now: opts.Now}
	if l.retention == 0 {
		l.retention = DefaultRetention
	}
	if l.now == nil {
		l.now = time.Now
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketRoot)
		if err != nil {
			return err
		}
		switch v := root.Get(keySchema); {
		case v == nil:
			if err := root.Put(keySchema, binary.BigEndian.AppendUint64(nil, schemaVersion)); err != nil {
				return err
			}
		case len(v) != 8 || binary.BigEndian.Uint64(v) != schemaVersion:
			return fmt.Errorf("ledger: unsupported schema version %x", v)
		}
		for _, name := range [][]byte{bucketOutcomes, bucketOutcomesByTime, bucketMarks, bucketMarksByTime, bucketWaiting} {
			if _, err := root.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: initialise: %w", err)
	}
	return l, nil
}

// DB returns the database the ledger lives in, for transactions that
// record an outcome together with a side effect ([Ledger.RecordTx]).
func (l *Ledger) DB() *bbolt.DB { return l.db }

// Retention returns how long entries are kept.
func (l *Ledger) Retention() time.Duration { return l.retention }

// Close closes the database if the ledger opened it with [Open].
func (l *Ledger) Close() error {
	if !l.owned {
		return nil
	}
	return l.db.Close()
}

// Lookup returns the outcome recorded for the event eventID, if any.
func (l *Ledger) Lookup(eventID string) (*eventsv1.Outcome, bool, error) {
	var o *eventsv1.Outcome
	err := l.db.View(func(tx *bbolt.Tx) error {
		v := bucketsOf(tx).outcomes.Get([]byte(eventID))
		if v == nil {
			return nil
		}
		var err error
		_, o, err = decodeRecord(v)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("ledger: look up event %s: %w", eventID, err)
	}
	return o, o != nil, nil
}

// Record records o as the outcome of ev unless ev already has one, and
// returns the outcome that is recorded: o, or the one recorded first. The
// first outcome wins because it is the one that describes what the system
// did; recording twice is therefore harmless.
func (l *Ledger) Record(ev *eventsv1.Event, o *eventsv1.Outcome) (*eventsv1.Outcome, error) {
	if err := checkPair(ev, o); err != nil {
		return nil, err
	}
	var stored *eventsv1.Outcome
	// Batch groups the records of concurrent workers into one commit. It
	// may run the function more than once, which is fine: it is
	// idempotent.
	err := l.db.Batch(func(tx *bbolt.Tx) error {
		b := bucketsOf(tx)
		if v := b.outcomes.Get([]byte(ev.GetId())); v != nil {
			var err error
			_, stored, err = decodeRecord(v)
			return err
		}
		stored = o
		return l.put(b, ev, o)
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: record event %s: %w", ev.GetId(), err)
	}
	return stored, nil
}

// RecordTx records o as the outcome of ev inside tx, a writable transaction
// on the ledger's database in which the caller also makes the side effect
// that o reports. Both commit together, so the side effect happens exactly
// once however often the event is delivered.
//
// RecordTx returns [ErrRecorded] when ev already has an outcome, and
// [ErrSuperseded] when ev is a restriction event older than one already
// recorded for the same restriction. Either way the caller must roll tx
// back (returning the error from bbolt's Update function does so).
func (l *Ledger) RecordTx(tx *bbolt.Tx, ev *eventsv1.Event, o *eventsv1.Outcome) error {
	if tx.DB() != l.db {
		return errors.New("ledger: the transaction is not on the ledger's database")
	}
	if !tx.Writable() {
		return errors.New("ledger: the transaction is read-only")
	}
	if err := checkPair(ev, o); err != nil {
		return err
	}
	b := bucketsOf(tx)
	if b.outcomes.Get([]byte(ev.GetId())) != nil {
		return ErrRecorded
	}
	if superseded(b, ev) {
		return ErrSuperseded
	}
	return l.put(b, ev, o)
}

// Superseded reports whether ev is a restriction event (applied or lifted)
// and an event with a higher sequence from the same source about the same
// tenant, subject and restriction was recorded. Applying ev would then undo
// the newer event: a "restriction lifted" overtaken by the older
// "restriction applied" must leave the subject unrestricted.
func (l *Ledger) Superseded(ev *eventsv1.Event) (bool, error) {
	var s bool
	err := l.db.View(func(tx *bbolt.Tx) error {
		s = superseded(bucketsOf(tx), ev)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("ledger: check order of event %s: %w", ev.GetId(), err)
	}
	return s, nil
}

// Sweep deletes the entries recorded longer than the retention ago and
// returns how many it deleted. It deletes in batches, each its own
// transaction, and stops early when ctx ends.
func (l *Ledger) Sweep(ctx context.Context) (int, error) {
	cutoff := timeKey(l.now().Add(-l.retention), nil)
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var n int
		err := l.db.Update(func(tx *bbolt.Tx) error {
			b := bucketsOf(tx)
			var err error
			n, err = sweep(b.outcomesByTime, b.outcomes, cutoff, sweepBatch)
			if err != nil || n == sweepBatch {
				return err
			}
			m, err := sweep(b.marksByTime, b.marks, cutoff, sweepBatch-n)
			n += m
			return err
		})
		if err != nil {
			return total, fmt.Errorf("ledger: sweep: %w", err)
		}
		total += n
		if n < sweepBatch {
			return total, nil
		}
	}
}

// sweep deletes up to limit entries of index older than cutoff, and the
// entries of main they point to.
func sweep(index, main *bbolt.Bucket, cutoff []byte, limit int) (int, error) {
	var expired [][]byte
	c := index.Cursor()
	for k, _ := c.First(); k != nil && len(expired) < limit && bytes.Compare(k, cutoff) < 0; k, _ = c.Next() {
		// Deleting under a cursor makes it skip entries; collect first.
		expired = append(expired, bytes.Clone(k))
	}
	for _, k := range expired {
		if err := index.Delete(k); err != nil {
			return 0, err
		}
		if len(k) > 8 {
			if err := main.Delete(k[8:]); err != nil {
				return 0, err
			}
		}
	}
	return len(expired), nil
}

// buckets are the ledger's buckets in one transaction.
type buckets struct {
	outcomes, outcomesByTime, marks, marksByTime *bbolt.Bucket
}

// bucketsOf returns the ledger's buckets in tx; New created them.
func bucketsOf(tx *bbolt.Tx) buckets {
	root := tx.Bucket(bucketRoot)
	return buckets{
		outcomes:       root.Bucket(bucketOutcomes),
		outcomesByTime: root.Bucket(bucketOutcomesByTime),
		marks:          root.Bucket(bucketMarks),
		marksByTime:    root.Bucket(bucketMarksByTime),
	}
}

// put records o for ev and raises ev's restriction mark. The caller has
// checked that ev has no outcome yet.
func (l *Ledger) put(b buckets, ev *eventsv1.Event, o *eventsv1.Outcome) error {
	now := l.now()
	rec, err := encodeRecord(now, o)
	if err != nil {
		return err
	}
	id := []byte(ev.GetId())
	if err := b.outcomes.Put(id, rec); err != nil {
		return err
	}
	if err := b.outcomesByTime.Put(timeKey(now, id), []byte{}); err != nil {
		return err
	}

	key, ok := markKey(ev)
	if !ok {
		return nil
	}
	if v := b.marks.Get(key); v != nil {
		seq, updated, err := decodeMark(v)
		if err != nil {
			return err
		}
		if seq >= ev.GetSequence() {
			return nil
		}
		// The index entry moves to the new time, so that the mark is
		// swept a retention after its last raise.
		if err := b.marksByTime.Delete(timeKey(updated, key)); err != nil {
			return err
		}
	}
	if err := b.marks.Put(key, encodeMark(ev.GetSequence(), now)); err != nil {
		return err
	}
	return b.marksByTime.Put(timeKey(now, key), []byte{})
}

// superseded reports whether b holds a higher sequence for ev's
// restriction.
func superseded(b buckets, ev *eventsv1.Event) bool {
	key, ok := markKey(ev)
	if !ok {
		return false
	}
	v := b.marks.Get(key)
	if v == nil {
		return false
	}
	seq, _, err := decodeMark(v)
	// An unreadable mark cannot prove the event old; applying it is the
	// lesser harm than refusing every later event about the restriction.
	return err == nil && seq > ev.GetSequence()
}

// checkPair checks that o answers ev and that ev can be keyed.
func checkPair(ev *eventsv1.Event, o *eventsv1.Outcome) error {
	switch {
	case ev.GetId() == "":
		return errors.New("ledger: the event has no id")
	case o.GetEventId() != ev.GetId():
		return fmt.Errorf("ledger: the outcome answers event %q, not %q", o.GetEventId(), ev.GetId())
	}
	return nil
}

// markKey returns the key of ev's restriction mark: source, tenant, subject
// and restriction id, each length-prefixed so that no two tuples share a
// key. Events that are not about a restriction, or carry no sequence, have
// none.
func markKey(ev *eventsv1.Event) ([]byte, bool) {
	var restriction string
	switch body := ev.GetBody().(type) {
	case *eventsv1.Event_RestrictionApplied:
		restriction = body.RestrictionApplied.GetRestrictionId()
	case *eventsv1.Event_RestrictionLifted:
		restriction = body.RestrictionLifted.GetRestrictionId()
	default:
		return nil, false
	}
	if ev.GetSequence() == 0 {
		return nil, false
	}
	var key []byte
	for _, f := range []string{ev.GetSource(), ev.GetTenantId(), ev.GetSubjectId(), restriction} {
		key = binary.AppendUvarint(key, uint64(len(f)))
		key = append(key, f...)
	}
	return key, true
}

// timeKey returns the index key of suffix at t: t as big-endian Unix
// nanoseconds, so that keys sort by time, then suffix.
func timeKey(t time.Time, suffix []byte) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(suffix)), uint64(t.UnixNano()))
	return append(k, suffix...)
}

// encodeMark encodes a restriction mark: its sequence and when it was last
// raised.
func encodeMark(seq uint64, updated time.Time) []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), seq)
	return binary.BigEndian.AppendUint64(v, uint64(updated.UnixNano()))
}

// decodeMark decodes what encodeMark encoded.
func decodeMark(v []byte) (seq uint64, updated time.Time, err error) {
	if len(v) != 16 {
		return 0, time.Time{}, fmt.Errorf("restriction mark has %d bytes, want 16", len(v))
	}
	return binary.BigEndian.Uint64(v), time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))), nil
}
