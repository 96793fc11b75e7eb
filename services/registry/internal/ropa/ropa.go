// Package ropa renders a tenant's records of processing activities, the
// record every controller keeps under Article 30(1) of the GDPR and makes
// available to the supervisory authority on request (Art. 30(4)), and
// selects the public list of its processors and sub-processors.
//
// Render builds one document from the register and writes it as JSON (for
// machines), CSV (for spreadsheets) or Markdown (for people and for
// publishing). Every format carries every item Art. 30(1) lists:
//
//	(a) the name and contact details of the controller and of its data
//	    protection officer (with the supervisory authority, Art. 77)
//	(b) the purposes of the processing (with its legal basis, Art. 6(1))
//	(c) the categories of data subjects and of personal data
//	(d) the categories of recipients
//	(e) transfers to third countries, with their safeguards
//	(f) the envisaged time limits for erasure
//	(g) the technical and organisational security measures (Art. 32(1))
//
// The package reads the register and writes bytes; it stores nothing and
// never fails on an incomplete register: what is missing is written as
// missing, so that the gap shows in the record rather than in a log.
package ropa

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/services/registry/internal/transfer"
)

// Media types of the three formats.
const (
	ContentTypeJSON     = "application/json"
	ContentTypeCSV      = "text/csv; charset=utf-8"
	ContentTypeMarkdown = "text/markdown; charset=utf-8"
)

// Record is what the records of processing are rendered from: one tenant's
// register at one moment.
type Record struct {
	// Tenant is the controller. Required.
	Tenant *registryv1.Tenant
	// Activities are the tenant's processing activities; rendered sorted
	// by activity id.
	Activities []*registryv1.ProcessingActivity
	// Systems are the tenant's current systems by id, to resolve each
	// activity's recipients. An id missing here is rendered as
	// "unknown system <id>".
	Systems map[string]*registryv1.System
	// GeneratedAt dates the record. Required: a record is a statement of
	// the register at a moment, and adequacy decisions are named as they
	// stood then.
	GeneratedAt time.Time

	// InEEA says whether a country is in the EU/EEA, so that only
	// recipients outside it are listed as transfers (Art. 30(1)(e)). Nil
	// for Facts.InEEA.
	InEEA func(country string) bool
	// Facts give the transfer mechanisms and adequacy decisions in words.
	// Nil for transfer.DefaultFacts().
	Facts *transfer.Facts
	// Categories, when set, resolve data-category ids to their names and
	// flag the special categories of Art. 9; without them categories are
	// rendered by id.
	Categories map[string]*registryv1.Category
	// ControllerContact, when set, is the controller's own contact details
	// (Art. 30(1)(a)); the tenant holds only its data protection officer's.
	ControllerContact *registryv1.Contact
}

// Render writes the records of processing in format (JSON when
// unspecified) and returns their media type.
func Render(r Record, format registryv1.ExportFormat) (contentType string, content []byte, err error) {
	doc, err := build(r)
	if err != nil {
		return "", nil, err
	}
	switch format {
	case registryv1.ExportFormat_EXPORT_FORMAT_UNSPECIFIED, registryv1.ExportFormat_EXPORT_FORMAT_JSON:
		b, err := renderJSON(doc)
		return ContentTypeJSON, b, err
	case registryv1.ExportFormat_EXPORT_FORMAT_CSV:
		b, err := renderCSV(doc)
		return ContentTypeCSV, b, err
	case registryv1.ExportFormat_EXPORT_FORMAT_MARKDOWN:
		return ContentTypeMarkdown, renderMarkdown(doc), nil
	}
	return "", nil, fmt.Errorf("ropa: unknown export format %v", format)
}

// SubProcessors returns the processors and sub-processors among systems,
// sorted by id: the list a controller publishes so that subjects know who
// processes their data on its behalf (Art. 28(2) and (4), Art. 13(1)(e)).
// The systems themselves are shared, not copied.
func SubProcessors(systems []*registryv1.System) []*registryv1.System {
	out := []*registryv1.System{}
	for _, s := range systems {
		switch s.GetKind() {
		case commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR:
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b *registryv1.System) int { return cmp.Compare(a.GetSystemId(), b.GetSystemId()) })
	return out
}

// legalBases words each Art. 6(1) basis as the Regulation does.
var legalBases = map[commonv1.LegalBasis]legalBasis{
	commonv1.LegalBasis_LEGAL_BASIS_CONSENT:              {Article: "Art. 6(1)(a)", Description: "consent of the data subject"},
	commonv1.LegalBasis_LEGAL_BASIS_CONTRACT:             {Article: "Art. 6(1)(b)", Description: "necessary for the performance of a contract with the data subject"},
	commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION:     {Article: "Art. 6(1)(c)", Description: "necessary for compliance with a legal obligation of the controller"},
	commonv1.LegalBasis_LEGAL_BASIS_VITAL_INTERESTS:      {Article: "Art. 6(1)(d)", Description: "necessary to protect the vital interests of a natural person"},
	commonv1.LegalBasis_LEGAL_BASIS_PUBLIC_TASK:          {Article: "Art. 6(1)(e)", Description: "necessary for a task carried out in the public interest or in the exercise of official authority"},
	commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS: {Article: "Art. 6(1)(f)", Description: "necessary for the legitimate interests of the controller or a third party"},
}

// kindLabels words what a system is to the controller.
var kindLabels = map[commonv1.SystemKind]string{
	commonv1.SystemKind_SYSTEM_KIND_INTERNAL:      "internal system of the controller",
	commonv1.SystemKind_SYSTEM_KIND_PROCESSOR:     "processor",
	commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR: "sub-processor",
	commonv1.SystemKind_SYSTEM_KIND_RECIPIENT:     "independent recipient",
}

// build turns the register into the document every format renders, so the
// three formats cannot disagree.
func build(r Record) (*document, error) {
	if r.Tenant == nil {
		return nil, errors.New("ropa: the record has no tenant")
	}
	if r.GeneratedAt.IsZero() {
		return nil, errors.New("ropa: the record has no GeneratedAt")
	}
	facts := r.Facts
	if facts == nil {
		facts = transfer.DefaultFacts()
	}
	inEEA := r.InEEA
	if inEEA == nil {
		inEEA = facts.InEEA
	}
	b := builder{r: r, facts: facts, inEEA: inEEA, day: transfer.DateOf(r.GeneratedAt)}

	t := r.Tenant
	settings := t.GetSettings()
	doc := &document{
		Schema:      SchemaVersion,
		Regulation:  "Regulation (EU) 2016/679 (GDPR), Article 30(1)",
		GeneratedAt: r.GeneratedAt.UTC().Format(time.RFC3339),
		Controller: controller{
			TenantID:              t.GetTenantId(),
			Name:                  t.GetDisplayName(),
			Country:               settings.GetCountry(),
			CountryName:           transfer.CountryName(settings.GetCountry()),
			Contact:               contactOf(r.ControllerContact),
			DataProtectionOfficer: contactOf(settings.GetDpo()),
			SupervisoryAuthority:  authorityOf(settings.GetSupervisoryAuthority()),
		},
		Activities: []activity{},
	}
	acts := slices.Clone(r.Activities)
	acts = slices.DeleteFunc(acts, func(a *registryv1.ProcessingActivity) bool { return a == nil })
	slices.SortStableFunc(acts, func(a, b *registryv1.ProcessingActivity) int {
		return cmp.Compare(a.GetActivityId(), b.GetActivityId())
	})
	for _, a := range acts {
		doc.Activities = append(doc.Activities, b.activity(a))
	}
	return doc, nil
}

type builder struct {
	r     Record
	facts *transfer.Facts
	inEEA func(string) bool
	day   transfer.Date
}

func (b builder) activity(a *registryv1.ProcessingActivity) activity {
	out := activity{
		ActivityID:             a.GetActivityId(),
		Name:                   a.GetName(),
		Purpose:                a.GetPurpose(),
		PurposeID:              a.GetPurposeId(),
		DataSubjectCategories:  nonNil(slices.Clone(a.GetDataSubjectCategories())),
		PersonalDataCategories: []category{},
		Recipients:             []recipient{},
		ThirdCountryTransfers:  []thirdCountryTransfer{},
		Retention:              a.GetRetention(),
		RetentionRuleID:        a.GetRetentionRuleId(),
		SecurityMeasures:       nonNil(slices.Clone(a.GetSecurityMeasures())),
	}
	lb := legalBases[a.GetLegalBasis()]
	lb.Code = a.GetLegalBasis().String()
	if lb.Article == "" {
		lb.Description = "not stated"
	}
	out.LegalBasis = lb

	for _, c := range a.GetCategories() {
		cat := category{ID: c.GetId()}
		if known := b.r.Categories[c.GetId()]; known != nil {
			cat.Name = known.GetName()
			cat.SpecialCategory = known.GetSensitive()
		}
		out.PersonalDataCategories = append(out.PersonalDataCategories, cat)
	}

	for _, id := range a.GetRecipientSystemIds() {
		sys := b.r.Systems[id]
		if sys == nil {
			out.Recipients = append(out.Recipients, recipient{SystemID: id, Name: "unknown system " + id})
			continue
		}
		rc := recipient{
			SystemID:    id,
			Name:        sys.GetName(),
			Registered:  true,
			Kind:        sys.GetKind().String(),
			KindLabel:   cmp.Or(kindLabels[sys.GetKind()], "kind not stated"),
			Country:     sys.GetCountry(),
			CountryName: transfer.CountryName(sys.GetCountry()),
			InEEA:       b.inEEA(sys.GetCountry()),
		}
		if p := sys.GetParentSystemId(); p != "" && sys.GetKind() == commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR {
			rc.ProcessorID = p
			rc.ProcessorName = "unknown system " + p
			if parent := b.r.Systems[p]; parent != nil {
				rc.ProcessorName = parent.GetName()
			}
		}
		out.Recipients = append(out.Recipients, rc)
		if !rc.InEEA {
			out.ThirdCountryTransfers = append(out.ThirdCountryTransfers, b.transfer(sys))
		}
	}
	return out
}

// transfer describes the safeguard of a recipient outside the EU/EEA as the
// register records it. Whether it is still lawful is the transfer
// package's finding, not the record's: the record states what the
// controller relies on.
func (b builder) transfer(sys *registryv1.System) thirdCountryTransfer {
	t := sys.GetTransfer()
	out := thirdCountryTransfer{
		SystemID:    sys.GetSystemId(),
		Recipient:   sys.GetName(),
		Country:     sys.GetCountry(),
		CountryName: transfer.CountryName(sys.GetCountry()),
		Mechanism:   t.GetMechanism().String(),
		SCCVersion:  t.GetSccVersion(),
		Reference:   t.GetReference(),
	}
	if t.GetSince() != nil {
		out.Since = transfer.DateOf(t.GetSince().AsTime()).String()
	}

	out.Safeguard = b.safeguard(sys.GetCountry(), t.GetMechanism(), out)
	return out
}

// safeguard words the mechanism with what identifies it: the decision it
// rests on, the reference and the date, as "Standard contractual clauses:
// Commission Decision 2021/914 (GDPR Art. 46(2)(c)), since 1 March 2022",
// and notes when that decision no longer applied on the record's date.
// It uses no semicolons, which separate the transfers of a CSV cell.
func (b builder) safeguard(country string, m registryv1.TransferMechanism, tr thirdCountryTransfer) string {
	// status states, from the facts, that the instrument relied on no
	// longer applies. The record stays a statement of what the controller
	// relies on; the assessment is the transfer findings'.
	var s, status string
	rule, ok := b.facts.Rule(m)
	switch {
	case m == registryv1.TransferMechanism_TRANSFER_MECHANISM_UNSPECIFIED:
		return "none recorded"
	case !ok:
		s = m.String()
	case rule.Decision != "":
		s = fmt.Sprintf("%s: Commission Decision %s (%s)", capitalize(rule.Name), rule.Decision, rule.Article)
		if d, ok := b.facts.Decision(rule.Decision); ok && !d.InForce(b.day) {
			status = d.Describe(b.day)
		}
	case rule.Basis == transfer.BasisAdequacy:
		s = fmt.Sprintf("%s (%s)", capitalize(rule.Name), rule.Article)
		if d, ok := b.adequacyFor(country); ok {
			s = fmt.Sprintf("%s for %s: Commission Decision %s (%s)", capitalize(rule.Name), d.Title, d.Decision, rule.Article)
		}
	case rule.Basis == transfer.BasisSCC && tr.SCCVersion != "":
		s = fmt.Sprintf("%s: Commission Decision %s (%s)", capitalize(rule.Name), tr.SCCVersion, rule.Article)
		if v, ok := b.facts.SCCVersion(tr.SCCVersion); ok {
			status = v.Describe(b.day)
		}
	case rule.Basis == transfer.BasisSCC:
		s = fmt.Sprintf("%s (%s), version not recorded", capitalize(rule.Name), rule.Article)
	default:
		s = fmt.Sprintf("%s (%s)", capitalize(rule.Name), rule.Article)
	}
	if tr.Reference != "" {
		s += ", reference “" + tr.Reference + "”"
	}
	if tr.Since != "" {
		if d, err := transfer.ParseDate(tr.Since); err == nil {
			s += ", since " + d.Words()
		}
	}
	if status != "" {
		s += " — " + status
	}
	return s
}

// adequacyFor returns the adequacy decision that covered country on the
// record's date, preferring one that needs no certification.
func (b builder) adequacyFor(country string) (transfer.AdequacyDecision, bool) {
	var found []transfer.AdequacyDecision
	for _, d := range b.facts.AdequacyDecisions {
		if d.Country == country && d.InForce(b.day) {
			found = append(found, d)
		}
	}
	if len(found) == 0 {
		return transfer.AdequacyDecision{}, false
	}
	slices.SortStableFunc(found, func(x, y transfer.AdequacyDecision) int {
		// Uncertified first, then the most recent.
		if x.CertificationRequired != y.CertificationRequired {
			if x.CertificationRequired {
				return 1
			}
			return -1
		}
		return cmp.Compare(y.Adopted.String(), x.Adopted.String())
	})
	return found[0], true
}

func contactOf(c *registryv1.Contact) *contact {
	if c == nil || (c.GetName() == "" && c.GetEmail() == "" && c.GetPhone() == "" && c.GetUrl() == "") {
		return nil
	}
	return &contact{Name: c.GetName(), Email: c.GetEmail(), Phone: c.GetPhone(), URL: c.GetUrl()}
}

func authorityOf(a *registryv1.SupervisoryAuthority) *authority {
	if a == nil || (a.GetName() == "" && a.GetCountry() == "" && a.GetUrl() == "") {
		return nil
	}
	return &authority{Name: a.GetName(), Country: a.GetCountry(), CountryName: transfer.CountryName(a.GetCountry()), URL: a.GetUrl()}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}
