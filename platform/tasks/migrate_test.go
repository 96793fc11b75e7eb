package tasks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/platform/tasks/taskstest"
)

// TestTasksInTheFirstKeyEncodingAreFollowedToFinal opens
// testdata/tasks-v1.db, written by the tracker before its keys became the
// kit's (store.Key), at schema version 1: cause dsar-open published to
// crm (SDK), ledger (answered by hand) and archive, which has answered,
// and cause dsar-none published to no system. After the schema's
// migrations every index finds the tasks again, and they are followed to
// final: crm is re-sent when due and answers over NATS, ledger is closed
// by its removal, and the cause completes with every answer. The file's
// tasks are JSON, as the tracker wrote them before version 3: those that
// change are rewritten in binary (archive's stays JSON), and the cause's
// completeness is read from both.
func TestTasksInTheFirstKeyEncodingAreFollowedToFinal(t *testing.T) {
	v1, err := os.ReadFile("testdata/tasks-v1.db")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "store.db")
	if err := os.WriteFile(path, v1, 0o600); err != nil {
		t.Fatal(err)
	}
	f := startWith(t, taskstest.Options{Path: path})

	if err := f.DB.View(func(tx *bolt.Tx) error {
		info, err := store.ReadFileInfoTx(tx)
		if err == nil && info.Version != 3 {
			err = fmt.Errorf("schema version %d, want 3", info.Version)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	open := &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "dsar-open"}
	all, published, err := f.Tracker.Fanout("clio", open)
	if err != nil || !published {
		t.Fatalf("dsar-open: published %v, %v", published, err)
	}
	states := map[string]tasks.State{}
	for _, task := range all {
		states[task.SystemID] = task.State
	}
	if want := (map[string]tasks.State{"archive": tasks.StateFinal, "crm": tasks.StateOpen, "ledger": tasks.StateOpen}); fmt.Sprint(states) != fmt.Sprint(want) {
		t.Fatalf("dsar-open's tasks by the cause index: %v, want %v", states, want)
	}
	none := &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "dsar-none"}
	if all, published, err := f.Tracker.Fanout("clio", none); err != nil || !published || len(all) != 0 {
		t.Fatalf("dsar-none, published to no system: %d tasks, published %v, %v; want its marker found", len(all), published, err)
	}

	// The re-send index: crm's event is due an hour after it was sent;
	// ledger, answered by hand, is never re-sent.
	f.Clock.Advance(time.Hour + time.Minute)
	if n, err := f.Tracker.Resend(context.Background()); err != nil || n != 1 {
		t.Fatalf("Resend: %d, %v; want crm's one event", n, err)
	}
	crm := f.waitTask(t, all[0].EventID, "crm", tasks.StateStalled)
	var ev *eventsv1.Event
	if err := f.DB.View(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		if ev, ok, err = f.Tracker.EventTx(tx, crm.EventID); err == nil && !ok {
			err = fmt.Errorf("event %s of an open task is missing", crm.EventID)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	f.answer(t, ev, "crm", "crm", eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)
	f.waitTask(t, ev.Id, "crm", tasks.StateFinal)

	// The system index: ledger's removal closes its open task, the last.
	if err := f.DB.Update(func(tx *bolt.Tx) error { return f.Tracker.CloseSystemTx(tx, "clio", "ledger") }); err != nil {
		t.Fatal(err)
	}
	if got, want := f.Completed(t, "dsar-open"), "archive=ERASED,crm=ERASED,ledger=NOT_APPLICABLE"; got != want {
		t.Fatalf("dsar-open completed with %q, want %q", got, want)
	}
}

// TestMigrateKeysRefusesAKeyOfNeitherShape: a key the first encoding
// could not have written fails the migration, and the open, rather than
// being carried over as a key no index reads.
func TestMigrateKeysRefusesAKeyOfNeitherShape(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	v1 := schema
	v1.Version, v1.Migrations = 1, nil
	db, err := store.Open(store.Options{Path: path, Schema: v1})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return store.BucketTx(tx, store.BucketTasksBySystem).Put([]byte("clio\x00crm"), nil) // no event id
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err := store.Open(store.Options{Path: path, Schema: schema}); err == nil {
		_ = db.Close()
		t.Fatal("a system index key without its event id migrated")
	}
	// The failed migration left the file at version 1.
	db, err = store.Open(store.Options{Path: path, Schema: v1})
	if err != nil {
		t.Fatalf("the file after a failed migration: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkMigrateKeys measures MigrateKeysTx over a file of 100,000
// tasks in the first encoding, each with its cause and system index
// entries and half with a re-send time: the cost of the open that
// migrates a large owner's file.
func BenchmarkMigrateKeys(b *testing.B) {
	const n = 100_000
	src := filepath.Join(b.TempDir(), "v1.db")
	raw, err := bolt.Open(src, 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	join := func(ids ...string) []byte {
		return bytes.Join(func() [][]byte { // the first encoding
			out := make([][]byte, len(ids))
			for i, id := range ids {
				out[i] = []byte(id)
			}
			return out
		}(), []byte{0})
	}
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	if err := raw.Update(func(tx *bolt.Tx) error {
		bks := map[string]*bolt.Bucket{}
		for _, name := range []store.Bucket{store.BucketTasks, store.BucketTasksByCause, store.BucketTasksBySystem, store.BucketTasksDue} {
			bk, err := tx.CreateBucket(name)
			if err != nil {
				return err
			}
			bks[string(name)] = bk
		}
		for i := range n {
			ev, sys, cause := fmt.Sprintf("019a%028d", i/4), fmt.Sprintf("system-%d", i%4), fmt.Sprintf("rule-%d", i/1000)
			v, err := json.Marshal(tasks.Task{EventID: ev, TenantID: "clio", SystemID: sys, CauseID: cause, State: tasks.StateOpen, CreatedAt: at, SentAt: at})
			if err != nil {
				return err
			}
			err = errors.Join(
				bks[string(store.BucketTasks)].Put(join(ev, sys), v),
				bks[string(store.BucketTasksByCause)].Put(join("clio", "CAUSE_KIND_RETENTION_RULE", cause, ev, sys), nil),
				bks[string(store.BucketTasksBySystem)].Put(join("clio", sys, ev), nil))
			if err == nil && i%2 == 0 {
				err = bks[string(store.BucketTasksDue)].Put(append(store.TimeKey(at.Add(time.Hour)), join(ev, sys)...), nil)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	if err := raw.Close(); err != nil {
		b.Fatal(err)
	}
	v1, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	// The peak of live heap during the migrations: the transaction holds
	// every rewritten page until it commits.
	var peak atomic.Uint64
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	runtime.GC()
	metrics.Read(sample)
	base := sample[0].Value.Uint64()
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > base && v-base > peak.Load() {
				peak.Store(v - base)
			}
		}
	})
	defer func() {
		close(stop)
		sampler.Wait()
		b.ReportMetric(float64(peak.Load())/1e6, "peak-heap-MB")
	}()
	for b.Loop() {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "store.db")
		if err := os.WriteFile(path, v1, 0o600); err != nil {
			b.Fatal(err)
		}
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := db.Update(tasks.MigrateKeysTx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
