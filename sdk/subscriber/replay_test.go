package subscriber_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// setupLedger starts a server with the LETHE stream and the erasure ledger
// as platform/broker provisions it: a stream sourcing LETHE's erasure
// directives of every tenant.
func setupLedger(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, _, js := sdktest.Stream(t)
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name:       contract.ErasureLedgerStream,
		Sources:    []*jetstream.StreamSource{{Name: contract.StreamName, FilterSubject: "lethe.*.erasure.requested"}},
		Storage:    jetstream.FileStorage,
		MaxAge:     400 * 24 * time.Hour,
		Duplicates: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// rows is a system's data: one row per subject, in the same bbolt file
// as its ledger, erased with the ledger's record in one transaction.
type rows struct {
	path string
	db   *bbolt.DB
	l    *ledger.Ledger
}

var bucketRows = []byte("rows")

func openRows(t *testing.T, path string) *rows {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bucketRows); return err }); err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(db, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rows{path: path, db: db, l: l}
	t.Cleanup(func() { _ = r.db.Close() })
	return r
}

func (r *rows) put(t *testing.T, subjects ...string) {
	t.Helper()
	err := r.db.Update(func(tx *bbolt.Tx) error {
		for _, s := range subjects {
			if err := tx.Bucket(bucketRows).Put([]byte(s), []byte("row of "+s)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (r *rows) has(t *testing.T, subject string) bool {
	t.Helper()
	var found bool
	if err := r.db.View(func(tx *bbolt.Tx) error { found = tx.Bucket(bucketRows).Get([]byte(subject)) != nil; return nil }); err != nil {
		t.Fatal(err)
	}
	return found
}

// erase is the system's erasure handler: delete the row and record the
// answer in one transaction.
func (r *rows) erase(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
	var out subscriber.Outcome
	err := r.db.Update(func(tx *bbolt.Tx) error {
		out = subscriber.NotFound()
		if b := tx.Bucket(bucketRows); b.Get([]byte(ev.SubjectID())) != nil {
			if err := b.Delete([]byte(ev.SubjectID())); err != nil {
				return err
			}
			out = subscriber.Erased()
		}
		return ev.Record(tx, out)
	})
	return out, err
}

// backup writes a hot copy of the file, as platform/store's backup does.
func (r *rows) backup(t *testing.T) string {
	t.Helper()
	path := r.path + ".backup"
	if err := r.db.View(func(tx *bbolt.Tx) error { return tx.CopyFile(path, 0o600) }); err != nil {
		t.Fatal(err)
	}
	return path
}

// restore stops using the file, replaces it with backup and opens it again.
func (r *rows) restore(t *testing.T, backup string) {
	t.Helper()
	if err := r.db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	*r = *openRows(t, r.path)
}

func erasureOf(id, tenantID, subject string) *eventsv1.Event {
	ev := newEvent(id, contract.KindErasureRequested, 0)
	ev.TenantId, ev.SubjectId = tenantID, subject
	return ev
}

// TestReplayErasuresAfterARestore: a system restored from a backup taken
// between two erasures replays the erasure ledger from a little before the
// backup: the subject erased after the backup is erased again, the one
// erased before it is recognised from the restored ledger, another
// tenant's erasure and a withdrawal are not handed over, and no outcome is
// published again.
func TestReplayErasuresAfterARestore(t *testing.T) {
	js := setupLedger(t)
	r := openRows(t, filepath.Join(t.TempDir(), "system.db"))
	r.put(t, "ada", "bob", "eve")
	handlers := func(r *rows) map[contract.Kind]subscriber.Handler {
		return map[contract.Kind]subscriber.Handler{
			contract.KindErasureRequested: r.erase,
			contract.KindConsentWithdrawn: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
				return subscriber.Applied(), nil
			},
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := subscriber.New(config(t, js, r.l, handlers(r)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	outcomes := contract.AllOutcomes

	// The margin before the backup reaches back past ada's erasure, which
	// the backup holds.
	since := time.Now()
	publish(t, js, erasureOf("erase-ada", tenant, "ada"), "")
	sdktest.WaitOutcomes(t, js, outcomes, 1)
	backup := r.backup(t)
	publish(t, js, erasureOf("erase-bob", tenant, "bob"), "")
	withdrawal := newEvent("withdraw-eve", contract.KindConsentWithdrawn, 1)
	withdrawal.SubjectId = "eve"
	publish(t, js, withdrawal, "")
	sdktest.WaitOutcomes(t, js, outcomes, 3)
	publish(t, js, erasureOf("erase-other", "cleura", "eve"), "")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.has(t, "ada") || r.has(t, "bob") || !r.has(t, "eve") {
		t.Fatal("before the restore, ada and bob should be erased and eve kept")
	}
	eventually.True(t, "the ledger to copy the three erasures", func() bool {
		s, err := js.Stream(context.Background(), contract.ErasureLedgerStream)
		return err == nil && s.CachedInfo().State.Msgs == 3
	})

	r.restore(t, backup)
	if !r.has(t, "bob") {
		t.Fatal("the backup does not hold bob: the test proves nothing")
	}
	sub, err = subscriber.New(config(t, js, r.l, handlers(r)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := sub.ReplayErasures(context.Background(), since)
	if err != nil {
		t.Fatalf("ReplayErasures: %v", err)
	}
	if want := (subscriber.ReplayResult{Read: 2, Applied: 1, AlreadyApplied: 1}); res != want {
		t.Errorf("ReplayErasures = %+v, want %+v", res, want)
	}
	if r.has(t, "ada") || r.has(t, "bob") || !r.has(t, "eve") {
		t.Errorf("after the replay: ada %v, bob %v, eve %v; want only eve", r.has(t, "ada"), r.has(t, "bob"), r.has(t, "eve"))
	}
	// The replay's answer is in the ledger, for a delivery the durable
	// consumer may still owe, and nothing was published.
	if o, found, err := r.l.Lookup("erase-bob"); err != nil || !found || o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
		t.Errorf("ledger entry of erase-bob = %v, %v, %v; want ERASED", o, found, err)
	}
	if got := sdktest.Outcomes(t, js, outcomes); len(got) != 3 {
		t.Errorf("%d outcomes stored after the replay, want the 3 of before", len(got))
	}
	name, _ := contract.ReplayConsumerName(system, tenant)
	if _, err := js.Consumer(context.Background(), contract.ErasureLedgerStream, name); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("the replay consumer is left behind: %v", err)
	}

	// Running it again changes nothing: both erasures are now recorded.
	res, err = sub.ReplayErasures(context.Background(), since)
	if want := (subscriber.ReplayResult{Read: 2, AlreadyApplied: 2}); err != nil || res != want {
		t.Errorf("second ReplayErasures = %+v, %v; want %+v", res, err, want)
	}
	// Since after both erasures there is nothing to replay.
	if res, err := sub.ReplayErasures(context.Background(), time.Now()); err != nil || res.Read != 0 {
		t.Errorf("ReplayErasures since now = %+v, %v; want nothing read", res, err)
	}
}

// TestReplayErasuresGoesPastAFailure: an erasure whose handler fails is
// named in the error, the others are applied, and the failed one is not
// recorded, so that a replay run again once the cause is fixed applies
// it.
func TestReplayErasuresGoesPastAFailure(t *testing.T) {
	js := setupLedger(t)
	r := openRows(t, filepath.Join(t.TempDir(), "system.db"))
	r.put(t, "ada", "bob")
	since := time.Now()
	publish(t, js, erasureOf("erase-ada", tenant, "ada"), "")
	publish(t, js, erasureOf("erase-bob", tenant, "bob"), "")
	broken := true
	sub, err := subscriber.New(config(t, js, r.l, map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			if ev.SubjectID() == "ada" && broken {
				return subscriber.Outcome{}, errors.New("the database is read-only")
			}
			return r.erase(ctx, ev)
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the ledger to copy both erasures", func() bool {
		s, err := js.Stream(context.Background(), contract.ErasureLedgerStream)
		return err == nil && s.CachedInfo().State.Msgs == 2
	})
	res, err := sub.ReplayErasures(context.Background(), since)
	if err == nil || !strings.Contains(err.Error(), "erase-ada") || !strings.Contains(err.Error(), "read-only") ||
		res != (subscriber.ReplayResult{Read: 2, Applied: 1}) {
		t.Fatalf("ReplayErasures with ada's erasure failing = %+v, %v", res, err)
	}
	if !r.has(t, "ada") || r.has(t, "bob") {
		t.Fatalf("after a failed replay: ada %v, bob %v; want ada kept, bob erased", r.has(t, "ada"), r.has(t, "bob"))
	}
	broken = false
	res, err = sub.ReplayErasures(context.Background(), since)
	if err != nil || res != (subscriber.ReplayResult{Read: 2, Applied: 1, AlreadyApplied: 1}) || r.has(t, "ada") {
		t.Fatalf("the replay run again = %+v, %v; ada kept %v", res, err, r.has(t, "ada"))
	}
}

// TestReplayErasuresRefuses: a replay from before the ledger could have
// recorded every erasure, or from an unset time, is refused rather than
// run incomplete; so is one for a system that answers no erasures.
func TestReplayErasuresRefuses(t *testing.T) {
	js := setupLedger(t)
	provisioned := time.Now()
	r := openRows(t, filepath.Join(t.TempDir(), "system.db"))
	sub, err := subscriber.New(config(t, js, r.l, map[contract.Kind]subscriber.Handler{contract.KindErasureRequested: r.erase}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The test's LETHE stream keeps an hour: the ledger, provisioned now,
	// copied at most the last hour's erasures.
	if _, err := sub.ReplayErasures(ctx, time.Now().Add(-2*time.Hour)); !errors.Is(err, subscriber.ErrReplayUncovered) {
		t.Errorf("a replay from before the ledger's reach = %v, want ErrReplayUncovered", err)
	}
	if _, err := sub.ReplayErasures(ctx, time.Now().Add(-500*24*time.Hour)); !errors.Is(err, subscriber.ErrReplayUncovered) ||
		!strings.Contains(err.Error(), "keeps erasures") {
		t.Errorf("a replay from beyond the ledger's max age = %v, want ErrReplayUncovered", err)
	}
	for _, since := range []time.Time{{}, time.Now().Add(time.Hour)} {
		if _, err := sub.ReplayErasures(ctx, since); err == nil {
			t.Errorf("a replay since %v was accepted", since)
		}
	}
	// A replay of the same system and tenant already running holds the
	// consumer name: a second one does not share, and split, its
	// directives.
	name, _ := contract.ReplayConsumerName(system, tenant)
	if _, err := js.CreateConsumer(ctx, contract.ErasureLedgerStream, jetstream.ConsumerConfig{
		Name: name, Description: "a replay started elsewhere", FilterSubject: "lethe.clio.erasure.requested",
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.ReplayErasures(ctx, provisioned); !errors.Is(err, jetstream.ErrConsumerExists) ||
		!strings.Contains(err.Error(), "another replay") {
		t.Errorf("a second replay at once = %v, want it refused", err)
	}
	limits, err := subscriber.New(config(t, js, r.l, map[contract.Kind]subscriber.Handler{
		contract.KindConsentWithdrawn: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) { return subscriber.Applied(), nil },
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := limits.ReplayErasures(ctx, provisioned); err == nil || !strings.Contains(err.Error(), "no handler") {
		t.Errorf("a replay without an erasure handler = %v", err)
	}
}
