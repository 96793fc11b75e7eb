package transfer

import (
	"fmt"
	"strings"
	"testing"
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func day(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t.Add(12 * time.Hour) // midday, far from any day boundary
}

func ts(s string) *timestamppb.Timestamp { return timestamppb.New(day(s)) }

type mech = registryv1.TransferMechanism

const (
	unspecified = registryv1.TransferMechanism_TRANSFER_MECHANISM_UNSPECIFIED
	adequacy    = registryv1.TransferMechanism_TRANSFER_MECHANISM_ADEQUACY_DECISION
	scc         = registryv1.TransferMechanism_TRANSFER_MECHANISM_STANDARD_CONTRACTUAL_CLAUSES
	bcr         = registryv1.TransferMechanism_TRANSFER_MECHANISM_BINDING_CORPORATE_RULES
	dpf         = registryv1.TransferMechanism_TRANSFER_MECHANISM_EU_US_DATA_PRIVACY_FRAMEWORK
	shield      = registryv1.TransferMechanism_TRANSFER_MECHANISM_EU_US_PRIVACY_SHIELD
	derogation  = registryv1.TransferMechanism_TRANSFER_MECHANISM_DEROGATION
)

// processor returns a processor with a data-processing agreement signed
// long ago, so that only the transfer is under test.
func processor(id, country string, t *registryv1.Transfer) *registryv1.System {
	return &registryv1.System{
		SystemId:    id,
		Name:        id,
		Kind:        commonv1.SystemKind_SYSTEM_KIND_PROCESSOR,
		Country:     country,
		DpaSignedAt: ts("2018-05-25"),
		Transfer:    t,
	}
}

func transferOf(m mech, version, since, ref string) *registryv1.Transfer {
	t := &registryv1.Transfer{Mechanism: m, SccVersion: version, Reference: ref}
	if since != "" {
		t.Since = ts(since)
	}
	return t
}

// got renders findings as "SEVERITY CODE" lines for comparison.
func got(fs []*registryv1.Finding) []string {
	out := []string{}
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%s %s", strings.TrimPrefix(f.GetSeverity().String(), "SEVERITY_"), f.GetCode()))
	}
	return out
}

func TestCheck(t *testing.T) {
	facts := DefaultFacts()
	const now = "2026-11-23"
	tests := []struct {
		name string
		sys  *registryv1.System
		at   string
		want []string
		// wantText must each occur in the messages, so they name the facts.
		wantText []string
	}{
		{
			name:     "ClickLearn's Google Analytics on Privacy Shield after Schrems II",
			sys:      processor("google-analytics", "US", transferOf(shield, "", "2018-05-01", "Google LLC, Privacy Shield List")),
			at:       now,
			want:     []string{"CRITICAL TRANSFER_MECHANISM_INVALIDATED"},
			wantText: []string{"(EU) 2016/1250", "C-311/18", "16 July 2020", "United States (US)"},
		},
		{
			name: "Privacy Shield without a reference is only the critical finding",
			sys:  processor("google-analytics", "US", transferOf(shield, "", "", "")),
			at:   now,
			want: []string{"CRITICAL TRANSFER_MECHANISM_INVALIDATED"},
		},
		{
			name: "Privacy Shield was valid in 2019: validity is by date",
			sys:  processor("google-analytics", "US", transferOf(shield, "", "2018-05-01", "Google LLC, Privacy Shield List")),
			at:   "2019-01-01",
			want: []string{},
		},
		{
			name: "Google Analytics under the Data Privacy Framework with a certification",
			sys:  processor("google-analytics", "US", transferOf(dpf, "", "2023-07-17", "Google LLC, DPF List")),
			at:   now,
			want: []string{},
		},
		{
			name:     "Data Privacy Framework without a certification reference",
			sys:      processor("google-analytics", "US", transferOf(dpf, "", "", "")),
			at:       now,
			want:     []string{"WARNING REFERENCE_MISSING"},
			wantText: []string{"Data Privacy Framework List"},
		},
		{
			name:     "Data Privacy Framework before its adoption",
			sys:      processor("google-analytics", "US", transferOf(dpf, "", "", "Google LLC")),
			at:       "2022-06-01",
			want:     []string{"CRITICAL TRANSFER_MECHANISM_NOT_YET_IN_FORCE"},
			wantText: []string{"10 July 2023"},
		},
		{
			name:     "Data Privacy Framework for a recipient outside the US",
			sys:      processor("offshore", "IN", transferOf(dpf, "", "", "")),
			at:       now,
			want:     []string{"CRITICAL ADEQUACY_NOT_COVERING_COUNTRY"},
			wantText: []string{"(EU) 2023/1795", "India (IN)"},
		},
		{
			name: "Azure in Ireland needs no mechanism",
			sys:  processor("azure", "IE", nil),
			at:   now,
			want: []string{},
		},
		{
			name: "a mechanism recorded for a system in the EEA is ignored",
			sys:  processor("azure", "IE", transferOf(scc, "", "", "")),
			at:   now,
			want: []string{},
		},
		{
			name: "an outermost region is in the EU",
			sys:  processor("reunion-host", "RE", nil),
			at:   now,
			want: []string{},
		},
		{
			name:     "SCC 2010/87/EU during the transition",
			sys:      processor("campaign-monitor", "US", transferOf(scc, "2010/87/EU", "2019-05-01", "")),
			at:       "2022-06-01",
			want:     []string{"WARNING SCC_VERSION_SUPERSEDED"},
			wantText: []string{"27 September 2021", "27 December 2022", "(EU) 2021/914"},
		},
		{
			name:     "SCC 2010/87/EU during the transition, signing date unknown",
			sys:      processor("campaign-monitor", "US", transferOf(scc, "2010/87/EU", "", "")),
			at:       "2022-06-01",
			want:     []string{"WARNING SCC_VERSION_SUPERSEDED"},
			wantText: []string{"signing date is not recorded"},
		},
		{
			name:     "SCC 2010/87/EU after the transition",
			sys:      processor("campaign-monitor", "US", transferOf(scc, "2010/87/EU", "2019-05-01", "")),
			at:       "2023-01-01",
			want:     []string{"CRITICAL SCC_VERSION_SUPERSEDED"},
			wantText: []string{"superseded version past its transition", "27 December 2022", "Decision 2021/914"},
		},
		{
			name:     "SCC 2010/87/EU signed after their repeal",
			sys:      processor("campaign-monitor", "US", transferOf(scc, "2010/87/EU", "2021-10-01", "")),
			at:       "2022-06-01",
			want:     []string{"CRITICAL SCC_SIGNED_AFTER_REPEAL"},
			wantText: []string{"1 October 2021", "27 September 2021"},
		},
		{
			name: "SCC 2010/87/EU before their repeal were fine",
			sys:  processor("campaign-monitor", "US", transferOf(scc, "2010/87/EU", "2019-05-01", "")),
			at:   "2020-01-01",
			want: []string{},
		},
		{
			name: "SCC 2021/914",
			sys:  processor("ad-platform", "US", transferOf(scc, "2021/914", "2022-03-01", "")),
			at:   now,
			want: []string{},
		},
		{
			name: "SCC version written with its OJ prefix",
			sys:  processor("ad-platform", "US", transferOf(scc, "(EU) 2021/914", "2022-03-01", "")),
			at:   now,
			want: []string{},
		},
		{
			name: "SCC 2021/914 before they applied",
			sys:  processor("ad-platform", "US", transferOf(scc, "2021/914", "", "")),
			at:   "2021-06-10",
			want: []string{"CRITICAL SCC_VERSION_NOT_YET_IN_FORCE"},
		},
		{
			name: "SCC without a version",
			sys:  processor("ad-platform", "US", transferOf(scc, "", "", "")),
			at:   now,
			want: []string{"WARNING SCC_VERSION_MISSING"},
		},
		{
			name:     "SCC of a version Lethe does not know",
			sys:      processor("ad-platform", "US", transferOf(scc, "2002/16/EC", "", "")),
			at:       now,
			want:     []string{"WARNING SCC_VERSION_UNKNOWN"},
			wantText: []string{`"2002/16/EC"`},
		},
		{
			name: "adequacy for Japan",
			sys:  processor("jp-host", "JP", transferOf(adequacy, "", "", "")),
			at:   now,
			want: []string{},
		},
		{
			name: "adequacy for the Republic of Korea, from 17 December 2021",
			sys:  processor("kr-host", "KR", transferOf(adequacy, "", "", "")),
			at:   "2021-12-17",
			want: []string{},
		},
		{
			name: "adequacy for the Republic of Korea, the day before",
			sys:  processor("kr-host", "KR", transferOf(adequacy, "", "", "")),
			at:   "2021-12-16",
			want: []string{"CRITICAL ADEQUACY_NOT_COVERING_COUNTRY"},
		},
		{
			name:     "adequacy claimed for the US between Privacy Shield and the Data Privacy Framework",
			sys:      processor("google-analytics", "US", transferOf(adequacy, "", "", "")),
			at:       "2022-06-01",
			want:     []string{"CRITICAL ADEQUACY_NOT_COVERING_COUNTRY"},
			wantText: []string{"(EU) 2016/1250", "16 July 2020", "(EU) 2023/1795", "10 July 2023"},
		},
		{
			name:     "adequacy claimed for the US under the Data Privacy Framework",
			sys:      processor("google-analytics", "US", transferOf(adequacy, "", "", "")),
			at:       now,
			want:     []string{"WARNING ADEQUACY_CERTIFICATION_REQUIRED"},
			wantText: []string{"(EU) 2023/1795", "certified"},
		},
		{
			name: "adequacy for the United Kingdom, renewed",
			sys:  processor("uk-host", "GB", transferOf(adequacy, "", "", "")),
			at:   now,
			want: []string{},
		},
		{
			name:     "adequacy for the United Kingdom after the renewal ends",
			sys:      processor("uk-host", "GB", transferOf(adequacy, "", "", "")),
			at:       "2032-01-01",
			want:     []string{"CRITICAL ADEQUACY_NOT_COVERING_COUNTRY"},
			wantText: []string{"27 December 2031"},
		},
		{
			name:     "no mechanism for India",
			sys:      processor("in-support", "IN", nil),
			at:       now,
			want:     []string{"CRITICAL TRANSFER_MECHANISM_MISSING"},
			wantText: []string{"India (IN)", "Art. 44"},
		},
		{
			name: "a mechanism value the facts do not know",
			sys:  processor("future", "IN", transferOf(mech(99), "", "", "")),
			at:   now,
			want: []string{"CRITICAL TRANSFER_MECHANISM_UNKNOWN"},
		},
		{
			name: "binding corporate rules with their approval",
			sys:  processor("group-it", "IN", transferOf(bcr, "", "", "BCR approved by the Danish DPA, 2020")),
			at:   now,
			want: []string{},
		},
		{
			name: "binding corporate rules without a reference",
			sys:  processor("group-it", "IN", transferOf(bcr, "", "", "")),
			at:   now,
			want: []string{"WARNING REFERENCE_MISSING"},
		},
		{
			// Art. 49 and EDPB Guidelines 2/2018: a registered system's
			// transfer is systematic, which a derogation cannot carry.
			name:     "a derogation for a registered system is a warning",
			sys:      processor("event-host", "IN", transferOf(derogation, "", "", "Art. 49(1)(a) explicit consent")),
			at:       now,
			want:     []string{"WARNING DEROGATION_SYSTEMATIC"},
			wantText: []string{"systematic", "2/2018"},
		},
		{
			name: "a derogation without its ground",
			sys:  processor("event-host", "IN", transferOf(derogation, "", "", " ")),
			at:   now,
			want: []string{"WARNING DEROGATION_SYSTEMATIC", "WARNING REFERENCE_MISSING"},
		},
		{
			name: "a processor without a data-processing agreement",
			sys: &registryv1.System{
				SystemId: "campaign-monitor", Name: "Campaign Monitor",
				Kind: commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, Country: "IE",
			},
			at:       now,
			want:     []string{"WARNING DPA_MISSING"},
			wantText: []string{"Art. 28(3)"},
		},
		{
			name: "a sub-processor whose agreement postdates the check",
			sys: &registryv1.System{
				SystemId: "mailer", Kind: commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR,
				Country: "DE", DpaSignedAt: ts("2025-01-01"),
			},
			at:   "2024-01-01",
			want: []string{"WARNING DPA_MISSING"},
		},
		{
			name: "an independent recipient needs no agreement under Art. 28",
			sys:  &registryv1.System{SystemId: "dhl", Kind: commonv1.SystemKind_SYSTEM_KIND_RECIPIENT, Country: "DE"},
			at:   now,
			want: []string{},
		},
		{
			name: "no agreement and no mechanism: the critical first",
			sys: &registryv1.System{
				SystemId: "ads", Kind: commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, Country: "US",
			},
			at:   now,
			want: []string{"CRITICAL TRANSFER_MECHANISM_MISSING", "WARNING DPA_MISSING"},
		},
		{
			name: "a country code that is not assigned",
			sys:  processor("nowhere", "XX", transferOf(scc, "2021/914", "2022-01-01", "")),
			at:   now,
			want: []string{"WARNING COUNTRY_UNKNOWN"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := facts.Check(tt.sys, day(tt.at))
			if g := got(fs); strings.Join(g, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("Check on %s = %q, want %q\nmessages: %v", tt.at, g, tt.want, fs)
			}
			var all strings.Builder
			for _, f := range fs {
				if f.GetSystemId() != tt.sys.GetSystemId() {
					t.Errorf("finding for %q, want %q", f.GetSystemId(), tt.sys.GetSystemId())
				}
				all.WriteString(f.GetMessage())
			}
			for _, w := range tt.wantText {
				if !strings.Contains(all.String(), w) {
					t.Errorf("messages do not name %q:\n%s", w, all.String())
				}
			}
		})
	}
}

func TestCheckNil(t *testing.T) {
	if fs := DefaultFacts().Check(nil, time.Now()); fs != nil {
		t.Fatalf("Check(nil) = %v", fs)
	}
}

// TestCheckFollowsTheFacts shows that validity comes from the data: with
// facts in which Schrems II never happened, Privacy Shield is still a
// ground in 2026.
func TestCheckFollowsTheFacts(t *testing.T) {
	f := DefaultFacts()
	for i, d := range f.AdequacyDecisions {
		if d.Decision == "(EU) 2016/1250" {
			f.AdequacyDecisions[i].InvalidatedFrom = Date{}
			f.AdequacyDecisions[i].InvalidatedBy = ""
		}
	}
	sys := processor("google-analytics", "US", transferOf(shield, "", "", "Google LLC"))
	if fs := f.Check(sys, day("2026-11-23")); len(fs) != 0 {
		t.Fatalf("Check with altered facts = %q, want none", got(fs))
	}
	// The change stays in the copy.
	if fs := DefaultFacts().Check(sys, day("2026-11-23")); len(fs) != 1 {
		t.Fatalf("DefaultFacts was changed through a copy: %q", got(fs))
	}
}

func TestDayBoundary(t *testing.T) {
	sys := processor("google-analytics", "US", transferOf(shield, "", "", "Google LLC"))
	f := DefaultFacts()
	last := time.Date(2020, 7, 15, 23, 59, 59, 0, time.UTC)
	if fs := f.Check(sys, last); len(fs) != 0 {
		t.Errorf("on 15 July 2020: %q, want none", got(fs))
	}
	if fs := f.Check(sys, last.Add(time.Second)); len(got(fs)) != 1 {
		t.Errorf("on 16 July 2020: %q, want the invalidation", got(fs))
	}
}

func TestSortFindings(t *testing.T) {
	fs := []*registryv1.Finding{
		{SystemId: "b", Severity: warning, Code: "Z"},
		{SystemId: "b", Severity: critical, Code: "B"},
		{SystemId: "a", Severity: info, Code: "A"},
		{SystemId: "a", Severity: critical, Code: "C"},
		{SystemId: "a", Severity: critical, Code: "A"},
		{SystemId: "a", Severity: warning, Code: "A"},
	}
	SortFindings(fs)
	var g []string
	for _, f := range fs {
		g = append(g, fmt.Sprintf("%d/%s/%s", f.GetSeverity(), f.GetSystemId(), f.GetCode()))
	}
	want := "3/a/A 3/a/C 3/b/B 2/a/A 2/b/Z 1/a/A"
	if strings.Join(g, " ") != want {
		t.Fatalf("SortFindings = %s, want %s", strings.Join(g, " "), want)
	}
}
