package decision

import (
	"slices"
	"testing"
	"time"
	"unsafe"
)

func TestSubjectConsentRoundTrip(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		in   Consent
	}{
		{"grant with expiry", Consent{Action: actionGrant, RecordID: "g1", RecordedAt: t0.In(berlin), ExpiresAt: at(730)}},
		{"grant without expiry", Consent{Action: actionGrant, RecordID: "g2", RecordedAt: t0.Add(123456789)}},
		{"withdrawal", Consent{Action: actionWithdraw, RecordID: "w1", RecordedAt: at(3)}},
		{"no recorded time", Consent{Action: actionDeny, RecordID: "d1"}},
		{"imported", Consent{Action: actionGrant, RecordID: "i1", RecordedAt: at(400), GivenAt: at(3), ExpiresAt: at(733)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s Subject
			s.SetConsent("p", tc.in)
			got, ok := s.Consent("p")
			if !ok {
				t.Fatal("Consent: not found")
			}
			// The engine keeps when consent was given, not when recorded.
			if got.Action != tc.in.Action || got.RecordID != tc.in.RecordID || !got.RecordedAt.IsZero() ||
				!got.GivenAt.Equal(tc.in.given()) || !got.ExpiresAt.Equal(tc.in.ExpiresAt) {
				t.Errorf("Consent = %+v, want %+v", got, tc.in)
			}
			if loc := got.GivenAt.Location(); !got.GivenAt.IsZero() && loc != time.UTC {
				t.Errorf("GivenAt in %v, want UTC", loc)
			}
			if _, ok := s.Consent("other"); ok {
				t.Error("Consent(other) found")
			}
		})
	}
}

// TestSubjectFindsEveryRecord adds purposes in scrambled order and checks
// every one is found, and replacing one keeps a single record.
func TestSubjectFindsEveryRecord(t *testing.T) {
	var s Subject
	ids := []string{"m", "c", "x", "a", "q", "b", "z", "k"}
	for i, id := range ids {
		s.SetConsent(id, Consent{Action: actionGrant, RecordID: id, RecordedAt: at(i)})
	}
	s.SetConsent("q", Consent{Action: actionWithdraw, RecordID: "q2", RecordedAt: at(20)})
	if len(s.records) != len(ids) || len(s.tags) != len(ids) {
		t.Fatalf("%d records, want %d", len(s.records), len(ids))
	}
	for _, id := range ids {
		c, ok := s.Consent(id)
		want := id
		if id == "q" {
			want = "q2"
		}
		if !ok || c.RecordID != want {
			t.Errorf("Consent(%q) = %+v, %v; want record %q", id, c, ok, want)
		}
	}
}

// TestSubjectFoldsInCallOrder: a withdrawal committed after a grant wins
// even when a clock step gave it an earlier timestamp.
func TestSubjectFoldsInCallOrder(t *testing.T) {
	var s Subject
	s.SetConsent(functional.ID, Consent{Action: actionGrant, RecordID: "g1", RecordedAt: at(10)})
	s.SetConsent(functional.ID, Consent{Action: actionWithdraw, RecordID: "w1", RecordedAt: at(9)})
	p := functional
	if got := Decide(&p, &s, Attributes{}, at(11)); got.Reason != reasonWithdrawn {
		t.Errorf("Decide = %+v, want WITHDRAWN", got)
	}
}

func TestSubjectObjectionsAndRestrictions(t *testing.T) {
	var s Subject
	purposes := []string{"a"}
	s.AddObjection(Objection{ID: "o1", Scope: scopePurposes, Purposes: purposes})
	purposes[0] = "b" // the caller's slice is not kept
	s.AddObjection(Objection{ID: "o1", Scope: scopePurposes, Purposes: []string{"a", "c"}})
	if len(s.objections) != 1 || !slices.Equal(s.objections[0].Purposes, []string{"a", "c"}) {
		t.Errorf("objections = %+v, want o1 replaced", s.objections)
	}

	s.AddRestriction(Restriction{ID: "r1"})
	s.AddRestriction(Restriction{ID: "r2", Purposes: []string{"a"}})
	s.AddRestriction(Restriction{ID: "r1", Purposes: []string{"c"}})
	if len(s.restrictions) != 2 {
		t.Errorf("restrictions = %+v, want 2", s.restrictions)
	}
	if s.LiftRestriction("nope") {
		t.Error("LiftRestriction(nope) = true")
	}
	if !s.LiftRestriction("r1") || s.LiftRestriction("r1") {
		t.Error("LiftRestriction(r1) twice: want true then false")
	}
	if id, ok := s.restriction("a"); !ok || id.String() != "r2" {
		t.Errorf("restriction(a) = %q, %v; want r2", id, ok)
	}
	if _, ok := s.restriction("c"); ok {
		t.Error("restriction(c) found after lifting r1")
	}
}

// TestSubjectInternsPurposeIDs: in an Index, records share the purpose's
// id string instead of each holding a copy.
func TestSubjectInternsPurposeIDs(t *testing.T) {
	ix := NewIndex()
	ix.PutPurpose("t", functional)
	caller := string([]byte(functional.ID)) // a fresh copy, as a decoded request holds
	ix.Update("t", "s", func(s *Subject) {
		s.SetConsent(caller, Consent{Action: actionGrant, RecordID: "g1"})
		got := s.records[0].purpose
		p := ix.tenant("t").purpose(functional.ID)
		if unsafe.StringData(got) != unsafe.StringData(p.ID) {
			t.Error("record does not share the purpose's id")
		}
	})
}

func TestUnixNanoClamps(t *testing.T) {
	tests := []struct {
		in   time.Time
		zero int64
		want int64
	}{
		{time.Time{}, beforeAll, beforeAll},
		{time.Time{}, never, never},
		{time.Unix(0, 0), never, 0},
		{time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), never, never - 1},
		{time.Date(1, 1, 2, 0, 0, 0, 0, time.UTC), beforeAll, beforeAll + 1},
		{time.Unix(maxUnixSeconds-1, 0), never, (maxUnixSeconds - 1) * int64(time.Second)},
	}
	for _, tc := range tests {
		if got := unixNano(tc.in, tc.zero); got != tc.want {
			t.Errorf("unixNano(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
	// A grant expiring beyond 2262 is live at any representable now.
	r := record{action: actionGrant, expiresAt: unixNano(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), never)}
	if !r.live(unixNano(time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC), beforeAll)) {
		t.Error("a far-future grant expired")
	}
}
