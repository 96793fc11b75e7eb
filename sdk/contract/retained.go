package contract

import (
	"fmt"
	"strings"
	"unicode/utf8"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// MaxLawLen is the longest law citation of a Retention, in characters, as
// the proto allows.
const MaxLawLen = 500

// FieldProblem is one field of a message that is wrong, and why. Field is
// a path relative to the message checked ("retained[0].exemption").
type FieldProblem struct {
	Field       string
	Description string
}

// Error returns "field: description".
func (p FieldProblem) Error() string { return p.Field + ": " + p.Description }

// CheckRetained reports what keeps the retentions of a RETAINED answer to
// an erasure from justifying the data kept. GDPR Art. 17(1) obliges
// erasure without undue delay, and Art. 17(3) lists the only grounds on
// which data may be kept despite it: (a) freedom of expression and
// information, (b) a legal obligation under Union or Member State law or a
// public task, (c) public health, (d) archiving, research or statistics
// under Art. 89(1), (e) legal claims. An Art. 6(1) basis alone (consent, a
// contract, legitimate interests) is none of them. For ground (b) the law
// must be cited, and the processing that continues rests on Art. 6(1)(c)
// or (e). field names the list ("retained").
func CheckRetained(field string, kept []*eventsv1.Retention) []FieldProblem {
	var out []FieldProblem
	for i, r := range kept {
		at := fmt.Sprintf("%s[%d]", field, i)
		g := r.GetExemption()
		switch {
		case g == eventsv1.ExemptionGround_EXEMPTION_GROUND_UNSPECIFIED:
			out = append(out, FieldProblem{at + ".exemption", "keeping data after an erasure needs an Art. 17(3) ground (a) to (e); a legal basis under Art. 6(1) alone is none"})
		case g.Descriptor().Values().ByNumber(g.Number()) == nil:
			out = append(out, FieldProblem{at + ".exemption", fmt.Sprintf("%d is not an Art. 17(3) ground", g)})
		case g == eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_OBLIGATION:
			if strings.TrimSpace(r.GetLaw()) == "" {
				out = append(out, FieldProblem{at + ".law", "Art. 17(3)(b) needs the Union or Member State law that requires keeping the data, cited by act and section"})
			}
			if b := r.GetLegalBasis(); b != commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION && b != commonv1.LegalBasis_LEGAL_BASIS_PUBLIC_TASK {
				out = append(out, FieldProblem{at + ".legal_basis", fmt.Sprintf("Art. 17(3)(b) keeps data for a legal obligation or a public task, Art. 6(1)(c) or (e), not %s", b)})
			}
		}
		if utf8.RuneCountInString(r.GetLaw()) > MaxLawLen {
			out = append(out, FieldProblem{at + ".law", fmt.Sprintf("at most %d characters", MaxLawLen)})
		}
	}
	return out
}
