package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// An operator's answer for a system answered by hand is published on the
// system's outcome subject, decodable as the SDK's answers are, under the
// same message id an SDK answer would have and with the publishing service
// as its source; an invalid outcome stages nothing.
func TestOutcomesArePublishedOnTheSystemsSubject(t *testing.T) {
	ns := brokertest.Start(t)
	nc, js := brokertest.Connect(t, ns)
	if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	db := storetest.Open(t, schema)
	ob, err := outbox.New(db, outbox.Config{Source: "lethe/dsar"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close() })
	runRelay(t, ob, nc)

	o := &eventsv1.Outcome{EventId: "ev-1", TenantId: "cleura", SystemId: "billing", SubjectId: "sven",
		Cause: &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "dsar-1"},
		Kind:  eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, ReportedAt: timestamppb.New(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)),
		Retained: []*eventsv1.Retention{{Categories: []*commonv1.DataCategory{{Id: "user.financial"}},
			LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION, BasisDetail: "Bokföringslag (1999:1078) 7 kap. 2 §",
			Until: timestamppb.New(time.Date(2033, 12, 31, 0, 0, 0, 0, time.UTC))}}}
	invalid := &eventsv1.Outcome{EventId: "ev-2", TenantId: "cleura", SystemId: "billing", Kind: eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED}
	if err := db.Update(func(tx *bolt.Tx) error { return ob.AddOutcomeTx(context.Background(), tx, invalid) }); err == nil {
		t.Fatal("an outcome without cause, report time or what is retained was staged")
	}
	if err := db.Update(func(tx *bolt.Tx) error { return ob.AddOutcomeTx(context.Background(), tx, o) }); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, contract.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"lethe.*.outcome.*"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(20 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject() != "lethe.cleura.outcome.billing" {
		t.Fatalf("published on %s, want the system's outcome subject", msg.Subject())
	}
	h := msg.Headers()
	if h.Get(nats.MsgIdHdr) != contract.OutcomeID("ev-1", "billing") || h.Get(contract.HeaderSource) != "lethe/dsar" {
		t.Fatalf("headers %v: want the SDK's message id and the publishing service as source", h)
	}
	got, err := contract.UnmarshalOutcomes(h, msg.Data())
	if err != nil || len(got) != 1 || got[0].Retained[0].Until.AsTime().Year() != 2033 {
		t.Fatalf("decoded %v, %v", got, err)
	}
	eventually.True(t, "the backlog to drain", func() bool { return ob.Depth() == 0 })
}
