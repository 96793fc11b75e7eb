package transfer

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
)

// factsJSON is the law as data. It changes when the law does (a new
// adequacy decision, a judgment, a new set of clauses); the code that
// reads it should not.
//
//go:embed facts.json
var factsJSON []byte

// Facts are the legal facts a transfer is checked against. The fields are
// exported so that tests and tools can build facts of their own; the
// service uses DefaultFacts. A Facts is read-only once built: Check and the
// lookups never modify it and may be called concurrently.
type Facts struct {
	// EEAMembers are the states that apply the GDPR: the EU Member States
	// and Iceland, Liechtenstein and Norway, as ISO 3166-1 alpha-2 codes.
	EEAMembers []string `json:"eea_members"`
	// EEATerritories are parts of those states that have an ISO code of
	// their own but lie inside the EU (Åland, the outermost regions).
	EEATerritories []Territory `json:"eea_territories"`
	// AdequacyDecisions are the Commission's adequacy decisions (Art. 45
	// GDPR, or Art. 25(6) of Directive 95/46/EC kept in force by Art. 45(9)),
	// including those that have ended.
	AdequacyDecisions []AdequacyDecision `json:"adequacy_decisions"`
	// SCCVersions are the sets of standard contractual clauses the
	// Commission has adopted (Art. 46(2)(c)), including repealed ones.
	SCCVersions []SCCVersion `json:"scc_versions"`
	// Mechanisms say what each TransferMechanism needs to be valid.
	Mechanisms []MechanismRule `json:"mechanisms"`
	// DPARequiredKinds are the SystemKind names (for example
	// "SYSTEM_KIND_PROCESSOR") whose systems need a data-processing
	// agreement (Art. 28(3)).
	DPARequiredKinds []string `json:"dpa_required_kinds"`
}

// Territory is a territory with its own ISO 3166-1 code inside an EEA
// member state.
type Territory struct {
	// Country is the territory's ISO 3166-1 alpha-2 code ("RE").
	Country string `json:"country"`
	// Member is the EEA state it belongs to ("FR").
	Member string `json:"member"`
	// Note gives the legal source.
	Note string `json:"note,omitempty"`
}

// AdequacyDecision is one decision of the Commission that a third country,
// or a part of it, ensures an adequate level of protection.
type AdequacyDecision struct {
	// Decision is the decision's reference: its Official Journal number
	// ("(EU) 2016/1250"), or, while that is not known, words that follow
	// "Decision" ("of 19 December 2025 renewing (EU) 2021/1772").
	// Mechanisms name decisions by it.
	Decision string `json:"decision"`
	// Title is how people call it ("EU-US Privacy Shield", "Japan").
	Title string `json:"title"`
	// Country is the ISO 3166-1 alpha-2 code of the country it covers.
	Country string `json:"country"`
	// Scope limits the decision to some recipients, when it does.
	Scope string `json:"scope,omitempty"`
	// Adopted is the day of adoption, from which the decision applies.
	Adopted Date `json:"adopted"`
	// AppliesUntil is the last day the decision applies under a sunset
	// clause; zero when it has none.
	AppliesUntil Date `json:"applies_until,omitzero"`
	// InvalidatedFrom is the first day the decision no longer applies
	// because a court annulled it or the Commission repealed it; zero while
	// it stands.
	InvalidatedFrom Date `json:"invalidated_from,omitzero"`
	// InvalidatedBy names the judgment or act that ended it.
	InvalidatedBy string `json:"invalidated_by,omitempty"`
	// CertificationRequired is set when the decision covers only
	// recipients certified under it (Privacy Shield, the Data Privacy
	// Framework), so the country alone proves nothing.
	CertificationRequired bool `json:"certification_required,omitempty"`
	// Note records sources and anything not verified.
	Note string `json:"note,omitempty"`
}

// SCCVersion is one set of standard contractual clauses adopted by the
// Commission.
type SCCVersion struct {
	// Version is the number of the Commission decision that adopted the
	// clauses ("2021/914", "2010/87/EU").
	Version string `json:"version"`
	// Title says what the clauses are for.
	Title string `json:"title"`
	// Adopted is the day the Commission adopted them.
	Adopted Date `json:"adopted"`
	// AppliesFrom is the first day they could be used; zero for the day of
	// adoption.
	AppliesFrom Date `json:"applies_from,omitzero"`
	// RepealedFrom is the first day no new contract may use them; zero
	// while they stand.
	RepealedFrom Date `json:"repealed_from,omitzero"`
	// RepealedBy names the act that repealed them.
	RepealedBy string `json:"repealed_by,omitempty"`
	// TransitionUntil is the last day contracts concluded before the repeal
	// are deemed to provide appropriate safeguards; zero when the repeal
	// granted no transition.
	TransitionUntil Date `json:"transition_until,omitzero"`
	// Note records sources and anything not verified.
	Note string `json:"note,omitempty"`
}

// Basis is what a transfer mechanism rests on, and so how Check verifies
// it.
type Basis string

const (
	// BasisAdequacy needs an adequacy decision that covers the system's
	// country at the check date (Art. 45).
	BasisAdequacy Basis = "adequacy"
	// BasisSCC needs a known set of standard contractual clauses valid at
	// the check date (Art. 46(2)(c)).
	BasisSCC Basis = "scc"
	// BasisReference needs only the documented reference (binding
	// corporate rules, derogations): Lethe holds no list to check it
	// against.
	BasisReference Basis = "reference"
)

// MechanismRule says what one TransferMechanism needs.
type MechanismRule struct {
	// Mechanism is the TransferMechanism's enum name
	// ("TRANSFER_MECHANISM_EU_US_PRIVACY_SHIELD").
	Mechanism string `json:"mechanism"`
	// Name is the mechanism in words, for messages and records.
	Name string `json:"name"`
	// Article is the provision of the GDPR it rests on.
	Article string `json:"article"`
	// Basis is how it is verified.
	Basis Basis `json:"basis"`
	// Decision pins the adequacy decision the mechanism rests on, by its
	// AdequacyDecision.Decision; empty to accept any decision covering the
	// country.
	Decision string `json:"decision,omitempty"`
	// Reference, when set, says what the Transfer's reference must name;
	// a transfer without one is reported as a warning.
	Reference string `json:"reference,omitempty"`
	// Caveat is reported, with its severity, for every transfer on the
	// mechanism.
	Caveat *Caveat `json:"caveat,omitempty"`
}

// Caveat is a fixed piece of advice attached to a mechanism.
type Caveat struct {
	// Code is the finding's code.
	Code string `json:"code"`
	// Message is the finding's message.
	Message string `json:"message"`
	// Severity is the finding's severity by its enum name
	// ("SEVERITY_WARNING"); information when empty.
	Severity string `json:"severity,omitempty"`
}

// SeverityOf returns the caveat's severity.
func (c *Caveat) SeverityOf() registryv1.Severity {
	if c.Severity == "" {
		return registryv1.Severity_SEVERITY_INFO
	}
	return registryv1.Severity(registryv1.Severity_value[c.Severity])
}

// defaultFacts parses and validates the embedded file once. A malformed
// file is a defect of the build, caught by TestDefaultFactsValid, so it
// panics rather than letting the service run on wrong law.
var defaultFacts = sync.OnceValue(func() *Facts {
	f, err := ParseFacts(factsJSON)
	if err != nil {
		panic(fmt.Sprintf("transfer: embedded facts.json: %v", err))
	}
	return f
})

// DefaultFacts returns the facts embedded in the binary. Each call returns
// a fresh copy, so a caller that changes it affects no one else.
func DefaultFacts() *Facts {
	return defaultFacts().clone()
}

// ParseFacts decodes facts in the format of the embedded facts.json and
// validates them. Fields it does not know (the "note" fields) are ignored.
func ParseFacts(data []byte) (*Facts, error) {
	var f Facts
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

func (f *Facts) clone() *Facts {
	c := *f
	c.EEAMembers = slices.Clone(f.EEAMembers)
	c.EEATerritories = slices.Clone(f.EEATerritories)
	c.AdequacyDecisions = slices.Clone(f.AdequacyDecisions)
	c.SCCVersions = slices.Clone(f.SCCVersions)
	c.Mechanisms = slices.Clone(f.Mechanisms)
	for i, m := range c.Mechanisms {
		if m.Caveat != nil {
			cv := *m.Caveat
			c.Mechanisms[i].Caveat = &cv
		}
	}
	c.DPARequiredKinds = slices.Clone(f.DPARequiredKinds)
	return &c
}

// Validate reports every inconsistency in the facts: codes that are not
// ISO 3166-1, an EEA state listed twice, dates out of order, mechanisms
// that do not exist or that name a missing decision, a TransferMechanism
// with no rule.
func (f *Facts) Validate() error {
	var p problems
	f.validateEEA(&p)
	decisions := f.validateDecisions(&p)
	f.validateSCCVersions(&p)
	f.validateMechanisms(&p, decisions)
	f.validateDPAKinds(&p)
	return errors.Join(p...)
}

// problems collects what Validate finds, so every section reports all of
// its faults rather than the first.
type problems []error

func (p *problems) add(format string, args ...any) {
	*p = append(*p, fmt.Errorf(format, args...))
}

// validateEEA checks eea_members and eea_territories: ISO codes, each
// listed once across both lists, each territory in a listed member.
func (f *Facts) validateEEA(p *problems) {
	seen := map[string]bool{}
	for _, c := range f.EEAMembers {
		if !ValidCountry(c) {
			p.add("eea_members: %q is not an ISO 3166-1 alpha-2 code", c)
		}
		if seen[c] {
			p.add("eea_members: %s listed twice", c)
		}
		seen[c] = true
	}
	for _, t := range f.EEATerritories {
		if !ValidCountry(t.Country) {
			p.add("eea_territories: %q is not an ISO 3166-1 alpha-2 code", t.Country)
		}
		if seen[t.Country] {
			p.add("eea_territories: %s listed twice", t.Country)
		}
		seen[t.Country] = true
		if !slices.Contains(f.EEAMembers, t.Member) {
			p.add("eea_territories: %s belongs to %q, which is not an EEA member", t.Country, t.Member)
		}
	}
}

// validateDecisions checks adequacy_decisions and returns the references
// it saw, which mechanisms may name.
func (f *Facts) validateDecisions(p *problems) map[string]bool {
	decisions := map[string]bool{}
	for _, d := range f.AdequacyDecisions {
		switch {
		case d.Decision == "":
			p.add("adequacy_decisions: a decision for %s has no reference", d.Country)
		case decisions[d.Decision]:
			p.add("adequacy_decisions: %s listed twice", d.Decision)
		}
		decisions[d.Decision] = true
		if !ValidCountry(d.Country) {
			p.add("adequacy_decisions: %s: %q is not an ISO 3166-1 alpha-2 code", d.Decision, d.Country)
		}
		if f.InEEA(d.Country) {
			p.add("adequacy_decisions: %s covers %s, which is in the EEA", d.Decision, d.Country)
		}
		validateDecisionDates(p, d)
	}
	return decisions
}

// validateDecisionDates checks that a decision is adopted before it ends,
// by its sunset clause or by invalidation.
func validateDecisionDates(p *problems, d AdequacyDecision) {
	if d.Adopted.IsZero() {
		p.add("adequacy_decisions: %s has no adoption date", d.Decision)
	}
	if !d.AppliesUntil.IsZero() && d.AppliesUntil.Before(d.Adopted) {
		p.add("adequacy_decisions: %s applies until %s, before its adoption", d.Decision, d.AppliesUntil)
	}
	if !d.InvalidatedFrom.IsZero() && (d.InvalidatedFrom.Before(d.Adopted) || d.InvalidatedBy == "") {
		p.add("adequacy_decisions: %s: invalidated_from must follow adoption and name invalidated_by", d.Decision)
	}
}

// validateSCCVersions checks scc_versions: each named once, and its
// adoption, application, repeal and transition in that order.
func (f *Facts) validateSCCVersions(p *problems) {
	versions := map[string]bool{}
	for _, v := range f.SCCVersions {
		key := normalizeSCCVersion(v.Version)
		if key == "" || versions[key] {
			p.add("scc_versions: %q is empty or listed twice", v.Version)
		}
		versions[key] = true
		validateSCCDates(p, v)
	}
}

// validateSCCDates checks one set of clauses' dates against each other.
func validateSCCDates(p *problems, v SCCVersion) {
	if v.Adopted.IsZero() {
		p.add("scc_versions: %s has no adoption date", v.Version)
	}
	if !v.AppliesFrom.IsZero() && v.AppliesFrom.Before(v.Adopted) {
		p.add("scc_versions: %s applies before its adoption", v.Version)
	}
	if !v.RepealedFrom.IsZero() && (v.RepealedFrom.Before(v.Adopted) || v.RepealedBy == "") {
		p.add("scc_versions: %s: repealed_from must follow adoption and name repealed_by", v.Version)
	}
	if !v.TransitionUntil.IsZero() && (v.RepealedFrom.IsZero() || v.TransitionUntil.Before(v.RepealedFrom)) {
		p.add("scc_versions: %s: transition_until needs repealed_from before it", v.Version)
	}
}

// validateMechanisms checks each mechanism rule against the enum and the
// decisions, then that every TransferMechanism but UNSPECIFIED has a rule.
func (f *Facts) validateMechanisms(p *problems, decisions map[string]bool) {
	ruled := map[string]bool{}
	for _, m := range f.Mechanisms {
		validateMechanismName(p, m, ruled)
		ruled[m.Mechanism] = true
		if m.Name == "" || m.Article == "" {
			p.add("mechanisms: %s needs a name and an article", m.Mechanism)
		}
		validateMechanismBasis(p, m, decisions)
		validateCaveat(p, m)
	}
	for v, name := range registryv1.TransferMechanism_name {
		if registryv1.TransferMechanism(v) != registryv1.TransferMechanism_TRANSFER_MECHANISM_UNSPECIFIED && !ruled[name] {
			p.add("mechanisms: no rule for %s", name)
		}
	}
}

// validateMechanismName checks that m names a TransferMechanism other than
// UNSPECIFIED that no earlier rule (in ruled) has named.
func validateMechanismName(p *problems, m MechanismRule, ruled map[string]bool) {
	v, ok := registryv1.TransferMechanism_value[m.Mechanism]
	switch {
	case !ok:
		p.add("mechanisms: %q is not a TransferMechanism", m.Mechanism)
	case registryv1.TransferMechanism(v) == registryv1.TransferMechanism_TRANSFER_MECHANISM_UNSPECIFIED:
		p.add("mechanisms: %s is the absence of a mechanism and cannot have a rule", m.Mechanism)
	case ruled[m.Mechanism]:
		p.add("mechanisms: %s listed twice", m.Mechanism)
	}
}

// validateMechanismBasis checks that m's basis is known and that only an
// adequacy basis names a decision, one that is listed.
func validateMechanismBasis(p *problems, m MechanismRule, decisions map[string]bool) {
	switch m.Basis {
	case BasisAdequacy:
		if m.Decision != "" && !decisions[m.Decision] {
			p.add("mechanisms: %s rests on decision %q, which is not listed", m.Mechanism, m.Decision)
		}
	case BasisSCC, BasisReference:
		if m.Decision != "" {
			p.add("mechanisms: %s: only an adequacy basis may name a decision", m.Mechanism)
		}
	default:
		p.add("mechanisms: %s: unknown basis %q", m.Mechanism, m.Basis)
	}
	if m.Basis == BasisReference && m.Reference == "" {
		p.add("mechanisms: %s rests on its reference alone but does not say what it names", m.Mechanism)
	}
}

// validateCaveat checks m's caveat, when it has one: a code, a message and
// a known severity.
func validateCaveat(p *problems, m MechanismRule) {
	if m.Caveat == nil {
		return
	}
	if m.Caveat.Severity != "" && registryv1.Severity_value[m.Caveat.Severity] == 0 {
		p.add("mechanism %s: caveat severity %q is not a severity", m.Mechanism, m.Caveat.Severity)
	}
	if m.Caveat.Code == "" || m.Caveat.Message == "" {
		p.add("mechanisms: %s: a caveat needs a code and a message", m.Mechanism)
	}
}

// validateDPAKinds checks that dpa_required_kinds names SystemKinds.
func (f *Facts) validateDPAKinds(p *problems) {
	for _, k := range f.DPARequiredKinds {
		if _, ok := commonv1.SystemKind_value[k]; !ok {
			p.add("dpa_required_kinds: %q is not a SystemKind", k)
		}
	}
}

// InEEA reports whether country (ISO 3166-1 alpha-2) is in the EU/EEA, where
// the GDPR applies and Chapter V does not: sending data there is not a
// transfer to a third country.
func (f *Facts) InEEA(country string) bool {
	if slices.Contains(f.EEAMembers, country) {
		return true
	}
	return slices.ContainsFunc(f.EEATerritories, func(t Territory) bool { return t.Country == country })
}

// Rule returns what mechanism m needs; false for UNSPECIFIED and for a
// mechanism the facts do not know.
func (f *Facts) Rule(m registryv1.TransferMechanism) (MechanismRule, bool) {
	name := m.String()
	for _, r := range f.Mechanisms {
		if r.Mechanism == name {
			return r, true
		}
	}
	return MechanismRule{}, false
}

// Decision returns the adequacy decision with the given reference.
func (f *Facts) Decision(ref string) (AdequacyDecision, bool) {
	for _, d := range f.AdequacyDecisions {
		if d.Decision == ref {
			return d, true
		}
	}
	return AdequacyDecision{}, false
}

// SCCVersion returns the set of clauses that version names. Writers vary,
// so the match ignores case, spaces, an "(EU)" or "(EC)" prefix and an
// "/EU" or "/EC" suffix: "(EU) 2021/914" and "2021/914" are one version.
func (f *Facts) SCCVersion(version string) (SCCVersion, bool) {
	key := normalizeSCCVersion(version)
	if key == "" {
		return SCCVersion{}, false
	}
	for _, v := range f.SCCVersions {
		if normalizeSCCVersion(v.Version) == key {
			return v, true
		}
	}
	return SCCVersion{}, false
}

func normalizeSCCVersion(v string) string {
	v = strings.ToUpper(strings.Join(strings.Fields(v), ""))
	v = strings.TrimPrefix(v, "COMMISSIONIMPLEMENTINGDECISION")
	v = strings.TrimPrefix(v, "COMMISSIONDECISION")
	v = strings.TrimPrefix(v, "(EU)")
	v = strings.TrimPrefix(v, "(EC)")
	v = strings.TrimSuffix(v, "/EU")
	v = strings.TrimSuffix(v, "/EC")
	return v
}

// dpaRequired reports whether systems of kind k must have a
// data-processing agreement.
func (f *Facts) dpaRequired(k commonv1.SystemKind) bool {
	return slices.Contains(f.DPARequiredKinds, k.String())
}

// Date is a calendar day, written "2006-01-02" in the facts file. Law is
// made in days, not instants: Check compares the UTC day of the moment it is
// given, so a check a few hours either side of midnight in Brussels may
// fall on the neighbouring day, which is immaterial for a compliance report.
type Date struct {
	t time.Time // midnight UTC; the zero Time for no date
}

// NewDate returns the given day.
func NewDate(year int, month time.Month, day int) Date {
	return Date{time.Date(year, month, day, 0, 0, 0, 0, time.UTC)}
}

// ParseDate parses a day written "2006-01-02".
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return Date{}, err
	}
	return Date{t}, nil
}

// DateOf returns the UTC calendar day of t.
func DateOf(t time.Time) Date {
	y, m, d := t.UTC().Date()
	return NewDate(y, m, d)
}

// IsZero reports whether d is no date.
func (d Date) IsZero() bool { return d.t.IsZero() }

// Before reports whether d is an earlier day than e.
func (d Date) Before(e Date) bool { return d.t.Before(e.t) }

// After reports whether d is a later day than e.
func (d Date) After(e Date) bool { return d.t.After(e.t) }

// String returns the day as "2006-01-02", or "" for no date.
func (d Date) String() string {
	if d.IsZero() {
		return ""
	}
	return d.t.Format(time.DateOnly)
}

// Words returns the day as people write it in legal text: "16 July 2020".
func (d Date) Words() string {
	if d.IsZero() {
		return ""
	}
	return d.t.Format("2 January 2006")
}

// MarshalJSON writes the day as "2006-01-02".
func (d Date) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}

// UnmarshalJSON reads a day written "2006-01-02".
func (d *Date) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s == "" {
		*d = Date{}
		return nil
	}
	p, err := ParseDate(s)
	if err != nil {
		return err
	}
	*d = p
	return nil
}
