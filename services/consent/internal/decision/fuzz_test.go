package decision

import (
	"slices"
	"testing"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// Bits of FuzzDecide's flags argument.
const (
	fuzzNecessary = 1 << iota
	fuzzDirectMarketing
	fuzzGPCOptOut
	fuzzDigitalConsentAge
	fuzzExcludeStudent
	fuzzHasRecord
	fuzzObjectionListsPurpose
	fuzzHasObjection
)

// FuzzDecide decides on arbitrary purposes, records, objections,
// restrictions, attributes and times, and checks what must hold whatever
// the input: Decide does not panic, Allowed goes with an allowing reason
// and only with one, no allowing decision overrides a restriction (but for
// a storage-only purpose), eligibility, an objection or GPC, an age gate
// never passes an unknown age or, below every state's age, an unknown
// country, a grant is live when it allows, and the Index decides as Decide
// does. Bit 2 of restriction makes the purpose storage only. Seeds are in
// testdata/fuzz/FuzzDecide.
func FuzzDecide(f *testing.F) {
	f.Add(uint8(1), uint8(fuzzHasRecord), int8(0), "", int8(0), "", false, uint8(1), int16(0), int16(730), int16(0), int16(1), uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, basis, flags uint8, minAge int8, role string, age int8, country string, gpc bool,
		action uint8, recordedDay, expiresDay, materialDay, nowDay int16, scope, restriction uint8) {
		p := Purpose{
			ID:                "p",
			Basis:             commonv1.LegalBasis(basis % 8), // includes undefined values
			Necessary:         flags&fuzzNecessary != 0,
			DirectMarketing:   flags&fuzzDirectMarketing != 0,
			GPCOptOut:         flags&fuzzGPCOptOut != 0,
			DigitalConsentAge: flags&fuzzDigitalConsentAge != 0,
			MinimumAge:        int32(minAge),
			StorageOnly:       restriction&4 != 0,
		}
		if flags&fuzzExcludeStudent != 0 {
			p.ExcludedRoles = []string{"student"}
		}
		if materialDay != 0 {
			p.MaterialSince = at(int(materialDay))
		}
		a := Attributes{Role: role, Age: int32(age), Country: country, GPC: gpc}
		now := at(int(nowDay))

		var steps []func(*Subject)
		c := Consent{Action: consentv1.ConsentAction(action % 6), RecordID: "rec", RecordedAt: at(int(recordedDay))}
		if expiresDay != 0 {
			c.ExpiresAt = at(int(expiresDay))
		}
		if flags&fuzzHasRecord != 0 {
			steps = append(steps, func(s *Subject) { s.SetConsent(p.ID, c) })
		}
		o := Objection{ID: "obj", Scope: eventsv1.ObjectionScope(scope % 5)}
		if flags&fuzzObjectionListsPurpose != 0 {
			o.Purposes = []string{"other", p.ID}
		}
		if flags&fuzzHasObjection != 0 {
			steps = append(steps, func(s *Subject) { s.AddObjection(o) })
		}
		r := Restriction{ID: "res"}
		switch restriction % 4 {
		case 2:
			r.Purposes = []string{p.ID}
		case 3:
			r.Purposes = []string{"other"}
		}
		if restriction%4 != 0 {
			steps = append(steps, func(s *Subject) { s.AddRestriction(r) })
		}

		var s *Subject
		if len(steps) > 0 {
			s = &Subject{}
			for _, step := range steps {
				step(s)
			}
		}
		d := Decide(&p, s, a, now)

		if d.Allowed != allows(d.Reason) {
			t.Fatalf("Allowed %v with reason %v", d.Allowed, d.Reason)
		}
		if (restriction%4 == 1 || restriction%4 == 2) && !p.StorageOnly {
			if d != (Decision{Reason: consentv1.Reason_REASON_RESTRICTED, BasisID: ParseID("res")}) {
				t.Fatalf("restricted purpose decided %+v", d)
			}
		}
		if d.Reason == consentv1.Reason_REASON_RESTRICTED && p.StorageOnly {
			t.Fatalf("storage-only purpose refused under a restriction: %+v", d)
		}
		if d.Reason == consentv1.Reason_REASON_UNSPECIFIED && (p.Necessary || p.Basis != 0 && p.Basis <= basisLegitimateInterest) {
			t.Fatalf("no reason for a purpose with basis %v", p.Basis)
		}
		if d.Allowed {
			if a.Role != "" && slices.Contains(p.ExcludedRoles, a.Role) {
				t.Fatalf("allowed an excluded role: %+v", d)
			}
			if (p.MinimumAge > 0 || p.DigitalConsentAge) && a.Age <= 0 {
				t.Fatalf("allowed an unknown age through an age gate: %+v", d)
			}
			if p.MinimumAge > 0 && a.Age < p.MinimumAge {
				t.Fatalf("allowed under the minimum age: %+v", d)
			}
			if i, ok := countryIndex(a.Country); p.DigitalConsentAge && !ok && a.Age < defaultConsentAge {
				t.Fatalf("allowed age %d with an unknown country: %+v", a.Age, d)
			} else if p.DigitalConsentAge && ok {
				// Whichever of the state's ages applied, the subject met
				// the lowest of them.
				lowest := int32(defaultConsentAge)
				for _, step := range consentAges[i] {
					lowest = min(lowest, step.age)
				}
				if len(consentAges[i]) > 0 && a.Age < lowest {
					t.Fatalf("allowed under the age of digital consent: %+v", d)
				}
			}
		}
		if d.Allowed && d.Reason != consentv1.Reason_REASON_NECESSARY {
			if gpc && p.GPCOptOut {
				t.Fatalf("allowed despite GPC: %+v", d)
			}
			if flags&fuzzHasObjection != 0 && o.Scope == scopeDirectMarketing && p.DirectMarketing {
				t.Fatalf("allowed direct marketing despite an objection: %+v", d)
			}
		}
		if d.Reason == consentv1.Reason_REASON_GRANTED {
			rec := s.record(p.ID)
			if rec == nil || !rec.live(unixNano(now, beforeAll)) || d.BasisID.String() != "rec" {
				t.Fatalf("granted without a live record: %+v", d)
			}
		}

		ix := NewIndex()
		ix.PutPurpose("t", p)
		for _, step := range steps {
			ix.Update("t", "s", step)
		}
		if got := ix.Check("t", "s", p.ID, a, now); got != d {
			t.Fatalf("Check = %+v, Decide = %+v", got, d)
		}
	})
}
