package ropa

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// renderMarkdown writes the record for a reader at a supervisory authority:
// the controller first, an overview of the activities, then one section per
// activity that walks through Art. 30(1)(b) to (g) in the Regulation's
// order. Text from the register is escaped, so a name cannot inject
// markup or HTML into a published page.
func renderMarkdown(doc *document) []byte {
	var b strings.Builder
	c := doc.Controller
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	line("# Records of processing activities: %s", md(c.Name))
	line("")
	line("Kept by the controller under Article 30(1) of Regulation (EU) 2016/679 (GDPR). %s", asOf(doc.GeneratedAt))
	line("")
	line("## Controller")
	line("")
	line("| Art. 30(1)(a) | |")
	line("| --- | --- |")
	line("| Controller | %s |", md(controllerWords(c)))
	line("| Contact | %s |", md(contactWords(c.Contact)))
	line("| Data protection officer | %s |", md(contactWords(c.DataProtectionOfficer)))
	line("| Supervisory authority (Art. 77) | %s |", md(authorityWords(c.SupervisoryAuthority)))
	line("")

	line("## Processing activities")
	line("")
	if len(doc.Activities) == 0 {
		line("No processing activity is recorded.")
		return []byte(b.String())
	}
	line("| No. | Activity | Legal basis | Transfers outside the EU/EEA |")
	line("| --- | --- | --- | --- |")
	for i, a := range doc.Activities {
		line("| %d | %s | %s | %s |", i+1, md(a.Name), md(legalBasisLabel(a.LegalBasis)), md(transferSummary(a)))
	}

	for i, a := range doc.Activities {
		line("")
		line("### %d. %s", i+1, md(a.Name))
		line("")
		ids := "Identifiers: activity " + code(a.ActivityID)
		if a.PurposeID != "" {
			ids += ", purpose " + code(a.PurposeID)
		}
		line("%s.", ids)
		line("")
		line("- **Purpose (Art. 30(1)(b)):** %s", md(orNotRecorded(a.Purpose)))
		line("- **Legal basis (Art. 6(1)):** %s", md(legalBasisWords(a.LegalBasis)))
		item(&b, "Categories of data subjects (Art. 30(1)(c))", a.DataSubjectCategories, notRecorded)
		item(&b, "Categories of personal data (Art. 30(1)(c))", mapWords(a.PersonalDataCategories, categoryWords), notRecorded)
		item(&b, "Recipients (Art. 30(1)(d))", mapWords(a.Recipients, recipientWords), "none")
		item(&b, "Transfers to third countries (Art. 30(1)(e))", mapWords(a.ThirdCountryTransfers, transferWords), noTransfersWords(a))
		line("- **Time limits for erasure (Art. 30(1)(f)):** %s", md(retentionWords(a)))
		item(&b, "Security measures (Art. 30(1)(g), Art. 32(1))", a.SecurityMeasures, notRecorded)
	}
	return []byte(b.String())
}

// item writes one Art. 30(1) item: inline when it has one value, as a
// nested list when it has several.
func item(b *strings.Builder, label string, values []string, none string) {
	switch len(values) {
	case 0:
		fmt.Fprintf(b, "- **%s:** %s\n", label, md(none))
	case 1:
		fmt.Fprintf(b, "- **%s:** %s\n", label, md(values[0]))
	default:
		fmt.Fprintf(b, "- **%s:**\n", label)
		for _, v := range values {
			fmt.Fprintf(b, "  - %s\n", md(v))
		}
	}
}

func transferSummary(a activity) string {
	var places []string
	for _, t := range a.ThirdCountryTransfers {
		p := placeWords(t.Country, t.CountryName)
		if !slices.Contains(places, p) {
			places = append(places, p)
		}
	}
	for _, r := range a.Recipients {
		if !r.Registered {
			places = append(places, "not known for "+r.Name)
		}
	}
	if len(places) == 0 {
		return "none"
	}
	return strings.Join(places, ", ")
}

func asOf(generatedAt string) string {
	t, err := time.Parse(time.RFC3339, generatedAt)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("As of %s (generated %s).", t.Format("2 January 2006"), generatedAt)
}

func orNotRecorded(s string) string {
	if strings.TrimSpace(s) == "" {
		return notRecorded
	}
	return s
}

// mdEscaper backslash-escapes the characters that would start markup
// inside a line (CommonMark allows escaping any ASCII punctuation), and
// flattens line breaks so that register text cannot end a list item or a
// table row.
var mdEscaper = strings.NewReplacer(
	`\`, `\\`, "`", "\\`", "*", `\*`, "_", `\_`, "[", `\[`, "]", `\]`,
	"<", `\<`, ">", `\>`, "|", `\|`, "#", `\#`,
	"\r\n", " ", "\n", " ", "\r", " ",
)

// md escapes register text for Markdown.
func md(s string) string { return mdEscaper.Replace(s) }

// code writes an id as a code span, or as escaped text when it holds a
// backtick or a line break that a code span cannot carry.
func code(s string) string {
	if s == "" || strings.ContainsAny(s, "`\r\n") {
		return md(s)
	}
	return "`" + s + "`"
}
