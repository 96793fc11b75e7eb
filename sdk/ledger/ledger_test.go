package ledger

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// fakeClock moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func openTemp(t *testing.T, opts Options) *Ledger {
	t.Helper()
	l, err := Open(filepath.Join(t.TempDir(), "ledger.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func erasure(id string) *eventsv1.Event {
	return &eventsv1.Event{
		Id:         id,
		TenantId:   "clio",
		SubjectId:  "subject-42",
		Sequence:   1,
		Cause:      &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "req-7"},
		OccurredAt: timestamppb.New(t0),
		Source:     "lethe/dsar",
		Body: &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope: &eventsv1.Scope{All: true}, Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE,
		}},
	}
}

func restriction(id string, seq uint64, lifted bool) *eventsv1.Event {
	ev := erasure(id)
	ev.Source = "lethe/consent"
	ev.Sequence = seq
	if lifted {
		ev.Body = &eventsv1.Event_RestrictionLifted{RestrictionLifted: &eventsv1.RestrictionLifted{RestrictionId: "r-1"}}
	} else {
		ev.Body = &eventsv1.Event_RestrictionApplied{RestrictionApplied: &eventsv1.RestrictionApplied{
			RestrictionId: "r-1", Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED,
		}}
	}
	return ev
}

func outcome(ev *eventsv1.Event, kind eventsv1.OutcomeKind) *eventsv1.Outcome {
	return &eventsv1.Outcome{
		EventId:    ev.GetId(),
		TenantId:   ev.GetTenantId(),
		SystemId:   "newsletter",
		SubjectId:  ev.GetSubjectId(),
		Cause:      ev.GetCause(),
		Kind:       kind,
		ReportedAt: timestamppb.New(t0),
	}
}

func TestRecordAndLookup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ev := erasure("ev-1")
	if _, found, err := l.Lookup(ev.Id); err != nil || found {
		t.Fatalf("Lookup before Record = found %v, %v; want not found", found, err)
	}
	first := outcome(ev, eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)
	if stored, err := l.Record(ev, first); err != nil || !proto.Equal(stored, first) {
		t.Fatalf("Record = %v, %v; want %v", stored, err, first)
	}
	// A second answer to the same event does not replace the first: the
	// first describes what the system did.
	second := outcome(ev, eventsv1.OutcomeKind_OUTCOME_KIND_FAILED)
	second.Reason = "late"
	if stored, err := l.Record(ev, second); err != nil || !proto.Equal(stored, first) {
		t.Fatalf("second Record = %v, %v; want the first outcome %v", stored, err, first)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got, found, err := l.Lookup(ev.Id)
	if err != nil || !found || !proto.Equal(got, first) {
		t.Fatalf("Lookup after reopening = %v, %v, %v; want %v", got, found, err, first)
	}
}

func TestRecordRejectsMismatchedOutcome(t *testing.T) {
	l := openTemp(t, Options{})
	ev := erasure("ev-1")
	if _, err := l.Record(ev, outcome(erasure("ev-2"), eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)); err == nil {
		t.Error("Record of another event's outcome succeeded")
	}
	if _, err := l.Record(erasure(""), outcome(erasure(""), eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)); err == nil {
		t.Error("Record of an event without id succeeded")
	}
}

func TestRecordTxCommitsWithTheSideEffect(t *testing.T) {
	l := openTemp(t, Options{})
	effects := []byte("effects")
	ev := erasure("ev-1")
	o := outcome(ev, eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)

	apply := func() error {
		return l.DB().Update(func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(effects)
			if err != nil {
				return err
			}
			n, _ := b.NextSequence()
			if err := b.Put([]byte("count"), fmt.Appendf(nil, "%d", n)); err != nil {
				return err
			}
			return l.RecordTx(tx, ev, o)
		})
	}
	if err := apply(); err != nil {
		t.Fatal(err)
	}
	if err := apply(); !errors.Is(err, ErrRecorded) {
		t.Fatalf("second RecordTx = %v, want ErrRecorded", err)
	}
	err := l.DB().View(func(tx *bbolt.Tx) error {
		if got := string(tx.Bucket(effects).Get([]byte("count"))); got != "1" {
			t.Errorf("side effect applied %s times, want once", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, found, _ := l.Lookup(ev.Id); !found || !proto.Equal(got, o) {
		t.Errorf("Lookup = %v, %v; want %v", got, found, o)
	}

	other := openTemp(t, Options{})
	err = other.DB().Update(func(tx *bbolt.Tx) error { return l.RecordTx(tx, erasure("ev-2"), o) })
	if err == nil {
		t.Error("RecordTx on another database's transaction succeeded")
	}
	err = l.DB().View(func(tx *bbolt.Tx) error { return l.RecordTx(tx, ev, o) })
	if err == nil {
		t.Error("RecordTx in a read-only transaction succeeded")
	}
}

func TestSuperseded(t *testing.T) {
	l := openTemp(t, Options{})
	lifted := restriction("ev-2", 2, true)
	if _, err := l.Record(lifted, outcome(lifted, eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED)); err != nil {
		t.Fatal(err)
	}

	older := restriction("ev-1", 1, false)
	newer := restriction("ev-3", 3, false)
	otherRestriction := restriction("ev-4", 1, false)
	otherRestriction.GetRestrictionApplied().RestrictionId = "r-2"
	otherSource := restriction("ev-5", 1, false)
	otherSource.Source = "lethe/dsar"
	otherSubject := restriction("ev-6", 1, false)
	otherSubject.SubjectId = "subject-43"
	for _, tc := range []struct {
		ev   *eventsv1.Event
		want bool
	}{
		{older, true},
		{newer, false},
		{lifted, false}, // its own sequence is not newer than itself
		{otherRestriction, false},
		{otherSource, false},
		{otherSubject, false},
		{erasure("ev-7"), false},
	} {
		if got, err := l.Superseded(tc.ev); err != nil || got != tc.want {
			t.Errorf("Superseded(%s) = %v, %v; want %v", tc.ev.Id, got, err, tc.want)
		}
	}

	err := l.DB().Update(func(tx *bbolt.Tx) error {
		return l.RecordTx(tx, older, outcome(older, eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED))
	})
	if !errors.Is(err, ErrSuperseded) {
		t.Errorf("RecordTx of a superseded event = %v, want ErrSuperseded", err)
	}
	// Record keeps the answer the SDK gives a superseded event, and the
	// mark stays at the higher sequence.
	if _, err := l.Record(older, outcome(older, eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE)); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.Superseded(restriction("ev-8", 1, true)); !got {
		t.Error("recording an older event lowered the restriction's mark")
	}
}

func TestSweepExpiresByRecordingTime(t *testing.T) {
	clock := &fakeClock{now: t0}
	l := openTemp(t, Options{Retention: 30 * 24 * time.Hour, Now: clock.Now})
	ctx := context.Background()
	record := func(ev *eventsv1.Event) {
		t.Helper()
		if _, err := l.Record(ev, outcome(ev, eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED)); err != nil {
			t.Fatal(err)
		}
	}
	found := func(id string) bool {
		t.Helper()
		_, ok, err := l.Lookup(id)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	record(restriction("applied", 1, false)) // day 0
	clock.Advance(10 * 24 * time.Hour)
	record(restriction("lifted", 2, true)) // day 10: raises the mark
	record(erasure("erased"))

	clock.Advance(20 * 24 * time.Hour) // day 30: nothing is older than 30 days
	if n, err := l.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep at day 30 = %d, %v; want 0", n, err)
	}

	clock.Advance(time.Hour) // day 30 and an hour: "applied" expires
	if n, err := l.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("Sweep after day 30 = %d, %v; want 1", n, err)
	}
	if found("applied") || !found("lifted") || !found("erased") {
		t.Errorf("after the first sweep: applied %v, lifted %v, erased %v; want only applied gone",
			found("applied"), found("lifted"), found("erased"))
	}
	// The mark was raised on day 10, so it outlives the first record.
	if s, _ := l.Superseded(restriction("late", 1, false)); !s {
		t.Error("the restriction mark expired with the first record, not with its last raise")
	}

	clock.Advance(10 * 24 * time.Hour) // day 40
	if n, err := l.Sweep(ctx); err != nil || n != 3 {
		t.Fatalf("Sweep at day 40 = %d, %v; want 3 (two records, one mark)", n, err)
	}
	if found("lifted") || found("erased") {
		t.Error("records older than the retention survived the sweep")
	}
	if s, _ := l.Superseded(restriction("late", 1, false)); s {
		t.Error("the restriction mark survived the sweep")
	}
	assertEmpty(t, l)
}

func TestSweepInBatches(t *testing.T) {
	clock := &fakeClock{now: t0}
	l := openTemp(t, Options{Retention: time.Hour, Now: clock.Now})
	const n = 2*sweepBatch + 10
	// One transaction for all: a commit per record would make the test
	// slow for no gain.
	err := l.DB().Update(func(tx *bbolt.Tx) error {
		for i := range n {
			ev := erasure(fmt.Sprintf("ev-%d", i))
			if err := l.RecordTx(tx, ev, outcome(ev, eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	if got, err := l.Sweep(context.Background()); err != nil || got != n {
		t.Fatalf("Sweep = %d, %v; want %d", got, err, n)
	}
	assertEmpty(t, l)
}

func TestSweepStopsWithTheContext(t *testing.T) {
	l := openTemp(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Sweep(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Sweep with an ended context = %v, want context.Canceled", err)
	}
}

// assertEmpty checks that no bucket of l holds an entry: the indexes and
// the entries they point to were deleted together.
func assertEmpty(t *testing.T, l *Ledger) {
	t.Helper()
	err := l.DB().View(func(tx *bbolt.Tx) error {
		b := bucketsOf(tx)
		for name, bucket := range map[string]*bbolt.Bucket{
			"outcomes": b.outcomes, "outcomes_by_time": b.outcomesByTime,
			"marks": b.marks, "marks_by_time": b.marksByTime,
		} {
			if n := bucket.Stats().KeyN; n != 0 {
				t.Errorf("bucket %s holds %d entries, want none", name, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNewRefusesUnknownSchema(t *testing.T) {
	l := openTemp(t, Options{})
	err := l.DB().Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketRoot).Put(keySchema, []byte{0, 0, 0, 0, 0, 0, 0, 2})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(l.DB(), Options{}); err == nil {
		t.Error("New accepted a ledger of schema version 2")
	}
}

func TestNewRefusesNegativeRetention(t *testing.T) {
	l := openTemp(t, Options{})
	if _, err := New(l.DB(), Options{Retention: -time.Hour}); err == nil {
		t.Error("New accepted a negative retention")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	o := outcome(erasure("ev-1"), eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED)
	o.Retained = []*eventsv1.Retention{{
		LegalBasis:  commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION,
		BasisDetail: "Swedish Accounting Act (1999:1078), ch. 7 § 2",
		Until:       timestamppb.New(t0.AddDate(7, 0, 0)),
	}}
	rec, err := encodeRecord(t0, o)
	if err != nil {
		t.Fatal(err)
	}
	at, got, err := decodeRecord(rec)
	if err != nil || !at.Equal(t0) || !proto.Equal(got, o) {
		t.Fatalf("decodeRecord(encodeRecord) = %v, %v, %v; want %v, %v", at, got, err, t0, o)
	}
	for _, bad := range [][]byte{nil, {recordVersion}, append([]byte{2}, rec[1:]...), append(rec[:recordHeader:recordHeader], 0xff)} {
		if _, _, err := decodeRecord(bad); err == nil {
			t.Errorf("decodeRecord(%x) succeeded", bad)
		}
	}
}

// FuzzDecodeRecord holds the record decoder to never panic on a corrupt
// file, and to read back exactly what it accepts.
func FuzzDecodeRecord(f *testing.F) {
	o := outcome(erasure("ev-1"), eventsv1.OutcomeKind_OUTCOME_KIND_FAILED)
	o.Reason = "gave up after 10 deliveries: connection refused"
	rec, err := encodeRecord(t0, o)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec)
	f.Add([]byte{recordVersion, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, rec []byte) {
		at, o, err := decodeRecord(rec)
		if err != nil {
			return
		}
		again, err := encodeRecord(at, o)
		if err != nil {
			t.Fatalf("encode what was decoded: %v", err)
		}
		at2, o2, err := decodeRecord(again)
		if err != nil || !at2.Equal(at) || !proto.Equal(o2, o) {
			t.Fatalf("round trip: %v, %v, %v; want %v, %v", at2, o2, err, at, o)
		}
	})
}

// TestOpenNamesTheLock: a ledger file held by a running system is refused
// within the lock timeout, with an error that says why.
func TestOpenNamesTheLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	first, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := Open(path, Options{})
	if err == nil {
		second.Close()
		t.Fatal("a second Open of a locked ledger succeeded")
	}
	if !errors.Is(err, bolterrors.ErrTimeout) || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("Open = %v, want a lock timeout that names the lock", err)
	}
}
