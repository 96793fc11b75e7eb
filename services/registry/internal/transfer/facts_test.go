package transfer

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
)

func TestDefaultFactsValid(t *testing.T) {
	f, err := ParseFacts(factsJSON)
	if err != nil {
		t.Fatalf("facts.json: %v", err)
	}

	// Every country code in the facts is an assigned ISO 3166-1 code.
	var codes []string
	codes = append(codes, f.EEAMembers...)
	for _, tr := range f.EEATerritories {
		codes = append(codes, tr.Country, tr.Member)
	}
	for _, d := range f.AdequacyDecisions {
		codes = append(codes, d.Country)
	}
	for _, c := range codes {
		if !ValidCountry(c) {
			t.Errorf("%q in facts.json is not an ISO 3166-1 alpha-2 code", c)
		}
	}

	// The EEA is the EU 27 and Iceland, Liechtenstein and Norway, each once.
	if len(f.EEAMembers) != 30 {
		t.Errorf("%d EEA members, want 30", len(f.EEAMembers))
	}
	sorted := slices.Clone(f.EEAMembers)
	slices.Sort(sorted)
	if c := slices.Compact(sorted); len(c) != len(f.EEAMembers) {
		t.Errorf("an EEA member is listed twice: %v", f.EEAMembers)
	}
	for _, c := range []string{"IS", "LI", "NO", "DK", "FI", "SE", "IE", "GR"} {
		if !f.InEEA(c) {
			t.Errorf("InEEA(%s) = false", c)
		}
	}
	for _, c := range []string{"GB", "CH", "US", "FO", "GL", "SJ", "EL", "EU", ""} {
		if f.InEEA(c) {
			t.Errorf("InEEA(%q) = true", c)
		}
	}

	// The adequacy list the Commission publishes, plus Brazil (2026).
	for _, c := range []string{"AD", "AR", "CA", "FO", "GG", "IL", "IM", "JP", "JE", "NZ", "KR", "CH", "GB", "UY", "US", "BR"} {
		if !slices.ContainsFunc(f.AdequacyDecisions, func(d AdequacyDecision) bool { return d.Country == c }) {
			t.Errorf("no adequacy decision for %s", c)
		}
	}
	for ref, want := range map[string]string{
		"(EU) 2016/1250": "2016-07-12",
		"(EU) 2023/1795": "2023-07-10",
		"(EU) 2022/254":  "2021-12-17",
		"(EU) 2021/1772": "2021-06-28",
	} {
		if d, ok := f.Decision(ref); !ok || d.Adopted.String() != want {
			t.Errorf("decision %s adopted %q, want %s", ref, d.Adopted, want)
		}
	}
	if d, _ := f.Decision("(EU) 2016/1250"); d.InvalidatedFrom.String() != "2020-07-16" {
		t.Errorf("Privacy Shield invalidated from %q, want 2020-07-16", d.InvalidatedFrom)
	}
	for _, v := range []string{"2001/497/EC", "2004/915/EC", "2010/87/EU"} {
		s, ok := f.SCCVersion(v)
		if !ok || s.RepealedFrom.String() != "2021-09-27" || s.TransitionUntil.String() != "2022-12-27" {
			t.Errorf("SCC %s: repealed %q, transition until %q", v, s.RepealedFrom, s.TransitionUntil)
		}
	}
	if s, ok := f.SCCVersion("2021/914"); !ok || s.AppliesFrom.String() != "2021-06-27" || !s.RepealedFrom.IsZero() {
		t.Errorf("SCC 2021/914: %+v", s)
	}
}

// TestFactsRoundTrip guards the JSON shape: what Facts marshals, ParseFacts
// reads back the same.
func TestFactsRoundTrip(t *testing.T) {
	f := DefaultFacts()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := ParseFacts(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(g)
	if string(b) != string(b2) {
		t.Fatalf("round trip changed the facts:\n%s\n%s", b, b2)
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Facts)
		want   string
	}{
		{"reserved code", func(f *Facts) { f.EEAMembers = append(f.EEAMembers, "EL") }, `"EL" is not an ISO 3166-1`},
		{"member twice", func(f *Facts) { f.EEAMembers = append(f.EEAMembers, "DK") }, "DK listed twice"},
		{"territory of a non-member", func(f *Facts) { f.EEATerritories[0].Member = "GB" }, "not an EEA member"},
		{"adequacy for an EEA state", func(f *Facts) { f.AdequacyDecisions[0].Country = "DK" }, "in the EEA"},
		{"decision twice", func(f *Facts) {
			f.AdequacyDecisions = append(f.AdequacyDecisions, f.AdequacyDecisions[0])
		}, "listed twice"},
		{"invalidated without a judgment", func(f *Facts) {
			f.AdequacyDecisions[0].InvalidatedFrom = NewDate(2030, 1, 1)
		}, "invalidated_by"},
		{"sunset before adoption", func(f *Facts) { f.AdequacyDecisions[0].AppliesUntil = NewDate(1990, 1, 1) }, "before its adoption"},
		{"transition without a repeal", func(f *Facts) {
			i := slices.IndexFunc(f.SCCVersions, func(v SCCVersion) bool { return v.Version == "2021/914" })
			f.SCCVersions[i].TransitionUntil = NewDate(2030, 1, 1)
		}, "transition_until"},
		{"SCC version twice", func(f *Facts) {
			f.SCCVersions = append(f.SCCVersions, SCCVersion{Version: "(EU) 2021/914", Adopted: NewDate(2021, 6, 4)})
		}, "listed twice"},
		{"unknown mechanism", func(f *Facts) { f.Mechanisms[0].Mechanism = "TRANSFER_MECHANISM_HOPE" }, "not a TransferMechanism"},
		{"mechanism without a rule", func(f *Facts) { f.Mechanisms = f.Mechanisms[1:] }, "no rule for"},
		{"rule for no mechanism", func(f *Facts) {
			f.Mechanisms = append(f.Mechanisms, MechanismRule{Mechanism: "TRANSFER_MECHANISM_UNSPECIFIED", Name: "x", Article: "y", Basis: BasisReference, Reference: "z"})
		}, "absence of a mechanism"},
		{"missing decision", func(f *Facts) {
			i := slices.IndexFunc(f.Mechanisms, func(m MechanismRule) bool { return m.Decision != "" })
			f.Mechanisms[i].Decision = "(EU) 2099/1"
		}, "not listed"},
		{"unknown basis", func(f *Facts) { f.Mechanisms[0].Basis = "hope" }, "unknown basis"},
		{"unknown kind", func(f *Facts) { f.DPARequiredKinds = []string{"SYSTEM_KIND_VENDOR"} }, "not a SystemKind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := DefaultFacts()
			tt.change(f)
			err := f.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestParseFactsRejectsBadDates(t *testing.T) {
	for _, in := range []string{
		`{"adequacy_decisions":[{"decision":"x","country":"JP","adopted":"23/01/2019"}]}`,
		`{"adequacy_decisions":[{"decision":"x","country":"JP","adopted":2019}]}`,
		`not json`,
	} {
		if _, err := ParseFacts([]byte(in)); err == nil {
			t.Errorf("ParseFacts(%s) succeeded", in)
		}
	}
}

func TestRuleAndNames(t *testing.T) {
	f := DefaultFacts()
	for v, name := range registryv1.TransferMechanism_name {
		m := registryv1.TransferMechanism(v)
		r, ok := f.Rule(m)
		if m == registryv1.TransferMechanism_TRANSFER_MECHANISM_UNSPECIFIED {
			if ok {
				t.Errorf("Rule(%s) found a rule", name)
			}
			continue
		}
		if !ok || r.Name == "" || !strings.HasPrefix(r.Article, "GDPR Art. ") {
			t.Errorf("Rule(%s) = %+v, %v", name, r, ok)
		}
	}
}

func TestDate(t *testing.T) {
	d, err := ParseDate("2020-07-16")
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != "2020-07-16" || d.Words() != "16 July 2020" {
		t.Errorf("String %q, Words %q", d, d.Words())
	}
	if !NewDate(2020, 7, 15).Before(d) || !d.After(NewDate(2020, 7, 15)) || d.Before(d) {
		t.Error("Before/After")
	}
	var z Date
	if !z.IsZero() || z.String() != "" || z.Words() != "" {
		t.Error("zero Date")
	}
	if _, err := ParseDate("2020-13-01"); err == nil {
		t.Error("ParseDate accepted month 13")
	}
}
