package contract_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

func TestOutcomesAloneAndInBatches(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	a := &eventsv1.Outcome{EventId: "ev-1", TenantId: "clio", SystemId: "crm", Kind: eventsv1.OutcomeKind_OUTCOME_KIND_ERASED, ReportedAt: at}
	b := &eventsv1.Outcome{EventId: "ev-2", TenantId: "clio", SystemId: "crm", Kind: eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND, ReportedAt: at}

	alone, err := contract.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := contract.UnmarshalOutcomes(contract.OutcomeHeaders(a), alone)
	if err != nil || len(got) != 1 || !proto.Equal(got[0], a) {
		t.Fatalf("one outcome decoded as %v, %v", got, err)
	}

	batch, err := contract.Marshal(&eventsv1.OutcomeBatch{Outcomes: []*eventsv1.Outcome{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	h := contract.OutcomeBatchHeaders("crm", []*eventsv1.Outcome{a, b})
	got, err = contract.UnmarshalOutcomes(h, batch)
	if err != nil || len(got) != 2 || !proto.Equal(got[0], a) || !proto.Equal(got[1], b) {
		t.Fatalf("a batch decoded as %v, %v", got, err)
	}
	// The same outcomes in any order are the same batch to the stream's
	// de-duplication; other outcomes are another.
	if id, again := h.Get("Nats-Msg-Id"), contract.OutcomeBatchHeaders("crm", []*eventsv1.Outcome{b, a}).Get("Nats-Msg-Id"); id != again {
		t.Errorf("batch ids differ by order: %s, %s", id, again)
	}
	if id, other := h.Get("Nats-Msg-Id"), contract.OutcomeBatchHeaders("crm", []*eventsv1.Outcome{a}).Get("Nats-Msg-Id"); id == other {
		t.Errorf("two batches share the id %s", id)
	}
	if h.Get(contract.HeaderType) != "lethe.events.v1.OutcomeBatch" {
		t.Errorf("ce-type = %q", h.Get(contract.HeaderType))
	}
}
