// Package transfer decides whether a system's transfer of personal data
// outside the EU/EEA is lawful under Chapter V of the GDPR (Articles 44 to
// 50), and whether a processor is bound by a data-processing agreement
// (Art. 28(3)).
//
// Lawfulness is computed from facts held as data, not written into code:
// facts.json lists the EEA states, the Commission's adequacy decisions with
// the days they applied, the sets of standard contractual clauses with the
// days they were repealed and their transitions ended, and what each
// TransferMechanism needs. Check compares a system with those facts on a
// given day, so the same register is judged as the law stood on that day:
// Privacy Shield was a valid ground in 2019 and is not in 2026. When the
// law changes (a new adequacy decision, a judgment, new clauses), facts.json
// changes and this code does not.
//
// Findings carry stable codes (the Code constants) for machines and
// messages that name the decision and the date for people.
package transfer

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
)

// The codes of the findings Check reports. They are stable: clients match on
// them, so a code is never renamed or reused for another problem.
const (
	// CodeMechanismMissing: a system outside the EU/EEA states no transfer
	// mechanism, so the transfer has no ground under Art. 44. Critical.
	CodeMechanismMissing = "TRANSFER_MECHANISM_MISSING"
	// CodeMechanismUnknown: the mechanism is one the facts hold no rule
	// for, so its lawfulness cannot be shown. Critical.
	CodeMechanismUnknown = "TRANSFER_MECHANISM_UNKNOWN"
	// CodeMechanismInvalidated: the adequacy decision the mechanism rests
	// on was annulled or repealed before the check date (Privacy Shield
	// after Schrems II). Critical.
	CodeMechanismInvalidated = "TRANSFER_MECHANISM_INVALIDATED"
	// CodeMechanismExpired: the adequacy decision the mechanism rests on
	// reached the end of its sunset clause. Critical.
	CodeMechanismExpired = "TRANSFER_MECHANISM_EXPIRED"
	// CodeMechanismNotYetInForce: the adequacy decision the mechanism rests
	// on was adopted after the check date. Critical.
	CodeMechanismNotYetInForce = "TRANSFER_MECHANISM_NOT_YET_IN_FORCE"
	// CodeAdequacyNotCoveringCountry: no adequacy decision in force on the
	// check date covers the system's country. Critical.
	CodeAdequacyNotCoveringCountry = "ADEQUACY_NOT_COVERING_COUNTRY"
	// CodeAdequacyCertificationRequired: the only adequacy decisions for
	// the country cover certified recipients alone (the Data Privacy
	// Framework), so "adequacy decision" must be recorded as the specific
	// framework with the certification. Warning.
	CodeAdequacyCertificationRequired = "ADEQUACY_CERTIFICATION_REQUIRED"
	// CodeSCCVersionMissing: standard contractual clauses without the
	// decision that adopted them, so their validity cannot be checked.
	// Warning.
	CodeSCCVersionMissing = "SCC_VERSION_MISSING"
	// CodeSCCVersionUnknown: clauses of a version the facts do not list.
	// Warning.
	CodeSCCVersionUnknown = "SCC_VERSION_UNKNOWN"
	// CodeSCCVersionNotYetInForce: clauses that did not yet apply on the
	// check date. Critical.
	CodeSCCVersionNotYetInForce = "SCC_VERSION_NOT_YET_IN_FORCE"
	// CodeSCCVersionSuperseded: clauses of a repealed version; a warning
	// while its transition runs, critical once it has ended.
	CodeSCCVersionSuperseded = "SCC_VERSION_SUPERSEDED"
	// CodeSCCSignedAfterRepeal: clauses of a version signed on or after the
	// day it was repealed for new contracts. Critical.
	CodeSCCSignedAfterRepeal = "SCC_SIGNED_AFTER_REPEAL"
	// CodeReferenceMissing: a mechanism that must be documented (a
	// certification, approved binding corporate rules, the Art. 49 ground)
	// has no reference. Warning.
	CodeReferenceMissing = "REFERENCE_MISSING"
	// CodeDerogationSystematic: a registered system, which receives data
	// routinely, whose transfer rests on an Art. 49 derogation, which
	// covers occasional transfers only (EDPB Guidelines 2/2018). Warning;
	// its text and severity are the caveat in facts.json.
	CodeDerogationSystematic = "DEROGATION_SYSTEMATIC"
	// CodeDPAMissing: a processor or sub-processor without a
	// data-processing agreement signed by the check date (Art. 28(3)).
	// Warning.
	CodeDPAMissing = "DPA_MISSING"
	// CodeCountryUnknown: the system's country is not an assigned ISO
	// 3166-1 code, so where the data goes is not known; the system is
	// treated as outside the EEA. Warning.
	CodeCountryUnknown = "COUNTRY_UNKNOWN"
)

const (
	critical = registryv1.Severity_SEVERITY_CRITICAL
	warning  = registryv1.Severity_SEVERITY_WARNING
	info     = registryv1.Severity_SEVERITY_INFO
)

// Check returns what is wrong with sys's transfer and processing agreement
// as the law stood on the day of at, most severe first; nil when nothing
// is. A system in the EU/EEA needs no transfer mechanism, so one recorded
// there is ignored rather than reported.
func (f *Facts) Check(sys *registryv1.System, at time.Time) []*registryv1.Finding {
	if sys == nil {
		return nil
	}
	c := checker{f: f, sys: sys, day: DateOf(at)}
	c.checkDPA()
	c.checkTransfer()
	SortFindings(c.out)
	return c.out
}

// checker collects the findings of one system on one day.
type checker struct {
	f   *Facts
	sys *registryv1.System
	day Date
	out []*registryv1.Finding
}

func (c *checker) add(sev registryv1.Severity, code, format string, args ...any) {
	c.out = append(c.out, &registryv1.Finding{
		SystemId: c.sys.GetSystemId(),
		Severity: sev,
		Code:     code,
		Message:  fmt.Sprintf(format, args...),
	})
}

// who names the system in messages.
func (c *checker) who() string {
	if n := c.sys.GetName(); n != "" {
		return fmt.Sprintf("%s (%s)", n, c.sys.GetSystemId())
	}
	return c.sys.GetSystemId()
}

// where names the system's country in messages.
func (c *checker) where() string {
	return countryWords(c.sys.GetCountry())
}

func countryWords(code string) string {
	if n := CountryName(code); n != "" {
		return fmt.Sprintf("%s (%s)", n, code)
	}
	if code == "" {
		return "a country not recorded"
	}
	return fmt.Sprintf("%q", code)
}

// checkDPA applies Art. 28(3): processing by a processor is governed by a
// contract, which must exist on the day checked.
func (c *checker) checkDPA() {
	kind := c.sys.GetKind()
	if !c.f.dpaRequired(kind) {
		return
	}
	what := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(kind.String(), "SYSTEM_KIND_"), "_", "-"))
	signed := c.sys.GetDpaSignedAt()
	if signed == nil {
		c.add(warning, CodeDPAMissing,
			"%s is a %s but no data-processing agreement is recorded; GDPR Art. 28(3) requires a contract binding it to the controller's instructions.",
			c.who(), what)
		return
	}
	if d := DateOf(signed.AsTime()); d.After(c.day) {
		c.add(warning, CodeDPAMissing,
			"%s is a %s whose data-processing agreement was signed on %s, after %s; GDPR Art. 28(3) requires one for all its processing.",
			c.who(), what, d.Words(), c.day.Words())
	}
}

// checkTransfer applies Chapter V to a system outside the EU/EEA.
func (c *checker) checkTransfer() {
	country := c.sys.GetCountry()
	if c.f.InEEA(country) {
		return
	}
	switch {
	case country == "":
		c.add(warning, CodeCountryUnknown,
			"%s has no country recorded: where it processes the data is not known, so Lethe treats it as outside the EU/EEA (GDPR Art. 44).",
			c.who())
	case !ValidCountry(country):
		c.add(warning, CodeCountryUnknown,
			"%s is recorded in %q, which is not an assigned ISO 3166-1 alpha-2 code; Lethe treats it as outside the EU/EEA.",
			c.who(), country)
	}
	t := c.sys.GetTransfer()
	m := t.GetMechanism()
	if m == registryv1.TransferMechanism_TRANSFER_MECHANISM_UNSPECIFIED {
		c.add(critical, CodeMechanismMissing,
			"%s processes data in %s, outside the EU/EEA, with no transfer mechanism recorded; GDPR Art. 44 allows a transfer only under Chapter V (an adequacy decision, appropriate safeguards or a derogation).",
			c.who(), c.where())
		return
	}
	rule, ok := c.f.Rule(m)
	if !ok {
		c.add(critical, CodeMechanismUnknown,
			"%s relies on %s, for which Lethe holds no legal facts, so the transfer to %s cannot be shown lawful.",
			c.who(), m, c.where())
		return
	}

	before := len(c.out)
	switch rule.Basis {
	case BasisAdequacy:
		c.checkAdequacy(rule)
	case BasisSCC:
		c.checkSCC(rule, t)
	case BasisReference:
		// Nothing to check against: the reference below is the proof.
	}
	// A transfer already without a ground gains nothing from a note that
	// its paperwork is incomplete.
	groundless := slices.ContainsFunc(c.out[before:], func(f *registryv1.Finding) bool { return f.GetSeverity() == critical })
	if rule.Reference != "" && strings.TrimSpace(t.GetReference()) == "" && !groundless {
		c.add(warning, CodeReferenceMissing,
			"%s relies on the %s (%s) with no reference; record %s.",
			c.who(), rule.Name, rule.Article, rule.Reference)
	}
	if rule.Caveat != nil {
		c.add(rule.Caveat.SeverityOf(), rule.Caveat.Code, "%s: %s", c.who(), rule.Caveat.Message)
	}
}

// decisionStatus is where an adequacy decision stands on a day.
type decisionStatus int

const (
	inForce decisionStatus = iota
	notYetAdopted
	expired
	invalidated
)

func (d AdequacyDecision) statusOn(day Date) decisionStatus {
	switch {
	case day.Before(d.Adopted):
		return notYetAdopted
	case !d.InvalidatedFrom.IsZero() && !day.Before(d.InvalidatedFrom):
		return invalidated
	case !d.AppliesUntil.IsZero() && day.After(d.AppliesUntil):
		return expired
	}
	return inForce
}

// InForce reports whether the decision applies on day: adopted by then,
// neither invalidated nor past its sunset clause.
func (d AdequacyDecision) InForce(day Date) bool { return d.statusOn(day) == inForce }

// Describe says where the decision stands on day, naming the judgment or
// date that ended it: "Decision (EU) 2016/1250 (EU-US Privacy Shield) was
// invalidated by the CJEU in Case C-311/18 … with effect from 16 July 2020".
func (d AdequacyDecision) Describe(day Date) string {
	name := fmt.Sprintf("Decision %s (%s)", d.Decision, d.Title)
	switch d.statusOn(day) {
	case notYetAdopted:
		return fmt.Sprintf("%s was adopted only on %s", name, d.Adopted.Words())
	case invalidated:
		return fmt.Sprintf("%s was invalidated by %s with effect from %s", name, d.InvalidatedBy, d.InvalidatedFrom.Words())
	case expired:
		return fmt.Sprintf("%s applied only until %s", name, d.AppliesUntil.Words())
	}
	return name + " is in force"
}

// checkAdequacy applies Art. 45(1): a transfer may rest on a Commission
// decision that the country ensures an adequate level of protection, for
// as long as that decision applies.
func (c *checker) checkAdequacy(rule MechanismRule) {
	country := c.sys.GetCountry()
	if rule.Decision != "" {
		d, ok := c.f.Decision(rule.Decision)
		if !ok { // Validate prevents this; fail closed if facts were built by hand.
			c.add(critical, CodeMechanismUnknown,
				"%s relies on the %s, whose decision %s Lethe does not hold.", c.who(), rule.Name, rule.Decision)
			return
		}
		if d.Country != country {
			c.add(critical, CodeAdequacyNotCoveringCountry,
				"%s relies on the %s, but Commission Decision %s covers only %s, and the system processes data in %s.",
				c.who(), rule.Name, d.Decision, countryWords(d.Country), c.where())
			return
		}
		switch d.statusOn(c.day) {
		case invalidated:
			c.add(critical, CodeMechanismInvalidated,
				"%s relies on the %s (Commission Decision %s), which was invalidated by %s with effect from %s; on %s its transfer to %s has no ground under GDPR Art. 44 until it rests on another Chapter V mechanism.",
				c.who(), rule.Name, d.Decision, d.InvalidatedBy, d.InvalidatedFrom.Words(), c.day.Words(), c.where())
		case expired:
			c.add(critical, CodeMechanismExpired,
				"%s relies on the %s (Commission Decision %s), which applied only until %s; on %s its transfer to %s has no ground under GDPR Art. 44.",
				c.who(), rule.Name, d.Decision, d.AppliesUntil.Words(), c.day.Words(), c.where())
		case notYetAdopted:
			c.add(critical, CodeMechanismNotYetInForce,
				"%s relies on the %s (Commission Decision %s), which was adopted only on %s; on %s its transfer to %s had no ground under it.",
				c.who(), rule.Name, d.Decision, d.Adopted.Words(), c.day.Words(), c.where())
		}
		return
	}

	var valid, other []AdequacyDecision
	for _, d := range c.f.AdequacyDecisions {
		if d.Country != country {
			continue
		}
		if d.statusOn(c.day) == inForce {
			valid = append(valid, d)
		} else {
			other = append(other, d)
		}
	}
	if len(valid) == 0 {
		msg := fmt.Sprintf("%s relies on an adequacy decision, but on %s no decision of the Commission under GDPR Art. 45 covers %s",
			c.who(), c.day.Words(), c.where())
		if len(other) > 0 {
			var why []string
			for _, d := range other {
				why = append(why, d.Describe(c.day))
			}
			msg += ": " + strings.Join(why, "; ")
		}
		c.add(critical, CodeAdequacyNotCoveringCountry, "%s.", msg)
		return
	}
	if slices.ContainsFunc(valid, func(d AdequacyDecision) bool { return !d.CertificationRequired }) {
		return
	}
	d := valid[0]
	c.add(warning, CodeAdequacyCertificationRequired,
		"%s relies on an adequacy decision, but the only one for %s, Commission Decision %s (%s), covers only %s; record the transfer under that framework with the recipient's certification.",
		c.who(), c.where(), d.Decision, d.Title, d.Scope)
}

// checkSCC applies Art. 46(2)(c): standard contractual clauses are a
// safeguard only in a version the Commission has adopted and not yet
// withdrawn, or within the transition it granted (Art. 4 of Decision
// (EU) 2021/914 for the clauses it replaced).
func (c *checker) checkSCC(rule MechanismRule, t *registryv1.Transfer) {
	raw := strings.TrimSpace(t.GetSccVersion())
	if raw == "" {
		c.add(warning, CodeSCCVersionMissing,
			"%s relies on %s (%s) without naming the version; record the Commission decision that adopted them, such as %s, so their validity can be checked.",
			c.who(), rule.Name, rule.Article, c.currentSCCVersions())
		return
	}
	v, ok := c.f.SCCVersion(raw)
	if !ok {
		c.add(warning, CodeSCCVersionUnknown,
			"%s relies on %s of version %q, which is not a set Lethe knows (%s); check the clauses and record the decision that adopted them.",
			c.who(), rule.Name, raw, c.knownSCCVersions())
		return
	}
	from := v.AppliesFrom
	if from.IsZero() {
		from = v.Adopted
	}
	if c.day.Before(from) {
		c.add(critical, CodeSCCVersionNotYetInForce,
			"%s relies on %s %s, which applied only from %s; on %s they were no safeguard.",
			c.who(), rule.Name, v.Version, from.Words(), c.day.Words())
		return
	}
	if v.RepealedFrom.IsZero() || c.day.Before(v.RepealedFrom) {
		return
	}
	var since Date
	if t.GetSince() != nil {
		since = DateOf(t.GetSince().AsTime())
	}
	switch {
	case !since.IsZero() && !since.Before(v.RepealedFrom):
		c.add(critical, CodeSCCSignedAfterRepeal,
			"%s relies on %s %s signed on %s, but that version was repealed for new contracts from %s (%s); a contract concluded since then must use %s.",
			c.who(), rule.Name, v.Version, since.Words(), v.RepealedFrom.Words(), v.RepealedBy, c.currentSCCVersions())
	case v.TransitionUntil.IsZero() || c.day.After(v.TransitionUntil):
		end := "on its repeal"
		if !v.TransitionUntil.IsZero() {
			end = "after " + v.TransitionUntil.Words()
		}
		c.add(critical, CodeSCCVersionSuperseded,
			"%s relies on %s %s, a superseded version past its transition: repealed from %s (%s), it ceased to provide appropriate safeguards %s; replace it with %s.",
			c.who(), rule.Name, v.Version, v.RepealedFrom.Words(), v.RepealedBy, end, c.currentSCCVersions())
	default:
		msg := fmt.Sprintf("%s relies on %s %s, repealed from %s (%s): contracts concluded before that day remain a safeguard only until %s and only while the processing stays unchanged; replace them with %s before then",
			c.who(), rule.Name, v.Version, v.RepealedFrom.Words(), v.RepealedBy, v.TransitionUntil.Words(), c.currentSCCVersions())
		if since.IsZero() {
			msg += "; the signing date is not recorded, so it cannot be shown that the contract predates the repeal"
		}
		c.add(warning, CodeSCCVersionSuperseded, "%s.", msg)
	}
}

// Describe says whether the clauses were repealed by day and until when
// contracts concluded before the repeal remained a safeguard; "" while
// they stand.
func (v SCCVersion) Describe(day Date) string {
	if v.RepealedFrom.IsZero() || day.Before(v.RepealedFrom) {
		return ""
	}
	s := fmt.Sprintf("Decision %s was repealed from %s (%s)", v.Version, v.RepealedFrom.Words(), v.RepealedBy)
	if !v.TransitionUntil.IsZero() {
		s += fmt.Sprintf(", contracts concluded before then remaining a safeguard until %s", v.TransitionUntil.Words())
	}
	return s
}

// currentSCCVersions names the versions in force on the check day, for
// advice.
func (c *checker) currentSCCVersions() string {
	var vs []string
	for _, v := range c.f.SCCVersions {
		from := v.AppliesFrom
		if from.IsZero() {
			from = v.Adopted
		}
		if !c.day.Before(from) && (v.RepealedFrom.IsZero() || c.day.Before(v.RepealedFrom)) {
			vs = append(vs, v.Version)
		}
	}
	if len(vs) == 0 {
		return "a version in force"
	}
	return "Decision " + strings.Join(vs, " or ")
}

func (c *checker) knownSCCVersions() string {
	var vs []string
	for _, v := range c.f.SCCVersions {
		vs = append(vs, v.Version)
	}
	return strings.Join(vs, ", ")
}

// SortFindings orders findings most severe first, then by system id, then by
// code (then message, so the order never depends on the input's).
func SortFindings(fs []*registryv1.Finding) {
	slices.SortStableFunc(fs, func(a, b *registryv1.Finding) int {
		return cmp.Or(
			cmp.Compare(b.GetSeverity(), a.GetSeverity()),
			strings.Compare(a.GetSystemId(), b.GetSystemId()),
			strings.Compare(a.GetCode(), b.GetCode()),
			strings.Compare(a.GetMessage(), b.GetMessage()),
		)
	})
}
