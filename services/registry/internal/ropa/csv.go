package ropa

import (
	"bytes"
	"encoding/csv"
	"strings"
)

// csvHeader names the columns, one row per activity. The controller's
// columns repeat on every row so that each row is a complete Art. 30(1)
// entry even when a spreadsheet is filtered or sorted.
var csvHeader = []string{
	"Activity ID",
	"Activity",
	"Controller (Art. 30(1)(a))",
	"Controller contact (Art. 30(1)(a))",
	"Data protection officer (Art. 30(1)(a))",
	"Supervisory authority (Art. 77)",
	"Purpose (Art. 30(1)(b))",
	"Purpose ID",
	"Legal basis (Art. 6(1))",
	"Categories of data subjects (Art. 30(1)(c))",
	"Categories of personal data (Art. 30(1)(c))",
	"Recipients (Art. 30(1)(d))",
	"Transfers to third countries and safeguards (Art. 30(1)(e))",
	"Time limits for erasure (Art. 30(1)(f))",
	"Security measures (Art. 30(1)(g))",
}

// csvSep joins the values of a multi-valued cell.
const csvSep = "; "

// renderCSV writes RFC 4180 CSV: CRLF line ends, fields quoted where
// needed.
func renderCSV(doc *document) ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.UseCRLF = true
	if err := w.Write(csvHeader); err != nil {
		return nil, err
	}
	c := doc.Controller
	for _, a := range doc.Activities {
		row := []string{
			a.ActivityID,
			a.Name,
			controllerWords(c),
			contactWords(c.Contact),
			contactWords(c.DataProtectionOfficer),
			authorityWords(c.SupervisoryAuthority),
			a.Purpose,
			a.PurposeID,
			legalBasisWords(a.LegalBasis),
			listCell(a.DataSubjectCategories),
			listCell(mapWords(a.PersonalDataCategories, categoryWords)),
			listCell(mapWords(a.Recipients, recipientWords)),
			transfersCell(a),
			retentionWords(a),
			listCell(a.SecurityMeasures),
		}
		for i := range row {
			row[i] = neutralizeFormula(row[i])
		}
		if err := w.Write(row); err != nil {
			return nil, err
		}
	}
	w.Flush()
	return buf.Bytes(), w.Error()
}

func listCell(values []string) string {
	if len(values) == 0 {
		return notRecorded
	}
	return strings.Join(values, csvSep)
}

func transfersCell(a activity) string {
	if len(a.ThirdCountryTransfers) == 0 {
		return noTransfersWords(a)
	}
	return strings.Join(mapWords(a.ThirdCountryTransfers, transferWords), csvSep)
}

// neutralizeFormula keeps a spreadsheet from executing a cell that begins
// like a formula (OWASP "CSV injection"): the register's text comes from
// tenants' operators, and the export is opened by others. A leading
// apostrophe is the spreadsheet convention for "text, not formula".
func neutralizeFormula(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
