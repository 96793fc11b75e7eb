package retention_test

import (
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/retention"
)

// counter reads an integer counter of the retention service, by the value
// of one attribute (all points when key is empty).
func (f *fixture) counter(t testing.TB, name, key, value string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := f.metrics.Collect(f.ctx, &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
				for _, p := range s.DataPoints {
					if v, ok := p.Attributes.Value(attribute.Key(key)); key == "" || ok && v.AsString() == value {
						n += p.Value
					}
				}
			}
		}
	}
	return n
}

// offline stops the retention service, lets fn change its two bbolt files
// as they lie on disk, and starts it again on them.
func (f *fixture) offline(t *testing.T, fn func(db, journal *bolt.DB)) {
	t.Helper()
	f.stopSvc()
	db, err := bolt.Open(filepath.Join(f.dataDir, "retention.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	journal, err := bolt.Open(filepath.Join(f.dataDir, "retention-journal.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	fn(db, journal)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := journal.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t)
}

// journalRaw appends entries to the journal file as RecordSignal would
// have, before any check refused them.
func journalRaw(t *testing.T, journal *bolt.DB, entries ...[]byte) {
	t.Helper()
	if err := journal.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("retention.signal_journal"))
		for _, e := range entries {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(store.Uint64Key(seq), e); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func journalEntry(t *testing.T, tenant string, sig *retentionv1.Signal) []byte {
	t.Helper()
	body, err := proto.Marshal(sig)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(tenant+"\x00"), body...)
}

func collectedSignal(subject string, at *timestamppb.Timestamp) *retentionv1.Signal {
	return &retentionv1.Signal{SubjectId: subject, Kind: collected,
		Categories: []*commonv1.DataCategory{{Id: "user.behavior.usage"}}, OccurredAt: at}
}

// One signal dated at the minimum int64 second used to make the applier
// fail at every pass (Time.MarshalJSON: year outside of range), so that no
// tenant was purged any more, every explanation and preview answered
// Internal, and a restart changed nothing. The edge refuses such a time
// now; one already journaled (or written around the edge), an entry that
// does not decode, and a subject whose record no longer decodes are parked,
// counted and logged, and every other tenant's signals are applied and
// purged.
func TestPoisonedItemsAreParkedAndEveryoneElseIsPurged(t *testing.T) {
	f := startWith(t, true)
	const usage = "user.behavior.usage"
	for _, tenant := range []string{"clicklearn", "clevio"} {
		f.tenant(t, tenant)
		f.system(t, tenant, "lms-"+tenant, erased, usage)
		f.rule(t, tenant, &retentionv1.Rule{RuleId: "usage", Category: &commonv1.DataCategory{Id: usage},
			Triggers: []*retentionv1.Trigger{trigger(sinceCollected, "", "P1Y")}, Action: erase, Basis: "A year"})
	}
	f.signal(t, "clicklearn", "ada", collected, "", day(2025, 1, 1), usage)
	f.wantPurgeAt(t, "clicklearn", "ada", usage, day(2026, 1, 1))

	// The edge refuses the time, naming the field.
	_, err := f.retention.RecordSignal(f.ctx, &retentionv1.RecordSignalRequest{RequestId: f.id(), TenantId: "clicklearn",
		Signal: collectedSignal("mallory", &timestamppb.Timestamp{Seconds: math.MinInt64})})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a signal at the minimum int64 second = %v, want InvalidArgument", err)
	}

	// Written around the edge, as a version before it did: poisoned
	// journal entries between good ones, and a subject record that does
	// not decode, due before the sweep, with a good signal for it.
	f.offline(t, func(db, journal *bolt.DB) {
		journalRaw(t, journal,
			journalEntry(t, "clevio", collectedSignal("s0", timestamppb.New(day(2025, 2, 1)))),
			journalEntry(t, "clicklearn", collectedSignal("mallory", &timestamppb.Timestamp{Seconds: math.MinInt64})),
			journalEntry(t, "clicklearn", collectedSignal("mallory", timestamppb.New(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)))),
			[]byte("clevio\x00\xff\xff not a signal"),
			journalEntry(t, "clevio", collectedSignal("s1", timestamppb.New(day(2025, 3, 1)))),
			journalEntry(t, "clicklearn", collectedSignal("zed", timestamppb.New(day(2025, 4, 1)))))
		if err := db.Update(func(tx *bolt.Tx) error {
			return retention.ScheduleTx(tx, store.Key("clicklearn", "zed"), day(2025, 6, 1), []byte("{not json"))
		}); err != nil {
			t.Fatal(err)
		}
	})

	// Every other signal is applied, and readers answer for every tenant.
	f.wantPurgeAt(t, "clevio", "s0", usage, day(2026, 2, 1))
	f.wantPurgeAt(t, "clevio", "s1", usage, day(2026, 3, 1))
	f.wantPurgeAt(t, "clicklearn", "ada", usage, day(2026, 1, 1))
	if _, err := f.retention.ExplainSubject(f.ctx, &retentionv1.ExplainSubjectRequest{TenantId: "clicklearn", SubjectId: "mallory"}); status.Code(err) != codes.NotFound {
		t.Fatalf("explain the subject of parked signals only = %v, want NotFound: nothing was applied", err)
	}
	preview, err := f.retention.PreviewPurges(f.ctx, &retentionv1.PreviewPurgesRequest{TenantId: "clevio",
		Until: timestamppb.New(day(2027, 1, 1)), SampleSize: 10})
	if err != nil || len(preview.Rules) != 1 || !slices.Equal(preview.Rules[0].SampleSubjectIds, []string{"s0", "s1"}) {
		t.Fatalf("preview = %v, %v; want s0 and s1 purged", preview, err)
	}
	// The unreadable record does not hide its tenant's other subjects.
	preview, err = f.retention.PreviewPurges(f.ctx, &retentionv1.PreviewPurgesRequest{TenantId: "clicklearn",
		Until: timestamppb.New(day(2027, 1, 1)), SampleSize: 10})
	if err != nil || len(preview.Rules) != 1 || !slices.Equal(preview.Rules[0].SampleSubjectIds, []string{"ada"}) || preview.SubjectsEvaluated != 1 {
		t.Fatalf("preview beside an unreadable record = %v, %v; want ada purged", preview, err)
	}
	if n := f.counter(t, "lethe.retention.parked", "kind", "signal"); n != 4 {
		t.Fatalf("parked signals counted %d, want 4", n)
	}

	// The sweep purges everyone due, and parks the subject it cannot read.
	if n := f.sweepAt(t, day(2027, 1, 1)); n != 3 {
		t.Fatalf("sweep fired %d subjects, want ada, s0 and s1", n)
	}
	wantDirectives(t, f.directives(t, 3),
		"lms-clevio s0 usage ERASE [user.behavior.usage]",
		"lms-clevio s1 usage ERASE [user.behavior.usage]",
		"lms-clicklearn ada usage ERASE [user.behavior.usage]")
	if n := f.counter(t, "lethe.retention.parked", "kind", "subject"); n != 1 {
		t.Fatalf("parked subjects counted %d, want 1", n)
	}
	if n := f.sweepAt(t, day(2027, 1, 2)); n != 0 {
		t.Fatalf("a second sweep fired %d", n)
	}

	// A restart finds nothing left to fail on, and the parked items where
	// an operator looks: under their tenant and subject, with the error.
	f.restart(t)
	f.wantPurgeAt(t, "clevio", "s1", usage, day(2026, 3, 1))
	if n := f.counter(t, "lethe.retention.parked", "", ""); n != 0 {
		t.Fatalf("after the restart %d items were parked again", n)
	}
	parked := map[string]string{}
	f.offline(t, func(db, _ *bolt.DB) {
		if err := db.View(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("retention.parked")).ForEach(func(k, v []byte) error {
				var item struct{ Kind, Error string }
				if err := json.Unmarshal(v, &item); err != nil {
					return err
				}
				parked[string(k)] = item.Kind + ": " + item.Error
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
	})
	var keys []string
	for k := range parked {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{
		"clevio\x00\x00signal\x0000000000000000000005\x00",
		"clicklearn\x00mallory\x00signal\x0000000000000000000003\x00",
		"clicklearn\x00mallory\x00signal\x0000000000000000000004\x00",
		"clicklearn\x00zed\x00signal\x0000000000000000000007\x00",
		"clicklearn\x00zed\x00subject\x00\x00",
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("parked keys %q, want %q\n%v", keys, want, parked)
	}
	for k, why := range parked {
		t.Logf("%q: %s", k, why)
	}
}
