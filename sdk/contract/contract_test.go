package contract

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// TestEveryBodyHasOneSubject holds the proto to the subject layout: every
// body field is named "<domain>_<event>", and the constants above list them
// all.
func TestEveryBodyHasOneSubject(t *testing.T) {
	known := map[Kind]bool{}
	for _, k := range append(append([]Kind{}, Directives...), Limits...) {
		known[k] = true
	}
	for _, k := range []Kind{KindTenantRegistered, KindTenantChanged, KindTenantRemoved, KindSystemRegistered, KindSystemChanged, KindSystemRemoved} {
		known[k] = true
	}
	fields := bodyOneof.Fields()
	if fields.Len() != len(known) {
		t.Errorf("Event.body has %d fields, the contract names %d kinds", fields.Len(), len(known))
	}
	for i := range fields.Len() {
		fd := fields.Get(i)
		if strings.Count(string(fd.Name()), "_") != 1 {
			t.Errorf("body field %s must be named <domain>_<event> with one underscore", fd.Name())
		}
		if k := kindOfField(fd); !known[k] {
			t.Errorf("body field %s has kind %q, which the contract does not name", fd.Name(), k)
		}
		if string(kindOfField(fd)) == OutcomeDomain || strings.HasPrefix(string(fd.Name()), OutcomeDomain+"_") {
			t.Errorf("body field %s uses the reserved domain %q", fd.Name(), OutcomeDomain)
		}
	}
}

func TestSubjectsAndHeaders(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	ev := &eventsv1.Event{
		Id:         "0b8a8c1e-0000-4000-8000-000000000001",
		TenantId:   "clio",
		SubjectId:  "subject-42",
		Sequence:   3,
		Cause:      &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "req-7"},
		OccurredAt: timestamppb.New(at),
		Source:     "lethe/dsar",
		Body: &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope:  &eventsv1.Scope{All: true},
			Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE,
		}},
	}
	subject, err := EventSubject(ev)
	if err != nil || subject != "lethe.clio.erasure.requested" {
		t.Fatalf("EventSubject = %q, %v", subject, err)
	}
	h, err := EventHeaders(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		nats.MsgIdHdr:            ev.Id,
		HeaderID:                 ev.Id,
		HeaderType:               "lethe.events.v1.ErasureRequested",
		HeaderSource:             "lethe/dsar",
		HeaderTime:               "2026-11-23T10:00:00Z",
		HeaderCloudEventsSubject: "req-7",
		HeaderSpecVersion:        "1.0",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, ev.SubjectId) {
				t.Errorf("header %s carries the data subject's id", k)
			}
		}
	}

	if _, err := EventSubject(&eventsv1.Event{TenantId: "clio"}); err == nil {
		t.Error("EventSubject accepted an event without a body")
	}
	if _, err := KindSubject("Clio.Evil", KindErasureRequested); err == nil {
		t.Error("KindSubject accepted a tenant id with a dot")
	}
}

func TestOutcomeSubjects(t *testing.T) {
	s, err := OutcomeSubject("clio", "newsletter")
	if err != nil || s != "lethe.clio.outcome.newsletter" {
		t.Fatalf("OutcomeSubject = %q, %v", s, err)
	}
	tenant, system, ok := ParseOutcomeSubject(s)
	if !ok || tenant != "clio" || system != "newsletter" {
		t.Fatalf("ParseOutcomeSubject = %q, %q, %v", tenant, system, ok)
	}
	for _, bad := range []string{"lethe.clio.erasure.requested", "lethe.clio.outcome", "lethe.clio.outcome.a.b", "other.clio.outcome.x", "lethe.*.outcome.x"} {
		if _, _, ok := ParseOutcomeSubject(bad); ok {
			t.Errorf("ParseOutcomeSubject(%q) accepted it", bad)
		}
	}
	for _, bad := range [][2]string{{"clio", ">"}, {"clio", "a.b"}, {"", "x"}, {"clio", "Newsletter"}} {
		if _, err := OutcomeSubject(bad[0], bad[1]); err == nil {
			t.Errorf("OutcomeSubject(%q, %q) accepted it", bad[0], bad[1])
		}
	}
}

func FuzzParseOutcomeSubject(f *testing.F) {
	f.Add("lethe.clio.outcome.newsletter")
	f.Add("lethe.*.outcome.>")
	f.Fuzz(func(t *testing.T, subject string) {
		tenant, system, ok := ParseOutcomeSubject(subject)
		if !ok {
			return
		}
		again, err := OutcomeSubject(tenant, system)
		if err != nil || again != subject {
			t.Fatalf("ParseOutcomeSubject(%q) = %q, %q, which OutcomeSubject renders as %q, %v", subject, tenant, system, again, err)
		}
	})
}
