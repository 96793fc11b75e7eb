package store_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.uber.org/goleak"

	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
)

// bbolt's Batch starts goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var bucketThings = store.Bucket("things")

func schemaV1() store.Schema {
	return store.Schema{Service: "registry", Version: 1, Buckets: []store.Bucket{bucketThings}}
}

func put(t *testing.T, db *store.DB, b store.Bucket, k, v string) {
	t.Helper()
	err := db.Update(func(tx *bbolt.Tx) error { return store.BucketTx(tx, b).Put([]byte(k), []byte(v)) })
	if err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, db *store.DB, b store.Bucket, k string) string {
	t.Helper()
	var v string
	err := db.View(func(tx *bbolt.Tx) error {
		v = string(store.BucketTx(tx, b).Get([]byte(k)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "registry.db")
	db := storetest.OpenAt(t, path, schemaV1())
	put(t, db, bucketThings, "k", "v")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = storetest.OpenAt(t, path, schemaV1())
	if got := get(t, db, bucketThings, "k"); got != "v" {
		t.Fatalf("after reopen got %q, want %q", got, "v")
	}
	if db.Path() != path {
		t.Errorf("Path() = %q, want %q", db.Path(), path)
	}
	for _, b := range []store.Bucket{store.BucketMeta, store.BucketIdempotency, store.BucketIdempotencyExpiry, store.BucketAudit, store.BucketOutbox} {
		if err := db.View(func(tx *bbolt.Tx) error { store.BucketTx(tx, b); return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFileInfoRecordsTheSchema: a file says which service owns it and
// which buckets its schema declares audited, as of the last open, so that
// `lethe audit verify` needs no service's code; a file without its service
// record is refused.
func TestFileInfoRecordsTheSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	read := func(db *store.DB) (info store.FileInfo, err error) {
		_ = db.View(func(tx *bbolt.Tx) error { info, err = store.ReadFileInfoTx(tx); return nil })
		return info, err
	}
	db := storetest.OpenAt(t, path, schemaV1())
	if info, err := read(db); err != nil || info.Service != "registry" || info.Version != 1 || len(info.Audited) != 0 {
		t.Fatalf("info = %+v, %v", info, err)
	}
	db.Close()
	audited := schemaV1()
	audited.Buckets = append(audited.Buckets, store.Bucket("more"))
	audited.Audited = []store.Bucket{bucketThings, store.Bucket("more")}
	db = storetest.OpenAt(t, path, audited)
	info, err := read(db)
	if err != nil || len(info.Audited) != 2 || string(info.Audited[0]) != "things" || string(info.Audited[1]) != "more" {
		t.Fatalf("info = %+v, %v", info, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return store.BucketTx(tx, store.BucketMeta).Delete([]byte("service")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := read(db); err == nil || !strings.Contains(err.Error(), "no service record") {
		t.Fatalf("a file without its service record: %v", err)
	}
}

func TestFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	storetest.OpenAt(t, filepath.Join(dir, "s.db"), schemaV1())
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "s.db"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm() &^ want; got != 0 {
			t.Errorf("%s has mode %v, want at most %v", path, fi.Mode().Perm(), want)
		}
	}
}

// migrationLog returns migrations to versions 2..to that record the order
// they ran in, both in memory and in the file.
func migrationLog(ran *[]int, to int) []store.Migration {
	var ms []store.Migration
	for v := 2; v <= to; v++ {
		ms = append(ms, store.Migration{To: v, Up: func(tx *bbolt.Tx) error {
			*ran = append(*ran, v)
			b, err := tx.CreateBucketIfNotExists([]byte("migrated"))
			if err != nil {
				return err
			}
			return b.Put(store.Uint64Key(uint64(v)), nil)
		}})
	}
	return ms
}

func TestMigrationsRunOnceInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db := storetest.OpenAt(t, path, schemaV1())
	put(t, db, bucketThings, "k", "v")
	db.Close()

	var ran []int
	v3 := schemaV1()
	v3.Version = 3
	v3.Migrations = migrationLog(&ran, 3)
	db = storetest.OpenAt(t, path, v3)
	if !slices.Equal(ran, []int{2, 3}) {
		t.Fatalf("migrations ran %v, want [2 3]", ran)
	}
	if got := get(t, db, bucketThings, "k"); got != "v" {
		t.Fatalf("data lost in migration: got %q", got)
	}
	db.Close()

	storetest.OpenAt(t, path, v3).Close()
	if len(ran) != 2 {
		t.Fatalf("reopening at the current version ran migrations again: %v", ran)
	}

	ran = nil
	storetest.Open(t, v3)
	if len(ran) != 0 {
		t.Fatalf("a fresh file ran migrations %v; it should start at the current version", ran)
	}
}

func TestFailedMigrationLeavesFileUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	storetest.OpenAt(t, path, schemaV1()).Close()

	var ran []int
	v3 := schemaV1()
	v3.Version = 3
	v3.Migrations = migrationLog(&ran, 3)
	boom := errors.New("boom")
	v3.Migrations[1].Up = func(*bbolt.Tx) error { return boom }
	if _, err := store.Open(store.Options{Path: path, Schema: v3}); !errors.Is(err, boom) {
		t.Fatalf("Open = %v, want %v", err, boom)
	}

	// Still at version 1, without the first migration's bucket.
	db := storetest.OpenAt(t, path, schemaV1())
	err := db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket([]byte("migrated")) != nil {
			return errors.New("migration to version 2 was committed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefuses(t *testing.T) {
	v2 := schemaV1()
	v2.Version = 2
	v2.Migrations = []store.Migration{{To: 2, Up: func(*bbolt.Tx) error { return nil }}}
	v3 := schemaV1()
	v3.Version = 3
	v3.Migrations = []store.Migration{{To: 3, Up: func(*bbolt.Tx) error { return nil }}}
	other := schemaV1()
	other.Service = "consent"

	tests := []struct {
		name    string
		written store.Schema // creates the file
		opened  store.Schema
		wantErr error  // if set, errors.Is must hold
		wantMsg string // the error must contain this
	}{
		{"downgrade", v2, schemaV1(), store.ErrSchemaTooNew, "version 2, the code at 1"},
		{"another service", schemaV1(), other, store.ErrServiceMismatch, `service "registry"'s, not "consent"'s`},
		{"retired migration", schemaV1(), v3, nil, "no migration from version 1 to 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.db")
			storetest.OpenAt(t, path, tt.written).Close()
			db, err := store.Open(store.Options{Path: path, Schema: tt.opened})
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Open = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Open = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestInvalidSchema(t *testing.T) {
	up := func(*bbolt.Tx) error { return nil }
	tests := []struct {
		name   string
		schema store.Schema
		want   string
	}{
		{"no service", store.Schema{Version: 1}, "service name is empty"},
		{"version 0", store.Schema{Service: "s"}, "versions start at 1"},
		{"reserved bucket", store.Schema{Service: "s", Version: 1, Buckets: []store.Bucket{store.Bucket("_mine")}}, "must be non-empty"},
		{"empty bucket", store.Schema{Service: "s", Version: 1, Buckets: []store.Bucket{{}}}, "must be non-empty"},
		{"gap", store.Schema{Service: "s", Version: 4, Migrations: []store.Migration{{2, up}, {4, up}}}, "not contiguous: version 4 follows 2"},
		{"out of order", store.Schema{Service: "s", Version: 3, Migrations: []store.Migration{{3, up}, {2, up}}}, "not contiguous"},
		{"short of version", store.Schema{Service: "s", Version: 4, Migrations: []store.Migration{{2, up}, {3, up}}}, "reaches version 3, schema is at 4"},
		{"to version 1", store.Schema{Service: "s", Version: 1, Migrations: []store.Migration{{1, up}}}, "versions start at 1"},
		{"nil Up", store.Schema{Service: "s", Version: 2, Migrations: []store.Migration{{2, nil}}}, "has no Up"},
		{"audited bucket not in the schema", store.Schema{Service: "s", Version: 1, Buckets: []store.Bucket{bucketThings},
			Audited: []store.Bucket{store.Bucket("others")}}, `audited bucket "others" is not one of the schema's buckets`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.db")
			db, err := store.Open(store.Options{Path: path, Schema: tt.schema})
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %q, want it to mention %q", err, tt.want)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("an invalid schema created the file (stat: %v)", err)
			}
		})
	}
}

func TestSecondOpenTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	storetest.OpenAt(t, path, schemaV1())

	start := time.Now()
	db, err := store.Open(store.Options{Path: path, Schema: schemaV1(), LockTimeout: 50 * time.Millisecond})
	if err == nil {
		db.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !errors.Is(err, berrors.ErrTimeout) || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("Open = %v, want a lock timeout", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Open took %v with a 50ms lock timeout", elapsed)
	}
}

func TestBatch(t *testing.T) {
	db := storetest.Open(t, schemaV1())
	const writers = 16
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			err := db.Batch(func(tx *bbolt.Tx) error {
				return store.BucketTx(tx, bucketThings).Put(store.Uint64Key(uint64(i)), nil)
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	err := db.View(func(tx *bbolt.Tx) error {
		if n := store.BucketTx(tx, bucketThings).Stats().KeyN; n != writers {
			return fmt.Errorf("%d keys after %d batched puts", n, writers)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBucketTxPanicsOnMissingBucket(t *testing.T) {
	db := storetest.Open(t, schemaV1())
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), `"undeclared"`) {
			t.Errorf("recovered %v, want a panic naming the bucket", r)
		}
	}()
	db.View(func(tx *bbolt.Tx) error {
		store.BucketTx(tx, store.Bucket("undeclared"))
		return nil
	})
}

// TestAppendBucketTxFillsPages appends the same entries, one small commit
// at a time, through BucketTx and AppendBucketTx: the appending bucket's
// pages must be nearly full, and it must take about half the pages.
func TestAppendBucketTxFillsPages(t *testing.T) {
	halvesB, wholeB := store.Bucket("halves"), store.Bucket("whole")
	db := storetest.Open(t, store.Schema{Service: "registry", Version: 1, Buckets: []store.Bucket{halvesB, wholeB}})
	value := make([]byte, 200)
	for commit := range 200 {
		err := db.Update(func(tx *bbolt.Tx) error {
			for i := range 20 {
				k := store.Uint64Key(uint64(commit*20 + i))
				if err := store.BucketTx(tx, halvesB).Put(k, value); err != nil {
					return err
				}
				if err := store.AppendBucketTx(tx, wholeB).Put(k, value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var halves, whole bbolt.BucketStats
	db.View(func(tx *bbolt.Tx) error {
		halves, whole = store.BucketTx(tx, halvesB).Stats(), store.BucketTx(tx, wholeB).Stats()
		return nil
	})
	fill := func(s bbolt.BucketStats) float64 { return float64(s.LeafInuse) / float64(s.LeafAlloc) }
	if f := fill(whole); f < 0.9 {
		t.Errorf("AppendBucketTx: leaf pages %.0f%% full, want at least 90%%", 100*f)
	}
	if whole.LeafPageN*3 > halves.LeafPageN*2 {
		t.Errorf("AppendBucketTx took %d leaf pages, BucketTx %d: want about half", whole.LeafPageN, halves.LeafPageN)
	}
}

func TestUint64Key(t *testing.T) {
	ns := []uint64{0, 1, 255, 256, 1 << 32, 1<<64 - 1}
	for i, n := range ns {
		k := store.Uint64Key(n)
		if len(k) != 8 || store.KeyUint64(k) != n {
			t.Errorf("Uint64Key(%d) = %x does not round-trip", n, k)
		}
		if i > 0 && string(store.Uint64Key(ns[i-1])) >= string(k) {
			t.Errorf("Uint64Key(%d) does not sort before Uint64Key(%d)", ns[i-1], n)
		}
	}
}

func TestTimeKey(t *testing.T) {
	epoch := time.Unix(0, 0)
	tests := []struct {
		name string
		t    time.Time
		want uint64
	}{
		{"epoch", epoch, 0},
		{"before 1970 clamps to 0", time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), 0},
		{"zero time clamps to 0", time.Time{}, 0},
		{"after 2262 clamps to max", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), 1<<63 - 1},
		{"ordinary", time.Unix(1_700_000_000, 5), 1_700_000_000_000_000_005},
		{"zone does not matter", time.Unix(1_700_000_000, 5).In(time.FixedZone("x", 3600)), 1_700_000_000_000_000_005},
	}
	for _, tt := range tests {
		if got := store.KeyUint64(store.TimeKey(tt.t)); got != tt.want {
			t.Errorf("%s: TimeKey(%v) = %d, want %d", tt.name, tt.t, got, tt.want)
		}
	}
}

// TestSplitKeyReadsWhatKeyJoined: SplitKey returns Key's ids, empty ones
// included, and refuses bytes that Key did not make.
func TestSplitKeyReadsWhatKeyJoined(t *testing.T) {
	for _, ids := range [][]string{{"clio"}, {"clio", "crm", "019a"}, {"clio", ""}, {""}} {
		got, ok := store.SplitKey(store.Key(ids...))
		if !ok || !slices.Equal(got, ids) {
			t.Errorf("SplitKey(Key(%q)) = %q, %v", ids, got, ok)
		}
	}
	for _, k := range []string{"", "clio", "clio\x00crm"} {
		if got, ok := store.SplitKey([]byte(k)); ok {
			t.Errorf("SplitKey(%q) = %q, want refused: no NUL ends it", k, got)
		}
	}
}
