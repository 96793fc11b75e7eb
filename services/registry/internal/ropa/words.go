package ropa

import (
	"fmt"
	"strings"
)

// The helpers below word the document for people; CSV and Markdown share
// them so that a spreadsheet and a published page say the same thing.

// notRecorded marks an Art. 30(1) item the register does not hold: the gap
// is stated, never hidden.
const notRecorded = "not recorded"

func placeWords(code, name string) string {
	switch {
	case code == "":
		return "country not recorded"
	case name == "":
		return code
	}
	return fmt.Sprintf("%s (%s)", name, code)
}

func contactWords(c *contact) string {
	if c == nil {
		return notRecorded
	}
	return joinNonEmpty(", ", c.Name, c.Email, c.Phone, c.URL)
}

func authorityWords(a *authority) string {
	if a == nil {
		return notRecorded
	}
	var where string
	if a.Country != "" {
		where = placeWords(a.Country, a.CountryName)
	}
	return joinNonEmpty(", ", a.Name, where, a.URL)
}

func controllerWords(c controller) string {
	if c.Country == "" {
		return c.Name
	}
	return fmt.Sprintf("%s, %s", c.Name, placeWords(c.Country, c.CountryName))
}

func legalBasisWords(lb legalBasis) string {
	if lb.Article == "" {
		return notRecorded
	}
	return fmt.Sprintf("%s GDPR: %s", lb.Article, lb.Description)
}

func categoryWords(c category) string {
	s := c.ID
	if c.Name != "" {
		s = fmt.Sprintf("%s (%s)", c.Name, c.ID)
	}
	if c.SpecialCategory {
		s += ", special category under Art. 9"
	}
	return s
}

func recipientWords(r recipient) string {
	if !r.Registered {
		return r.Name + ": not in the register"
	}
	kind := r.KindLabel
	if r.ProcessorID != "" {
		kind = fmt.Sprintf("%s of %s", kind, r.ProcessorName)
	}
	return fmt.Sprintf("%s: %s, %s", r.Name, kind, placeWords(r.Country, r.CountryName))
}

func transferWords(t thirdCountryTransfer) string {
	return fmt.Sprintf("%s, %s: %s", t.Recipient, placeWords(t.Country, t.CountryName), t.Safeguard)
}

func retentionWords(a activity) string {
	s := a.Retention
	if s == "" {
		s = notRecorded
	}
	if a.RetentionRuleID != "" {
		s += fmt.Sprintf(" (enforced by retention rule %s)", a.RetentionRuleID)
	}
	return s
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return notRecorded
	}
	return strings.Join(out, sep)
}

func mapWords[T any](items []T, f func(T) string) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, f(it))
	}
	return out
}

// noTransfersWords states that an activity has no transfer to a third
// country, without claiming more than the register knows: the country of
// a recipient missing from the register is unknown.
func noTransfersWords(a activity) string {
	var unknown []string
	for _, r := range a.Recipients {
		if !r.Registered {
			unknown = append(unknown, r.Name)
		}
	}
	switch {
	case len(unknown) > 0:
		return "none among the registered recipients, but the country of " + strings.Join(unknown, ", ") + " is not known"
	case len(a.Recipients) == 0:
		return "none: no recipient is recorded"
	}
	return "none: every recipient is in the EU/EEA"
}

// legalBasisLabel is the basis in two words, for overviews: "consent",
// "legitimate interests".
func legalBasisLabel(lb legalBasis) string {
	if lb.Article == "" {
		return notRecorded
	}
	return lb.Article + " " + strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(lb.Code, "LEGAL_BASIS_"), "_", " "))
}
