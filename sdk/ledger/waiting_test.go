package ledger

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// An event answered later waits with its first deadline, survives a
// reopen, is overdue once the deadline passed, and stops waiting when it
// is done; an event already answered never waits.
func TestWaitingEvents(t *testing.T) {
	dir := t.TempDir() + "/ledger.db"
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ev, answered := erasure("ev-1"), erasure("ev-2")
	if err := l.Wait(ev, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A redelivery answered 202 again does not postpone the deadline.
	if err := l.Wait(ev, t0.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Record(answered, outcome(answered, eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)); err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(answered, t0); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	got, until, ok, err := l2.Waiting("ev-1")
	if err != nil || !ok || !proto.Equal(got, ev) || !until.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Waiting(ev-1) = %v %s %v %v, want the event until %s", got, until, ok, err, t0.Add(time.Hour))
	}
	if _, _, ok, _ := l2.Waiting("ev-2"); ok {
		t.Error("an answered event is waiting")
	}
	if over, err := l2.Overdue(t0.Add(time.Hour), 10); err != nil || len(over) != 0 {
		t.Errorf("Overdue at the deadline = %v %v, want none", over, err)
	}
	if over, err := l2.Overdue(t0.Add(time.Hour+time.Nanosecond), 10); err != nil || len(over) != 1 || over[0].GetId() != "ev-1" {
		t.Errorf("Overdue after the deadline = %v %v, want ev-1", over, err)
	}
	if err := l2.Done("ev-1"); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, _ := l2.Waiting("ev-1"); ok {
		t.Error("ev-1 still waits after Done")
	}
}
