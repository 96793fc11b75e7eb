package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// TestNewsletter runs the example's handlers against a real server: the
// documentation must work.
func TestNewsletter(t *testing.T) {
	_, _, js := sdktest.Stream(t)

	db, err := bbolt.Open(filepath.Join(t.TempDir(), "newsletter.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the subscriber stops (cleanups run last first).
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket(bucketSubscribers); return err }); err != nil {
		t.Fatal(err)
	}
	for _, seed := range []string{"ada=ada@example.com", "bob=bob@example.com"} {
		if err := subscribe(db, seed); err != nil {
			t.Fatal(err)
		}
	}
	l, err := ledger.New(db, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &newsletter{db: db, purposes: []string{"newsletter"}}
	sdktest.Run(t, subscriber.Config{
		SystemID: systemID, Tenant: "clio", JetStream: js, Ledger: l,
		Handlers: map[contract.Kind]subscriber.Handler{
			contract.KindErasureRequested: n.erase,
			contract.KindConsentWithdrawn: n.withdraw,
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})

	erase := func(subject string, scope *eventsv1.Scope) *eventsv1.Event {
		ev := event(subject)
		ev.Body = &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope: scope, Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE,
		}}
		return ev
	}
	withdraw := func(subject string, purposes ...string) *eventsv1.Event {
		ev := event(subject)
		ev.Body = &eventsv1.Event_ConsentWithdrawn{ConsentWithdrawn: &eventsv1.ConsentWithdrawn{PurposeIds: purposes}}
		return ev
	}
	all := &eventsv1.Scope{All: true}
	for _, tc := range []struct {
		name string
		ev   *eventsv1.Event
		want eventsv1.OutcomeKind
	}{
		{"erase ada", erase("ada", all), eventsv1.OutcomeKind_OUTCOME_KIND_ERASED},
		{"erase ada again", erase("ada", all), eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND},
		{"erase only bob's phone number", erase("bob", &eventsv1.Scope{Categories: []*commonv1.DataCategory{{Id: "user.contact.phone_number"}}}), eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND},
		{"bob withdraws analytics", withdraw("bob", "analytics"), eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE},
		{"bob withdraws the newsletter", withdraw("bob", "analytics", "newsletter"), eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED},
		{"ada withdraws the newsletter", withdraw("ada", "newsletter"), eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE},
	} {
		if got := answer(t, js, tc.ev); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}

	err = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketSubscribers)
		if b.Get([]byte("ada")) != nil {
			t.Error("ada is still subscribed")
		}
		var bob subscription
		if err := json.Unmarshal(b.Get([]byte("bob")), &bob); err != nil {
			return err
		}
		if bob.Mailing || bob.Email != "bob@example.com" {
			t.Errorf("bob = %+v, want kept with mailing off", bob)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var seq uint64

// event returns an event about subject, without a body.
func event(subject string) *eventsv1.Event {
	seq++
	return &eventsv1.Event{
		Id: fmt.Sprintf("ev-%d", seq), TenantId: "clio", SubjectId: subject, Sequence: seq,
		Cause:      &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "req-1"},
		OccurredAt: timestamppb.Now(), Source: "lethe/dsar",
	}
}

// answer publishes ev and returns the newsletter's outcome.
func answer(t *testing.T, js jetstream.JetStream, ev *eventsv1.Event) eventsv1.OutcomeKind {
	t.Helper()
	sdktest.Publish(t, js, sdktest.EventMsg(t, ev))
	return sdktest.WaitOutcome(t, js, "clio", systemID, ev.GetId()).GetKind()
}
