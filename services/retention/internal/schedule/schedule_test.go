package schedule_test

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/services/retention/internal/schedule"
)

// bucketFired records, per item key, how many times a test's fire function
// committed: the durable effect a purge directive stands for.
var bucketFired = store.Bucket("test.fired")

var schema = store.Schema{
	Service: "retention",
	Version: 1,
	Buckets: slices.Concat(schedule.Buckets, []store.Bucket{bucketFired}),
}

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func key(i int) []byte { return store.Key("tenant", fmt.Sprintf("subject-%04d", i), "usage") }

func update(t *testing.T, db *store.DB, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func set(t *testing.T, db *store.DB, s *schedule.Scheduler, k []byte, due time.Time, payload string) {
	t.Helper()
	update(t, db, func(tx *bbolt.Tx) error { return s.SetTx(tx, k, due, []byte(payload)) })
}

type item struct {
	due     time.Time
	payload string
	ok      bool
}

func get(t *testing.T, db *store.DB, s *schedule.Scheduler, k []byte) item {
	t.Helper()
	var it item
	err := db.View(func(tx *bbolt.Tx) error {
		due, payload, ok, err := s.GetTx(tx, k)
		it = item{due, string(payload), ok}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return it
}

// firing is one call of a fire function.
type firing struct {
	key string
	due time.Time
}

// recordFire returns a fire function that appends to *got.
func recordFire(got *[]firing) func(*bbolt.Tx, []byte, time.Time, []byte) error {
	return func(_ *bbolt.Tx, k []byte, due time.Time, _ []byte) error {
		*got = append(*got, firing{string(k), due})
		return nil
	}
}

// checkIndex verifies the invariant every operation keeps: each index entry
// schedules a tracked item that says it is indexed there and is due then or
// later, and each tracked item has at most one entry. It reads the record
// format, format(1)=2 due(8) indexed(8) payload, directly.
func checkIndex(t *testing.T, db *store.DB) {
	t.Helper()
	err := db.View(func(tx *bbolt.Tx) error {
		items := tx.Bucket(schedule.BucketItems)
		perKey := map[string]int{}
		return tx.Bucket(schedule.BucketDue).ForEach(func(k, _ []byte) error {
			if len(k) <= 8 {
				return fmt.Errorf("short index key %x", k)
			}
			v := items.Get(k[8:])
			if v == nil {
				return fmt.Errorf("orphan index entry %q", k)
			}
			if len(v) < 17 || v[0] != 2 {
				return fmt.Errorf("item %q: bad record %x", k[8:], v)
			}
			due, indexed := store.KeyUint64(v[1:9]), store.KeyUint64(v[9:17])
			if !bytes.Equal(v[9:17], k[:8]) {
				return fmt.Errorf("index entry %q disagrees with its item's indexed time %x", k, v[9:17])
			}
			if due == math.MaxUint64 || due < indexed {
				return fmt.Errorf("item %q indexed at %x but due at %x", k[8:], indexed, due)
			}
			if perKey[string(k[8:])]++; perKey[string(k[8:])] > 1 {
				return fmt.Errorf("item %q has several index entries", k[8:])
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// entries returns the index entries, item key → the time it is indexed at,
// read directly from the index.
func entries(t *testing.T, db *store.DB) map[string]time.Time {
	t.Helper()
	got := map[string]time.Time{}
	err := db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(schedule.BucketDue).ForEach(func(k, _ []byte) error {
			got[string(k[8:])] = time.Unix(0, int64(store.KeyUint64(k))).UTC()
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestSetGetCancel(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	k := key(1)

	if got := get(t, db, s, k); got.ok {
		t.Fatalf("untracked key: got %+v", got)
	}
	set(t, db, s, k, t0, "erase")
	if got, want := get(t, db, s, k), (item{t0, "erase", true}); got != want {
		t.Fatalf("after set: got %+v, want %+v", got, want)
	}
	// Moving replaces due time and payload and leaves one index entry.
	set(t, db, s, k, t0.Add(time.Hour), "anonymise")
	if got, want := get(t, db, s, k), (item{t0.Add(time.Hour), "anonymise", true}); got != want {
		t.Fatalf("after move: got %+v, want %+v", got, want)
	}
	checkIndex(t, db)
	// A zero due keeps the item tracked and unscheduled.
	set(t, db, s, k, time.Time{}, "held")
	if got, want := get(t, db, s, k), (item{time.Time{}, "held", true}); got != want {
		t.Fatalf("after unschedule: got %+v, want %+v", got, want)
	}
	update(t, db, func(tx *bbolt.Tx) error {
		if n := s.Len(tx); n != 1 {
			t.Errorf("Len = %d, want 1", n)
		}
		if _, ok, err := s.NextDueTx(tx); ok || err != nil {
			t.Errorf("NextDueTx = %v, %v, want nothing scheduled", ok, err)
		}
		return s.CancelTx(tx, k)
	})
	if got := get(t, db, s, k); got.ok {
		t.Fatalf("after cancel: got %+v", got)
	}
	update(t, db, func(tx *bbolt.Tx) error { return s.CancelTx(tx, k) }) // cancelling twice is harmless
	checkIndex(t, db)
}

func TestSetNormalisesTimes(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	stockholm := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		name string
		due  time.Time
		want time.Time
	}{
		{name: "other zone comes back in UTC", due: t0.In(stockholm), want: t0},
		{name: "nanoseconds kept", due: t0.Add(123456789), want: t0.Add(123456789)},
		{name: "before 1970 clamps to 1970", due: time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), want: time.Unix(0, 0).UTC()},
		{name: "1970 itself is scheduled", due: time.Unix(0, 0), want: time.Unix(0, 0).UTC()},
		{name: "after 2262 clamps", due: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), want: time.Unix(0, 1<<63-1).UTC()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set(t, db, s, key(0), tc.due, "")
			got := get(t, db, s, key(0))
			if !got.due.Equal(tc.want) || got.due.Location() != time.UTC {
				t.Fatalf("due = %v, want %v in UTC", got.due, tc.want)
			}
		})
	}
	checkIndex(t, db)
}

func TestInvalidKeys(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	for _, k := range [][]byte{nil, {}, bytes.Repeat([]byte{'k'}, schedule.MaxKeyLen+1)} {
		err := db.Update(func(tx *bbolt.Tx) error { return s.SetTx(tx, k, t0, nil) })
		if !errors.Is(err, schedule.ErrInvalidKey) {
			t.Errorf("SetTx(%d-byte key) = %v, want ErrInvalidKey", len(k), err)
		}
	}
	longest := bytes.Repeat([]byte{'k'}, schedule.MaxKeyLen)
	set(t, db, s, longest, t0, "")
	var got []firing
	if _, err := s.Sweep(t0, 10, recordFire(&got)); err != nil || len(got) != 1 {
		t.Fatalf("Sweep of the longest key: fired %d, err %v", len(got), err)
	}
}

func TestSweepFiresDueItemsInOrder(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	// Due times out of key order, two sharing one instant, and future items.
	offsets := []time.Duration{5, -3, 0, -3, 7, -10, 1, 0}
	for i, d := range offsets {
		set(t, db, s, key(i), t0.Add(d*time.Hour), fmt.Sprint("p", i))
	}
	var want []firing
	for i, d := range offsets {
		if d <= 0 {
			want = append(want, firing{string(key(i)), t0.Add(d * time.Hour)})
		}
	}
	slices.SortFunc(want, func(a, b firing) int { return cmp.Or(a.due.Compare(b.due), strings.Compare(a.key, b.key)) })

	var preview []firing
	update(t, db, func(tx *bbolt.Tx) error {
		return s.Between(tx, time.Time{}, t0, func(k []byte, due time.Time, _ []byte) error {
			preview = append(preview, firing{string(k), due})
			return nil
		})
	})
	if !slices.Equal(preview, want) {
		t.Fatalf("Between(zero, now) = %v, want %v", preview, want)
	}

	var got []firing
	payloads := map[string]string{}
	fired, err := s.Sweep(t0, 2, func(tx *bbolt.Tx, k []byte, due time.Time, p []byte) error {
		payloads[string(k)] = string(p)
		return recordFire(&got)(tx, k, due, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	if fired != len(want) || !slices.Equal(got, want) {
		t.Fatalf("Sweep fired %d: %v, want %v", fired, got, want)
	}
	for i, d := range offsets {
		it := get(t, db, s, key(i))
		switch {
		case d <= 0 && (it != item{time.Time{}, fmt.Sprint("p", i), true}):
			t.Errorf("fired item %d: got %+v, want tracked, unscheduled, payload kept", i, it)
		case d <= 0 && payloads[string(key(i))] != fmt.Sprint("p", i):
			t.Errorf("fired item %d: fire got payload %q", i, payloads[string(key(i))])
		case d > 0 && !it.due.Equal(t0.Add(d*time.Hour)):
			t.Errorf("future item %d: due %v, want %v", i, it.due, t0.Add(d*time.Hour))
		}
	}
	checkIndex(t, db)

	// Nothing is due twice.
	got = nil
	if n, err := s.Sweep(t0, 2, recordFire(&got)); n != 0 || err != nil {
		t.Fatalf("second Sweep fired %d (%v), err %v", n, got, err)
	}
	update(t, db, func(tx *bbolt.Tx) error {
		next, ok, err := s.NextDueTx(tx)
		if !ok || !next.Equal(t0.Add(time.Hour)) {
			t.Errorf("NextDueTx = %v, %v, want %v", next, ok, t0.Add(time.Hour))
		}
		if n := s.Len(tx); n != len(offsets) {
			t.Errorf("Len = %d, want %d: fired items stay tracked", n, len(offsets))
		}
		return err
	})

	// A fired item scheduled again fires again.
	set(t, db, s, key(1), t0.Add(-3*time.Hour), "again")
	if n, err := s.Sweep(t0, 2, recordFire(&got)); n != 1 || err != nil {
		t.Fatalf("Sweep after re-scheduling fired %d, err %v", n, err)
	}
}

func TestSweepSkipsItemsMovedLater(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	set(t, db, s, key(1), t0.Add(-time.Hour), "")
	set(t, db, s, key(2), t0.Add(-time.Hour), "")
	set(t, db, s, key(3), t0.Add(-time.Hour), "")
	set(t, db, s, key(1), t0.Add(time.Hour), "") // activity moved it past now
	set(t, db, s, key(2), time.Time{}, "")       // a hold unscheduled it
	update(t, db, func(tx *bbolt.Tx) error { return s.CancelTx(tx, key(3)) })

	var got []firing
	if n, err := s.Sweep(t0, 10, recordFire(&got)); n != 0 || err != nil {
		t.Fatalf("Sweep fired %d (%v), err %v", n, got, err)
	}
	if n, err := s.Sweep(t0.Add(time.Hour), 10, recordFire(&got)); n != 1 || err != nil || got[0].key != string(key(1)) {
		t.Fatalf("Sweep at the new due time fired %d (%v), err %v", n, got, err)
	}
}

// TestSweepFireChangesItems shows that fire may re-schedule or cancel the
// item it fires, and others of the same transaction, and that Sweep honours
// what it did.
func TestSweepFireChangesItems(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	for i := range 4 {
		set(t, db, s, key(i), t0.Add(time.Duration(i-4)*time.Minute), "")
	}
	var got []string
	fired, err := s.Sweep(t0, 10, func(tx *bbolt.Tx, k []byte, _ time.Time, _ []byte) error {
		got = append(got, string(k))
		switch {
		case bytes.Equal(k, key(0)): // retry later, e.g. a system did not answer
			return s.SetTx(tx, k, t0.Add(time.Hour), []byte("retry"))
		case bytes.Equal(k, key(1)): // forget it, and its neighbour too
			return errors.Join(s.CancelTx(tx, k), s.CancelTx(tx, key(2)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{string(key(0)), string(key(1)), string(key(3))}; fired != 3 || !slices.Equal(got, want) {
		t.Fatalf("fired %d: %q, want %q", fired, got, want)
	}
	if it := get(t, db, s, key(0)); (it != item{t0.Add(time.Hour), "retry", true}) {
		t.Errorf("re-scheduled item: %+v", it)
	}
	for _, i := range []int{1, 2} {
		if it := get(t, db, s, key(i)); it.ok {
			t.Errorf("cancelled item %d: %+v", i, it)
		}
	}
	checkIndex(t, db)
}

func TestSweepFireErrorRollsBack(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	for i := range 5 {
		set(t, db, s, key(i), t0.Add(-time.Duration(5-i)*time.Minute), "")
	}
	boom := errors.New("boom")
	calls := 0
	fired, err := s.Sweep(t0, 3, func(tx *bbolt.Tx, k []byte, _ time.Time, _ []byte) error {
		calls++
		if err := tx.Bucket(bucketFired).Put(bytes.Clone(k), []byte{1}); err != nil {
			return err
		}
		if calls == 5 { // the second item of the second transaction
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Sweep err = %v, want boom", err)
	}
	if fired != 3 {
		t.Fatalf("fired = %d, want the 3 of the committed transaction", fired)
	}
	update(t, db, func(tx *bbolt.Tx) error {
		for i := range 5 {
			durable := tx.Bucket(bucketFired).Get(key(i)) != nil
			due, _, _, err := s.GetTx(tx, key(i))
			if err != nil {
				return err
			}
			if firedOK := i < 3; durable != firedOK || due.IsZero() != firedOK {
				t.Errorf("item %d: fire's effect kept %v, unscheduled %v; want both %v", i, durable, due.IsZero(), firedOK)
			}
		}
		return nil
	})
	checkIndex(t, db)
}

// TestSweepRestart stops a sweep between its transactions, as a crash would,
// reopens the file, and sweeps again: every due item fires exactly once, and
// every item whose entry the sweep moves, because activity pushed it past
// now, is moved exactly once and never fires.
func TestSweepRestart(t *testing.T) {
	const (
		items = 200
		due   = 150
		limit = 16
	)
	path := filepath.Join(t.TempDir(), "retention.db")
	db, err := store.Open(store.Options{Path: path, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	s := schedule.New(db)
	rng := rand.New(rand.NewPCG(6, 6))
	update(t, db, func(tx *bbolt.Tx) error {
		for i := range items {
			at := t0.Add(-time.Duration(rng.IntN(1000)+1) * time.Minute)
			if i >= due {
				at = t0.Add(time.Duration(rng.IntN(1000)+1) * time.Minute)
			}
			if err := s.SetTx(tx, key(i), at, nil); err != nil {
				return err
			}
		}
		return nil
	})
	// Activity pushes every fifth due item past now, lazily, so that the
	// sweep must move its entry instead of firing it, and the next one later
	// but still due, so that it fires at its new due time.
	pushed := func(i int) bool { return i < due && i%5 == 0 }
	update(t, db, func(tx *bbolt.Tx) error {
		for i := 0; i < due; i += 5 {
			if err := s.SetTx(tx, key(i), t0.Add(time.Duration(rng.IntN(1000)+1)*time.Minute), nil); err != nil {
				return err
			}
			if err := s.SetTx(tx, key(i+1), t0, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if got, want := len(entries(t, db)), items; got != want {
		t.Fatalf("%d index entries after lazy moves, want %d", got, want)
	}

	// fire's effect is a durable counter per item, in fire's transaction,
	// as the service's directive is.
	attempts := 0
	crashAfter := -1
	crash := errors.New("crash")
	fire := func(tx *bbolt.Tx, k []byte, at time.Time, _ []byte) error {
		if attempts++; attempts == crashAfter {
			return crash
		}
		if at.After(t0) {
			return fmt.Errorf("%q fired at %v, due %v", k, t0, at)
		}
		b := tx.Bucket(bucketFired)
		n := 0
		if v := b.Get(k); v != nil {
			n = int(store.KeyUint64(v))
		}
		return b.Put(bytes.Clone(k), store.Uint64Key(uint64(n+1)))
	}

	for _, stop := range []int{limit*2 + 5, limit*4 + 1} {
		crashAfter = attempts + stop
		if _, err := s.Sweep(t0, limit, fire); !errors.Is(err, crash) {
			t.Fatalf("Sweep err = %v, want the crash", err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if db, err = store.Open(store.Options{Path: path, Schema: schema}); err != nil {
			t.Fatal(err)
		}
		s = schedule.New(db)
	}
	t.Cleanup(func() { db.Close() })
	crashAfter = -1
	if _, err := s.Sweep(t0, limit, fire); err != nil {
		t.Fatal(err)
	}
	if attempts <= due-due/5 {
		t.Fatalf("only %d attempts: the crashes rolled nothing back", attempts)
	}

	update(t, db, func(tx *bbolt.Tx) error {
		for i := range items {
			n := 0
			if v := tx.Bucket(bucketFired).Get(key(i)); v != nil {
				n = int(store.KeyUint64(v))
			}
			if want := map[bool]int{true: 1, false: 0}[i < due && !pushed(i)]; n != want {
				t.Errorf("item %d fired %d times, want %d", i, n, want)
			}
			at, _, _, err := s.GetTx(tx, key(i))
			if err != nil {
				return err
			}
			if scheduled := i >= due || pushed(i); at.After(t0) != scheduled || at.IsZero() == scheduled {
				t.Errorf("item %d: due %v after the sweeps, want scheduled %v", i, at, scheduled)
			}
		}
		return nil
	})
	checkIndex(t, db)
	for k, at := range entries(t, db) {
		if !at.After(t0) {
			t.Errorf("entry of %q left at %v, not after the sweep's now", k, at)
		}
	}
}

func TestSweepArguments(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	if _, err := s.Sweep(t0, 0, func(*bbolt.Tx, []byte, time.Time, []byte) error { return nil }); err == nil {
		t.Error("Sweep with limit 0 succeeded")
	}
	if _, err := s.Sweep(t0, 1, nil); err == nil {
		t.Error("Sweep without fire succeeded")
	}
}

func TestBetween(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	for i := range 10 {
		set(t, db, s, key(i), t0.Add(time.Duration(i)*time.Hour), fmt.Sprint(i))
	}
	set(t, db, s, key(10), time.Time{}, "unscheduled")

	var got []string
	walk := func(from, until time.Time, stopAt int) error {
		got = nil
		return db.View(func(tx *bbolt.Tx) error {
			return s.Between(tx, from, until, func(_ []byte, due time.Time, p []byte) error {
				if want := fmt.Sprint(due.Sub(t0).Hours()); string(p) != want {
					t.Errorf("payload %q at %v", p, due)
				}
				got = append(got, string(p))
				if len(got) == stopAt {
					return errStop
				}
				return nil
			})
		})
	}
	if err := walk(t0.Add(2*time.Hour), t0.Add(5*time.Hour), -1); err != nil {
		t.Fatal(err)
	}
	if want := []string{"2", "3", "4", "5"}; !slices.Equal(got, want) {
		t.Errorf("Between(2h, 5h) = %v, want %v (both ends included)", got, want)
	}
	if err := walk(t0.Add(5*time.Hour), t0.Add(2*time.Hour), -1); err != nil || len(got) != 0 {
		t.Errorf("Between(5h, 2h) = %v, %v, want nothing", got, err)
	}
	if err := walk(time.Time{}, t0.Add(100*time.Hour), 3); !errors.Is(err, errStop) || len(got) != 3 {
		t.Errorf("Between stopped by fn: %v, %v", got, err)
	}
}

var errStop = errors.New("stop")

// between returns what Between(from, until) reports.
func between(t *testing.T, db *store.DB, s *schedule.Scheduler, from, until time.Time) []firing {
	t.Helper()
	var got []firing
	err := db.View(func(tx *bbolt.Tx) error {
		return s.Between(tx, from, until, func(k []byte, due time.Time, _ []byte) error {
			got = append(got, firing{string(k), due})
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// nextDue returns what NextDueTx reports.
func nextDue(t *testing.T, db *store.DB, s *schedule.Scheduler) (time.Time, bool) {
	t.Helper()
	var next time.Time
	var ok bool
	err := db.View(func(tx *bbolt.Tx) error {
		var err error
		next, ok, err = s.NextDueTx(tx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return next, ok
}

// TestLazyMove follows one item that activity pushes later: its entry stays
// where it was, GetTx and Between report the new due time all the same, a
// sweep before that time moves the entry without firing, and one after it
// fires the item once.
func TestLazyMove(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	k, h := key(1), func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	set(t, db, s, k, h(1), "first")
	set(t, db, s, k, h(3), "moved")

	if got := entries(t, db); !got[string(k)].Equal(h(1)) || len(got) != 1 {
		t.Fatalf("entries after moving later = %v, want one left at %v", got, h(1))
	}
	if got, want := get(t, db, s, k), (item{h(3), "moved", true}); got != want {
		t.Fatalf("GetTx = %+v, want %+v", got, want)
	}
	if next, ok := nextDue(t, db, s); !ok || next.After(h(3)) {
		t.Errorf("NextDueTx = %v, %v, want a time no later than %v", next, ok, h(3))
	}
	for _, tc := range []struct {
		from, until time.Time
		want        []firing
	}{
		{h(0), h(2), nil},                         // the entry is in range, the item is not
		{h(2), h(4), []firing{{string(k), h(3)}}}, // the item is, its entry is before from
		{h(3), h(3), []firing{{string(k), h(3)}}},
		{time.Time{}, h(1), nil},
	} {
		if got := between(t, db, s, tc.from, tc.until); !slices.Equal(got, tc.want) {
			t.Errorf("Between(%v, %v) = %v, want %v", tc.from, tc.until, got, tc.want)
		}
	}
	checkIndex(t, db)

	var got []firing
	if n, err := s.Sweep(h(2), 10, recordFire(&got)); n != 0 || err != nil {
		t.Fatalf("Sweep before the new due time fired %d (%v), err %v", n, got, err)
	}
	if got := entries(t, db); !got[string(k)].Equal(h(3)) {
		t.Fatalf("entries after the sweep = %v, want moved to %v", got, h(3))
	}
	if next, ok := nextDue(t, db, s); !ok || !next.Equal(h(3)) {
		t.Errorf("NextDueTx after the move = %v, %v, want %v", next, ok, h(3))
	}
	if got, want := get(t, db, s, k), (item{h(3), "moved", true}); got != want {
		t.Fatalf("GetTx after the move = %+v, want %+v", got, want)
	}
	checkIndex(t, db)

	if n, err := s.Sweep(h(4), 10, recordFire(&got)); n != 1 || err != nil || !slices.Equal(got, []firing{{string(k), h(3)}}) {
		t.Fatalf("Sweep after the new due time fired %d (%v), err %v", n, got, err)
	}
	if n, err := s.Sweep(h(5), 10, recordFire(&got)); n != 0 || err != nil {
		t.Fatalf("second Sweep fired %d (%v), err %v", n, got, err)
	}
	if got, want := get(t, db, s, k), (item{time.Time{}, "moved", true}); got != want {
		t.Fatalf("GetTx after firing = %+v, want %+v", got, want)
	}
	if len(entries(t, db)) != 0 {
		t.Fatalf("entries left after firing: %v", entries(t, db))
	}
}

// TestMoves checks where each sequence of SetTx leaves an item's index
// entry: moved later it stays, moved before it is re-indexed at once, and
// zero removes it.
func TestMoves(t *testing.T) {
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	for _, tc := range []struct {
		name     string
		dues     []time.Time
		indexed  time.Time // zero: no entry
		sweepAt  time.Time // the first sweep that fires it
		wantFire time.Time
	}{
		{name: "once", dues: []time.Time{h(3)}, indexed: h(3), sweepAt: h(3), wantFire: h(3)},
		{name: "earlier", dues: []time.Time{h(3), h(1)}, indexed: h(1), sweepAt: h(1), wantFire: h(1)},
		{name: "later", dues: []time.Time{h(1), h(3)}, indexed: h(1), sweepAt: h(3), wantFire: h(3)},
		{name: "same", dues: []time.Time{h(2), h(2)}, indexed: h(2), sweepAt: h(2), wantFire: h(2)},
		{name: "later twice", dues: []time.Time{h(1), h(5), h(3)}, indexed: h(1), sweepAt: h(3), wantFire: h(3)},
		{name: "later then before the entry", dues: []time.Time{h(3), h(5), h(2)}, indexed: h(2), sweepAt: h(2), wantFire: h(2)},
		{name: "later then back to the entry", dues: []time.Time{h(3), h(5), h(3)}, indexed: h(3), sweepAt: h(3), wantFire: h(3)},
		{name: "zero", dues: []time.Time{h(1), {}}},
		{name: "later then zero", dues: []time.Time{h(1), h(5), {}}},
		{name: "zero then later", dues: []time.Time{h(1), {}, h(4)}, indexed: h(4), sweepAt: h(4), wantFire: h(4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := storetest.Open(t, schema)
			s := schedule.New(db)
			k := key(1)
			for _, due := range tc.dues {
				set(t, db, s, k, due, "")
			}
			last := tc.dues[len(tc.dues)-1]
			checkIndex(t, db)
			got := entries(t, db)
			if at, ok := got[string(k)]; ok == tc.indexed.IsZero() || !at.Equal(tc.indexed) {
				t.Fatalf("entries = %v, want indexed at %v", got, tc.indexed)
			}
			if it := get(t, db, s, k); !it.ok || !it.due.Equal(last) {
				t.Fatalf("GetTx = %+v, want due %v", it, last)
			}
			if _, ok := nextDue(t, db, s); ok == last.IsZero() {
				t.Errorf("NextDueTx ok = %v for due %v", ok, last)
			}
			// Sweep every half hour to the end: the item fires once, when
			// due, whatever entry moves come first.
			var fired []firing
			var firedAt time.Time
			for now := t0; now.Before(h(6)); now = now.Add(30 * time.Minute) {
				before := len(fired)
				if _, err := s.Sweep(now, 1, recordFire(&fired)); err != nil {
					t.Fatal(err)
				}
				if len(fired) > before && firedAt.IsZero() {
					firedAt = now
				}
				checkIndex(t, db)
			}
			switch {
			case last.IsZero() && len(fired) != 0:
				t.Fatalf("unscheduled item fired: %v", fired)
			case !last.IsZero() && (len(fired) != 1 || !fired[0].due.Equal(tc.wantFire) || !firedAt.Equal(tc.sweepAt)):
				t.Fatalf("fired %v at %v, want once, due %v, at %v", fired, firedAt, tc.wantFire, tc.sweepAt)
			}
		})
	}
}

// TestSweepLimitCountsMoves shows that moving an entry is work toward a
// transaction's limit but not a firing, and that Sweep carries on past it.
func TestSweepLimitCountsMoves(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	for i := range 3 {
		set(t, db, s, key(i), t0.Add(time.Duration(i-10)*time.Minute), "")
		set(t, db, s, key(i), t0.Add(time.Hour), "") // pushed past now
	}
	set(t, db, s, key(3), t0.Add(-time.Minute), "")

	var got []firing
	update(t, db, func(tx *bbolt.Tx) error {
		fired, more, err := s.SweepTx(tx, t0, 2, recordFire(&got))
		if fired != 0 || !more || err != nil {
			t.Errorf("first SweepTx = %d, %v, %v, want two moves, nothing fired, more", fired, more, err)
		}
		return err
	})
	if n, err := s.Sweep(t0, 2, recordFire(&got)); n != 1 || err != nil || got[0].key != string(key(3)) {
		t.Fatalf("Sweep fired %d (%v), err %v, want key 3", n, got, err)
	}
	for k, at := range entries(t, db) {
		if !at.Equal(t0.Add(time.Hour)) {
			t.Errorf("entry of %q at %v, want moved to %v", k, at, t0.Add(time.Hour))
		}
	}
	checkIndex(t, db)
}

// TestSameTransaction runs several SetTx of one key, and GetTx, in one
// transaction, as a group commit does when two signals move one item.
func TestSameTransaction(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	k := key(1)
	steps := []time.Time{t0, t0.Add(time.Hour), t0.Add(-time.Hour), {}, t0.Add(2 * time.Hour), t0.Add(3 * time.Hour)}
	update(t, db, func(tx *bbolt.Tx) error {
		for _, due := range steps {
			if err := s.SetTx(tx, k, due, nil); err != nil {
				return err
			}
			got, _, ok, err := s.GetTx(tx, k)
			if err != nil {
				return err
			}
			if !ok || !got.Equal(due) {
				t.Errorf("GetTx in the transaction of SetTx(%v) = %v, %v", due, got, ok)
			}
		}
		return nil
	})
	checkIndex(t, db)
	if got := entries(t, db); len(got) != 1 || !got[string(k)].Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("entries = %v, want one at %v", got, t0.Add(2*time.Hour))
	}
	if got := get(t, db, s, k); !got.due.Equal(t0.Add(3 * time.Hour)) {
		t.Fatalf("GetTx = %+v", got)
	}
}

// TestUnknownFormat shows that a record in a format this version does not
// know is reported, not misread.
func TestUnknownFormat(t *testing.T) {
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	k := key(1)
	for _, v := range [][]byte{
		append([]byte{1}, store.TimeKey(t0)...), // format 1 never shipped
		{3, 0, 0},
		{2, 0, 0, 0}, // format 2, truncated
		{},
	} {
		update(t, db, func(tx *bbolt.Tx) error { return tx.Bucket(schedule.BucketItems).Put(k, v) })
		err := db.View(func(tx *bbolt.Tx) error { _, _, _, err := s.GetTx(tx, k); return err })
		if err == nil || !strings.Contains(err.Error(), "record") {
			t.Errorf("GetTx of record %x: err %v, want a record error", v, err)
		}
		if err := db.Update(func(tx *bbolt.Tx) error { return s.SetTx(tx, k, t0, nil) }); err == nil {
			t.Errorf("SetTx over record %x succeeded", v)
		}
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return s.CancelTx(tx, k) }); err == nil {
		t.Error("CancelTx of a bad record succeeded")
	}
}

// TestRandomOperations runs random sets, moves, cancels and sweeps against a
// map model, with several seeds; see checkModel.
func TestRandomOperations(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed-", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2026, seed))
			checkModel(t, 700, rng.IntN)
		})
	}
}

// FuzzOperations is TestRandomOperations driven by the fuzzer's bytes, each
// choice one byte.
func FuzzOperations(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte("\x00\x01\x10\x00\x01\x90\x09\x05\x09\x20\x00\x01\x05\x09\x30\x02"))
	f.Add(bytes.Repeat([]byte{0, 3, 200, 1, 3, 250, 9, 9, 2}, 20))
	f.Fuzz(func(t *testing.T, choices []byte) {
		steps := len(choices) / 3
		checkModel(t, min(steps, 300), func(n int) int {
			if len(choices) == 0 {
				return 0
			}
			c := int(choices[0])
			choices = choices[1:]
			return c % n
		})
	})
}

// checkModel runs steps random operations, each choice made by intN,
// against a map from key to due time and payload, the scheduler's whole
// contract with no index in it. Activity that pushes items later is the
// most common move, so that many entries lag behind their items. After each
// step it checks that every item's GetTx, a Between over a random window,
// and NextDueTx agree with the model, and that the index keeps its
// invariant. Each sweep must fire exactly the items the model says are due,
// in the order Between previewed.
func checkModel(t *testing.T, steps int, intN func(n int) int) {
	const keys = 40
	db := storetest.Open(t, schema)
	s := schedule.New(db)
	type state struct {
		due     time.Time // zero: tracked, not scheduled
		payload string
	}
	model := map[string]state{}
	now := t0
	minutes := func(n int) time.Duration { return time.Duration(n) * time.Minute }
	randDue := func(k []byte) time.Time {
		switch c := intN(8); {
		case c == 0:
			return time.Time{}
		case c < 4: // activity: later than now and than before
			due := now
			if st := model[string(k)]; st.due.After(due) {
				due = st.due
			}
			return due.Add(minutes(1 + intN(120)))
		default:
			return now.Add(minutes(intN(240) - 60))
		}
	}

	for step := range steps {
		k := key(intN(keys))
		switch op := intN(10); {
		case op < 5:
			due, p := randDue(k), fmt.Sprint("p", step)
			set(t, db, s, k, due, p)
			model[string(k)] = state{due, p}
		case op < 6:
			update(t, db, func(tx *bbolt.Tx) error { return s.CancelTx(tx, k) })
			delete(model, string(k))
		case op < 7:
			// A set that rolls back changes nothing.
			err := db.Update(func(tx *bbolt.Tx) error {
				if err := s.SetTx(tx, k, randDue(k), []byte("rolled back")); err != nil {
					return err
				}
				return errStop
			})
			if !errors.Is(err, errStop) {
				t.Fatal(err)
			}
		default:
			now = now.Add(minutes(intN(40)))
			var want []firing
			for mk, st := range model {
				if !st.due.IsZero() && !st.due.After(now) {
					want = append(want, firing{mk, st.due})
				}
			}
			preview := between(t, db, s, time.Time{}, now)
			var got []firing
			// fire re-schedules some items past now, as a retry would.
			retry := map[string]time.Time{}
			_, err := s.Sweep(now, 1+intN(5), func(tx *bbolt.Tx, fk []byte, due time.Time, p []byte) error {
				got = append(got, firing{string(fk), due})
				if intN(4) == 0 {
					at := now.Add(minutes(1 + intN(60)))
					retry[string(fk)] = at
					return s.SetTx(tx, fk, at, p)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, preview) {
				t.Fatalf("step %d: Sweep(%v) fired %v, Between previewed %v", step, now, got, preview)
			}
			if !slices.Equal(sortFirings(got), sortFirings(want)) {
				t.Fatalf("step %d: Sweep(%v) fired %v, want %v", step, now, got, want)
			}
			for _, f := range got {
				st := model[f.key]
				st.due = retry[f.key] // zero unless re-scheduled
				model[f.key] = st
			}
		}

		checkIndex(t, db)
		var earliest time.Time
		err := db.View(func(tx *bbolt.Tx) error {
			if n := s.Len(tx); n != len(model) {
				t.Fatalf("step %d: Len = %d, model has %d", step, n, len(model))
			}
			for i := range keys {
				k := key(i)
				due, p, ok, err := s.GetTx(tx, k)
				if err != nil {
					return err
				}
				st, inModel := model[string(k)]
				if ok != inModel || !due.Equal(st.due) || string(p) != st.payload {
					t.Fatalf("step %d: item %q = %v %q %v, model %+v %v", step, k, due, p, ok, st, inModel)
				}
				if !st.due.IsZero() && (earliest.IsZero() || st.due.Before(earliest)) {
					earliest = st.due
				}
			}
			next, ok, err := s.NextDueTx(tx)
			if ok != !earliest.IsZero() || next.After(earliest) {
				t.Fatalf("step %d: NextDueTx = %v, %v, want no later than %v", step, next, ok, earliest)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}

		from := now.Add(minutes(intN(240) - 60))
		until := from.Add(minutes(intN(240)))
		var want []firing
		for mk, st := range model {
			if !st.due.IsZero() && !st.due.Before(from) && !st.due.After(until) {
				want = append(want, firing{mk, st.due})
			}
		}
		if got := between(t, db, s, from, until); !slices.Equal(sortFirings(got), sortFirings(want)) {
			t.Fatalf("step %d: Between(%v, %v) = %v, want %v", step, from, until, got, want)
		}
	}
}

// sortFirings sorts fs by due time, then key, and returns it.
func sortFirings(fs []firing) []firing {
	slices.SortFunc(fs, func(a, b firing) int { return cmp.Or(a.due.Compare(b.due), strings.Compare(a.key, b.key)) })
	return fs
}
