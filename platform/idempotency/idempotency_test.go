package idempotency

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

// Run starts a goroutine.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	testSchema = store.Schema{Service: "test", Version: 1}
	t0         = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	hashA      = [32]byte{'a'}
)

func newFixture(t *testing.T) (*store.DB, *clock.Fake, *Store) {
	t.Helper()
	clk := clock.NewFake(t0)
	return storetest.Open(t, testSchema), clk, New(clk, DefaultTTL)
}

func put(t *testing.T, db *store.DB, s *Store, key string) Record {
	t.Helper()
	var r Record
	err := db.Update(func(tx *bbolt.Tx) error {
		var err error
		r, err = s.PutTx(tx, []byte(key), hashA, []byte("response "+key))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func lookup(t *testing.T, db *store.DB, s *Store, key string) (Record, bool) {
	t.Helper()
	var r Record
	var found bool
	err := db.View(func(tx *bbolt.Tx) error {
		var err error
		r, found, err = s.LookupTx(tx, []byte(key))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, found
}

// indexEntries returns the expiry index as "<expiry nanos> <key>" strings.
func indexEntries(t *testing.T, db *store.DB) []string {
	t.Helper()
	var es []string
	err := db.View(func(tx *bbolt.Tx) error {
		return store.BucketTx(tx, store.BucketIdempotencyExpiry).ForEach(func(k, _ []byte) error {
			es = append(es, fmt.Sprintf("%d %s", store.KeyUint64(k), k[8:]))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func TestPutThenLookup(t *testing.T) {
	db, _, s := newFixture(t)
	stored := put(t, db, s, "k")
	want := Record{RequestHash: hashA, Response: []byte("response k"), CreatedAt: t0, ExpiresAt: t0.Add(DefaultTTL)}
	if !equal(stored, want) {
		t.Errorf("PutTx = %+v, want %+v", stored, want)
	}
	// The response must stay valid after the transaction ends.
	if got, found := lookup(t, db, s, "k"); !found || !equal(got, want) {
		t.Errorf("LookupTx = %+v, %t; want %+v, true", got, found, want)
	}
	if _, found := lookup(t, db, s, "other"); found {
		t.Error("LookupTx found a record never stored")
	}
}

func equal(a, b Record) bool {
	return a.RequestHash == b.RequestHash && bytes.Equal(a.Response, b.Response) &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

func TestNewDefaultsTTL(t *testing.T) {
	for _, ttl := range []time.Duration{0, -time.Hour} {
		db := storetest.Open(t, testSchema)
		if r := put(t, db, New(clock.NewFake(t0), ttl), "k"); !r.ExpiresAt.Equal(t0.Add(DefaultTTL)) {
			t.Errorf("New(clk, %v) keeps records until %v, want %v", ttl, r.ExpiresAt, t0.Add(DefaultTTL))
		}
	}
}

func TestLookupAfterExpiry(t *testing.T) {
	tests := []struct {
		advance time.Duration
		found   bool
	}{
		{DefaultTTL - time.Nanosecond, true},
		{DefaultTTL, false},
		{DefaultTTL + time.Hour, false},
	}
	for _, tt := range tests {
		db, clk, s := newFixture(t)
		put(t, db, s, "k")
		clk.Advance(tt.advance)
		if _, found := lookup(t, db, s, "k"); found != tt.found {
			t.Errorf("%v after PutTx, LookupTx found = %t, want %t", tt.advance, found, tt.found)
		}
	}
}

func TestPutOverExistingRecord(t *testing.T) {
	db, clk, s := newFixture(t)
	put(t, db, s, "k")

	err := db.Update(func(tx *bbolt.Tx) error {
		_, err := s.PutTx(tx, []byte("k"), [32]byte{'b'}, nil)
		return err
	})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("PutTx over a live record = %v, want ErrExists", err)
	}

	clk.Advance(DefaultTTL)
	put(t, db, s, "k")
	want := []string{fmt.Sprintf("%d k", t0.Add(2*DefaultTTL).UnixNano())}
	if got := indexEntries(t, db); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after replacing an expired record the index holds %q, want %q", got, want)
	}

	// The replaced record's old index entry must not let a sweep delete
	// the new record.
	clk.Advance(time.Hour)
	if n, err := s.Sweep(db, 10); n != 0 || err != nil {
		t.Fatalf("Sweep = %d, %v; want 0, nil", n, err)
	}
	if _, found := lookup(t, db, s, "k"); !found {
		t.Fatal("Sweep deleted a live record")
	}
}

func TestSweep(t *testing.T) {
	for _, limit := range []int{1, 2, 1000} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			db, clk, s := newFixture(t)
			for _, k := range []string{"a", "b", "c"} {
				put(t, db, s, k)
				clk.Advance(time.Hour)
			}
			// a and b expire at t0+24h and t0+25h, c at t0+26h.
			clk.Set(t0.Add(DefaultTTL + time.Hour))
			if n, err := s.Sweep(db, limit); n != 2 || err != nil {
				t.Fatalf("Sweep = %d, %v; want 2, nil", n, err)
			}
			err := db.View(func(tx *bbolt.Tx) error {
				if n := store.BucketTx(tx, store.BucketIdempotency).Stats().KeyN; n != 1 {
					return fmt.Errorf("%d records left, want 1", n)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			clk.Set(t0) // so that lookup sees expired records too
			if _, found := lookup(t, db, s, "c"); !found {
				t.Error("Sweep deleted the record that had not expired")
			}
			want := []string{fmt.Sprintf("%d c", t0.Add(DefaultTTL+2*time.Hour).UnixNano())}
			if got := indexEntries(t, db); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("after Sweep the index holds %q, want %q", got, want)
			}
		})
	}
}

func TestSweepRejectsLimit(t *testing.T) {
	db, _, s := newFixture(t)
	if _, err := s.Sweep(db, 0); err == nil {
		t.Fatal("Sweep with limit 0 succeeded")
	}
}

func TestRunSweepsAndStops(t *testing.T) {
	db, clk, s := newFixture(t)
	put(t, db, s, "k")
	clk.Advance(DefaultTTL)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, db, time.Millisecond)
	}()
	eventually.True(t, "Run sweeps the expired record", func() bool { return len(indexEntries(t, db)) == 0 })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestKeyIsUnambiguous(t *testing.T) {
	// Triples that collide under concatenation, NUL separation or a naive
	// length prefix.
	triples := [][3]string{
		{"a", "b", "c"},
		{"ab", "", "c"},
		{"a", "bc", ""},
		{"a\x00b", "c", "d"},
		{"a", "b\x00c", "d"},
		{"a\x00b\x00c", "", ""},
		{"", "", ""},
		{"", "", "\x00"},
		{"\x01a", "", ""},
		{"", "\x01a", ""},
		{"\x00", "", ""},
		{string(make([]byte, 300)), "m", "r"},
	}
	seen := map[string][3]string{}
	for _, tr := range triples {
		k := Key(tr[0], tr[1], tr[2])
		if other, dup := seen[string(k)]; dup {
			t.Errorf("Key(%q) = Key(%q) = %x", tr, other, k)
		}
		seen[string(k)] = tr
		if got, ok := parseKey(k); !ok || got != tr {
			t.Errorf("Key(%q) = %x parses back as %q, %t", tr, k, got, ok)
		}
	}
}

// parseKey inverts Key; that it can is what makes Key unambiguous.
func parseKey(k []byte) (parts [3]string, ok bool) {
	for i := range parts {
		n, w := binary.Uvarint(k)
		if w <= 0 || uint64(len(k)-w) < n {
			return parts, false
		}
		parts[i] = string(k[w : w+int(n)])
		k = k[w+int(n):]
	}
	return parts, len(k) == 0
}

// Under a steady load the records' space stays bounded: each hour's sweep
// deletes the records of the hour a day before, and bbolt reuses their
// pages for the new ones, so from the second day on the file stops
// growing. The keys are random, as UUIDv4 request ids are, which scatters
// the records over the pages.
func TestSweptSpaceIsReused(t *testing.T) {
	db, clk, s := newFixture(t)
	rng := rand.New(rand.NewPCG(1, 2))
	const perHour, perCommit = 120, 30
	response := bytes.Repeat([]byte("r"), 300)
	size := func() int64 {
		var n int64
		if err := db.View(func(tx *bbolt.Tx) error { n = tx.Size(); return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var sizes []int64
	for day := range 4 {
		for range 24 {
			for range perHour / perCommit {
				if err := db.Update(func(tx *bbolt.Tx) error {
					for range perCommit {
						key := fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64())
						if _, err := s.PutTx(tx, []byte(key), hashA, response); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			clk.Advance(time.Hour)
			if _, err := s.Sweep(db, sweepLimit); err != nil {
				t.Fatal(err)
			}
		}
		sizes = append(sizes, size())
		// The hour's sweep runs as the records of 24 hours before expire,
		// so 23 hours' records are live at its end.
		if day > 0 {
			if n := len(indexEntries(t, db)); n != 23*perHour {
				t.Fatalf("day %d: %d records kept, want 23 hours' %d", day+1, n, 23*perHour)
			}
		}
	}
	// Day 1 fills the window; day 2 adds bbolt's slack for pages freed
	// but not yet reusable; days 3 and 4 must live in the same space.
	if sizes[3] > sizes[1]+sizes[1]/10 {
		t.Fatalf("high-water mark by day: %v bytes; the file kept growing after the first day's records expired", sizes)
	}
	t.Logf("high-water mark by day: %v bytes", sizes)
}
