package retention

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

// A signal acknowledged but not yet applied when the service stopped (a
// crash between the journal's commit and the applier's) is applied when it
// starts again, and the journal is left empty.
func TestJournaledSignalsSurviveARestart(t *testing.T) {
	deps := service.Deps{DataDir: t.TempDir(), Clock: clock.NewFake(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s, err := New(deps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	collectedAt := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	sig := &retentionv1.Signal{SubjectId: "ada", Kind: retentionv1.SignalKind_SIGNAL_KIND_COLLECTED,
		Categories: []*commonv1.DataCategory{{Id: "user.behavior.usage"}}, OccurredAt: timestamppb.New(collectedAt)}
	if err := s.journal.Update(func(tx *bolt.Tx) error { return s.journalTx(tx, "clicklearn", sig) }); err != nil {
		t.Fatal(err)
	}
	// Never run: nothing applied the signal before the stop.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	runUntilApplied(t, deps, collectedAt)
}

// A signal that a version before the journal had a file of its own left
// unapplied in retention.db is moved to the journal file and applied, and
// the old bucket is gone.
func TestLegacyJournalIsDrained(t *testing.T) {
	deps := service.Deps{DataDir: t.TempDir(), Clock: clock.NewFake(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s, err := New(deps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	collectedAt := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	body, err := proto.Marshal(&retentionv1.Signal{SubjectId: "ada", Kind: retentionv1.SignalKind_SIGNAL_KIND_COLLECTED,
		Categories: []*commonv1.DataCategory{{Id: "user.behavior.usage"}}, OccurredAt: timestamppb.New(collectedAt)})
	if err != nil {
		t.Fatal(err)
	}
	// The old layout: the journal bucket in retention.db.
	if err := s.DB.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketJournal)
		if err != nil {
			return err
		}
		return b.Put(store.Uint64Key(1), append([]byte("clicklearn\x00"), body...))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	runUntilApplied(t, deps, collectedAt)
}

// runUntilApplied starts the service on deps' files and waits until ada's
// collection at collectedAt is applied and no signal is left journaled, in
// either file.
func runUntilApplied(t *testing.T, deps service.Deps, collectedAt time.Time) {
	t.Helper()
	s, err := New(deps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	eventually.Succeeds(t, "the journal is replayed after the restart", func() error {
		var st *subjectState
		var pending int
		err := s.DB.View(func(tx *bolt.Tx) error {
			var err error
			st, _, err = s.loadTx(tx, "clicklearn", "ada")
			if tx.Bucket(bucketJournal) != nil {
				pending = -1 // the old bucket is still there
			}
			return err
		})
		if err == nil && pending == 0 {
			err = s.journal.View(func(tx *bolt.Tx) error {
				pending = store.BucketTx(tx, bucketJournal).Stats().KeyN
				return nil
			})
		}
		if err != nil {
			t.Fatal(err)
		}
		if !st.Collected["user.behavior.usage"].Equal(collectedAt) || pending != 0 {
			return fmt.Errorf("state %+v, %d journaled", st, pending)
		}
		return nil
	})
}
