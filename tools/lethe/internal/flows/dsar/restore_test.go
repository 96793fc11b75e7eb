package dsar_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"

	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// newsletterRows is the bucket of the restore test's system: one row per
// subject, in the file that also holds the system's ledger.
var newsletterRows = []byte("subscribers")

// newsletterSystem is a downstream system as sdk/examples/newsletter
// builds one: its data and its ledger share one bbolt file, and its
// erasure handler deletes the subject's row and records the answer in the
// same transaction.
type newsletterSystem struct {
	db   *bbolt.DB
	stop func()
}

// startNewsletter opens the system's file at path and, when replaySince is
// set, replays the erasure ledger from then, as a system restored from a
// backup does before it consumes again; then it runs the subscriber until
// stop. It returns what the replay did.
func (f *fixture) startNewsletter(t *testing.T, path string, replaySince time.Time) (*newsletterSystem, subscriber.ReplayResult) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucketIfNotExists(newsletterRows); return err }); err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(db, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	erase := func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
		var out subscriber.Outcome
		err := db.Update(func(tx *bbolt.Tx) error {
			out = subscriber.NotFound()
			scope := ev.Proto().GetErasureRequested().GetScope()
			inScope := scope.GetAll()
			for _, c := range scope.GetCategories() {
				inScope = inScope || contract.CategoryCovers(c.GetId(), "user.contact.email")
			}
			if b := tx.Bucket(newsletterRows); inScope && b.Get([]byte(ev.SubjectID())) != nil {
				if err := b.Delete([]byte(ev.SubjectID())); err != nil {
					return err
				}
				out = subscriber.Erased()
			}
			return ev.Record(tx, out)
		})
		return out, err
	}
	sub, err := subscriber.New(subscriber.Config{SystemID: "newsletter", Tenant: "clio", JetStream: f.deps.JetStream, Ledger: l, Logger: quiet,
		BackOff: []time.Duration{10 * time.Millisecond}, AckWait: time.Second,
		Handlers: map[contract.Kind]subscriber.Handler{contract.KindErasureRequested: erase}})
	if err != nil {
		t.Fatal(err)
	}
	var replayed subscriber.ReplayResult
	if !replaySince.IsZero() {
		if replayed, err = sub.ReplayErasures(context.Background(), replaySince); err != nil {
			t.Fatalf("replay the erasures since %s: %v", replaySince, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	s := &newsletterSystem{db: db}
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("newsletter: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("newsletter file: %v", err)
		}
	}
	t.Cleanup(s.stop)
	return s, replayed
}

func (s *newsletterSystem) subscribe(t *testing.T, subjects ...string) {
	t.Helper()
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, subject := range subjects {
			if err := tx.Bucket(newsletterRows).Put([]byte(subject), []byte(`{"email":"`+subject+`@example.com"}`)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (s *newsletterSystem) has(t *testing.T, subject string) bool {
	t.Helper()
	var found bool
	if err := s.db.View(func(tx *bbolt.Tx) error { found = tx.Bucket(newsletterRows).Get([]byte(subject)) != nil; return nil }); err != nil {
		t.Fatal(err)
	}
	return found
}

// outcomesOf returns how many outcomes the stream holds from system for
// tenant.
func (f *fixture) outcomesOf(t *testing.T, tenant, system string) uint64 {
	t.Helper()
	natsSubject, err := contract.OutcomeSubject(tenant, system)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := f.deps.JetStream.Stream(context.Background(), contract.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background(), jetstream.WithSubjectFilter(natsSubject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[natsSubject]
}

// waitSettled waits until system's erasure consumer for tenant has
// delivered everything and holds no delivery unanswered.
func (f *fixture) waitSettled(t *testing.T, system, tenant string) {
	t.Helper()
	name, err := contract.KindConsumerName(system, tenant, contract.KindErasureRequested)
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the "+name+" consumer settled", func() bool {
		c, err := f.deps.JetStream.Consumer(context.Background(), contract.StreamName, name)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// erase files a subject's erasure as the subject would, verifies it, and
// waits until every system answered.
func (f *fixture) erase(t *testing.T, subject string) {
	t.Helper()
	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clio", SubjectId: subject, Erasure: &dsarv1.ErasureDetails{}})
	f.attest(t, "clio", r.DsarId)
	f.waitState(t, "clio", r.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
}

// TestRestoreAfterErasure: a system restored from a backup taken before an
// erasure has the subject's data back, and its consumer has moved past the
// directive; replaying the erasure ledger from a little before the backup
// erases the subject again (Art. 17(1) GDPR: erased "without undue delay",
// which a restore must not undo), publishes no outcome twice, leaves a
// subject nobody asked to erase untouched, and keeps the data of a subject
// who was erased before the backup and signed up again: the restored
// ledger shows that erasure was applied before the backup.
func TestRestoreAfterErasure(t *testing.T) {
	f := start(t)
	f.tenant(t, "clio", nil)
	f.system(t, "clio", "newsletter", sdk, nil, "user.contact.email")
	path := filepath.Join(t.TempDir(), "newsletter.db")
	sys, _ := f.startNewsletter(t, path, time.Time{})
	sys.subscribe(t, "subject-ada", "subject-bob", "subject-carol")

	// The replay's margin before the backup reaches back past carol's
	// erasure, as the margin of minutes an operator gives can.
	since := time.Now()
	f.erase(t, "subject-carol")
	if sys.has(t, "subject-carol") {
		t.Fatal("carol's erasure left her row")
	}
	sys.subscribe(t, "subject-carol") // carol signs up again, with new data

	backup := path + ".backup"
	if err := sys.db.View(func(tx *bbolt.Tx) error { return tx.CopyFile(backup, 0o600) }); err != nil {
		t.Fatal(err) // a hot backup: one read transaction's snapshot, writers not blocked
	}

	f.erase(t, "subject-ada")
	if sys.has(t, "subject-ada") {
		t.Fatal("ada's erasure left her row")
	}
	// The ledger copies directives as the platform stream stores them,
	// moments later.
	eventually.True(t, "the erasure ledger holds both erasures", func() bool {
		s, err := f.deps.JetStream.Stream(context.Background(), contract.ErasureLedgerStream)
		return err == nil && s.CachedInfo().State.Msgs == 2
	})
	published := f.outcomesOf(t, "clio", "newsletter")
	if published != 2 {
		t.Fatalf("the newsletter published %d outcomes, want one per erasure", published)
	}

	// The system's volume is lost; its backup is restored.
	sys.stop()
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	restored, _ := f.startNewsletter(t, path, time.Time{})
	if !restored.has(t, "subject-ada") {
		t.Fatal("the restored backup does not hold ada: the test proves nothing")
	}
	// Consuming again does not bring the erasure back: the consumer has
	// nothing left to deliver.
	f.waitSettled(t, "newsletter", "clio")
	if !restored.has(t, "subject-ada") {
		t.Fatal("ada's erasure came back without the replay: the test proves nothing")
	}
	restored.stop()

	// Restored again, this time replaying the ledger before consuming.
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	restored, replayed := f.startNewsletter(t, path, since)
	if want := (subscriber.ReplayResult{Read: 2, Applied: 1, AlreadyApplied: 1}); replayed != want {
		t.Errorf("the replay = %+v, want %+v (ada erased again, carol's erasure known)", replayed, want)
	}
	if restored.has(t, "subject-ada") {
		t.Error("after the replay ada's row is back")
	}
	if !restored.has(t, "subject-bob") {
		t.Error("the replay erased bob, whom nobody asked to erase")
	}
	if !restored.has(t, "subject-carol") {
		t.Error("the replay erased carol's new sign-up, made after her erasure")
	}
	// The replay published nothing (a publish is stored before it
	// returns), and the consumer had nothing left to deliver.
	f.waitSettled(t, "newsletter", "clio")
	if got := f.outcomesOf(t, "clio", "newsletter"); got != published {
		t.Errorf("after the restore the newsletter published %d outcomes, want the %d of before", got, published)
	}
}
