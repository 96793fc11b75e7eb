package ropa

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func ts(s string) *timestamppb.Timestamp {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return timestamppb.New(t)
}

func cats(ids ...string) []*commonv1.DataCategory {
	var out []*commonv1.DataCategory
	for _, id := range ids {
		out = append(out, &commonv1.DataCategory{Id: id})
	}
	return out
}

// clickLearn is a register modelled on ClickLearn ApS's privacy policy:
// Azure hosting in Ireland, Campaign Monitor for e-mail, Google Analytics in
// the US still recorded on the EU-US Privacy Shield, carriers as
// independent recipients, and one recipient id the register no longer
// knows.
func clickLearn() Record {
	processor := commonv1.SystemKind_SYSTEM_KIND_PROCESSOR
	systems := []*registryv1.System{
		{SystemId: "azure", Name: "Microsoft Azure", Kind: processor, Country: "IE", DpaSignedAt: ts("2018-05-25")},
		{
			SystemId: "campaign-monitor", Name: "Campaign Monitor", Kind: processor, Country: "US", DpaSignedAt: ts("2022-03-01"),
			Transfer: &registryv1.Transfer{
				Mechanism:  registryv1.TransferMechanism_TRANSFER_MECHANISM_STANDARD_CONTRACTUAL_CLAUSES,
				SccVersion: "2021/914", Since: ts("2022-03-01"),
			},
		},
		{
			SystemId: "mail-relay", Name: "Mail relay", Kind: commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR,
			ParentSystemId: "campaign-monitor", Country: "DE", DpaSignedAt: ts("2022-03-01"),
		},
		{
			SystemId: "google-analytics", Name: "Google Analytics", Kind: processor, Country: "US", DpaSignedAt: ts("2018-05-25"),
			Transfer: &registryv1.Transfer{
				Mechanism: registryv1.TransferMechanism_TRANSFER_MECHANISM_EU_US_PRIVACY_SHIELD,
				Reference: "Google LLC, Privacy Shield List", Since: ts("2018-05-25"),
			},
		},
		{SystemId: "carriers", Name: "Carriers (PostNord, DHL, UPS, GLS)", Kind: commonv1.SystemKind_SYSTEM_KIND_RECIPIENT, Country: "DK"},
		{SystemId: "crm", Name: "CRM", Kind: commonv1.SystemKind_SYSTEM_KIND_INTERNAL, Country: "DK"},
	}
	bySystem := map[string]*registryv1.System{}
	for _, s := range systems {
		bySystem[s.SystemId] = s
	}
	return Record{
		Tenant: &registryv1.Tenant{
			TenantId:    "clicklearn",
			DisplayName: "ClickLearn ApS",
			Settings: &registryv1.TenantSettings{
				Country: "DK",
				Dpo:     &registryv1.Contact{Name: "Data protection officer", Email: "privacy@clicklearn.example", Phone: "+45 70 00 00 00"},
				SupervisoryAuthority: &registryv1.SupervisoryAuthority{
					Name: "Datatilsynet", Country: "DK", Url: "https://www.datatilsynet.dk",
				},
			},
		},
		ControllerContact: &registryv1.Contact{Name: "ClickLearn ApS", Email: "info@clicklearn.example", Url: "https://www.clicklearn.example"},
		GeneratedAt:       time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC),
		Systems:           bySystem,
		Categories: map[string]*registryv1.Category{
			"user.name":                   {Id: "user.name", Name: "Name"},
			"user.contact.email":          {Id: "user.contact.email", Name: "E-mail address"},
			"user.contact.phone":          {Id: "user.contact.phone", Name: "Telephone number"},
			"user.contact.postal_address": {Id: "user.contact.postal_address", Name: "Postal address"},
			"device.ip_address":           {Id: "device.ip_address", Name: "IP address"},
		},
		// Deliberately out of order: the record sorts by activity id.
		Activities: []*registryv1.ProcessingActivity{
			{
				ActivityId: "usage-analytics", Name: "Usage statistics",
				Purpose:               "Understanding how the ClickLearn application is used, to improve its design",
				PurposeId:             "statistics",
				LegalBasis:            commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS,
				DataSubjectCategories: []string{"users of the ClickLearn application"},
				Categories:            cats("device.ip_address", "usage.events"),
				RecipientSystemIds:    []string{"azure", "google-analytics"},
				Retention:             "1 year after the application was last used",
				RetentionRuleId:       "usage-1y-inactive",
				SecurityMeasures:      []string{"encryption in transit (TLS)", "IP addresses truncated before analysis"},
			},
			{
				ActivityId: "newsletter", Name: "Newsletter",
				Purpose:               "Sending the newsletter to those who signed up for it",
				PurposeId:             "newsletter",
				LegalBasis:            commonv1.LegalBasis_LEGAL_BASIS_CONSENT,
				DataSubjectCategories: []string{"newsletter subscribers"},
				Categories:            cats("user.name", "user.contact.email"),
				RecipientSystemIds:    []string{"campaign-monitor", "mail-relay"},
				Retention:             "Until consent is withdrawn, unless another legal basis remains",
				RetentionRuleId:       "newsletter-withdrawal",
				SecurityMeasures:      []string{"encryption in transit (TLS)", "access limited to the marketing team"},
			},
			{
				ActivityId: "licences", Name: "Licence administration",
				Purpose:               "Administering software licences and maintenance agreements with customers",
				PurposeId:             "licence",
				LegalBasis:            commonv1.LegalBasis_LEGAL_BASIS_CONTRACT,
				DataSubjectCategories: []string{"customers' contact persons", "licence users"},
				Categories:            cats("user.name", "user.contact.email", "user.contact.phone", "customer.licence"),
				RecipientSystemIds:    []string{"crm", "azure"},
				Retention:             "5 years after the maintenance agreement ends; longer only with a recorded legitimate need",
				RetentionRuleId:       "licence-5y",
				SecurityMeasures:      []string{"encryption in transit (TLS)", "encryption at rest", "role-based access control", "access logging"},
			},
			{
				ActivityId: "shipping", Name: "Shipping of orders",
				Purpose:               "Delivering physical orders to customers",
				LegalBasis:            commonv1.LegalBasis_LEGAL_BASIS_CONTRACT,
				DataSubjectCategories: []string{"customers' contact persons"},
				Categories:            cats("user.name", "user.contact.postal_address", "user.contact.email", "user.contact.phone", "order.number"),
				RecipientSystemIds:    []string{"carriers", "old-fulfilment"},
				Retention:             "5 years after the end of the financial year (Danish Bookkeeping Act)",
				SecurityMeasures:      []string{"encryption in transit (TLS)"},
			},
		},
	}
}

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		format      registryv1.ExportFormat
		file        string
		contentType string
	}{
		{registryv1.ExportFormat_EXPORT_FORMAT_JSON, "clicklearn.json.golden", "application/json"},
		{registryv1.ExportFormat_EXPORT_FORMAT_CSV, "clicklearn.csv.golden", "text/csv; charset=utf-8"},
		{registryv1.ExportFormat_EXPORT_FORMAT_MARKDOWN, "clicklearn.md.golden", "text/markdown; charset=utf-8"},
	}
	for _, tt := range tests {
		t.Run(tt.format.String(), func(t *testing.T) {
			ct, got, err := Render(clickLearn(), tt.format)
			if err != nil {
				t.Fatal(err)
			}
			if ct != tt.contentType {
				t.Errorf("content type %q, want %q", ct, tt.contentType)
			}
			path := filepath.Join("testdata", tt.file)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output (run go test -update and review the diff):\n%s", path, got)
			}
			// Rendering is deterministic.
			_, again, _ := Render(clickLearn(), tt.format)
			if !bytes.Equal(got, again) {
				t.Error("two renderings of the same record differ")
			}
		})
	}
}

func TestRenderUnspecifiedIsJSON(t *testing.T) {
	ct, got, err := Render(clickLearn(), registryv1.ExportFormat_EXPORT_FORMAT_UNSPECIFIED)
	if err != nil || ct != ContentTypeJSON || !json.Valid(got) {
		t.Fatalf("Render(UNSPECIFIED) = %q, valid JSON %v, %v", ct, json.Valid(got), err)
	}
}

func TestRenderErrors(t *testing.T) {
	rec := clickLearn()
	if _, _, err := Render(rec, registryv1.ExportFormat(42)); err == nil {
		t.Error("unknown format accepted")
	}
	rec.Tenant = nil
	if _, _, err := Render(rec, registryv1.ExportFormat_EXPORT_FORMAT_JSON); err == nil {
		t.Error("record without a tenant accepted")
	}
	rec = clickLearn()
	rec.GeneratedAt = time.Time{}
	if _, _, err := Render(rec, registryv1.ExportFormat_EXPORT_FORMAT_JSON); err == nil {
		t.Error("undated record accepted")
	}
}

// TestJSONHasEveryArticle30Item decodes the JSON export and checks that
// every item Art. 30(1) lists is present and non-empty for every activity.
func TestJSONHasEveryArticle30Item(t *testing.T) {
	_, b, err := Render(clickLearn(), registryv1.ExportFormat_EXPORT_FORMAT_JSON)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	ctl := doc["controller"].(map[string]any)
	for _, k := range []string{"name", "contact", "data_protection_officer", "supervisory_authority"} { // (a)
		if empty(ctl[k]) {
			t.Errorf("controller.%s is empty", k)
		}
	}
	acts := doc["activities"].([]any)
	if len(acts) != 4 {
		t.Fatalf("%d activities, want 4", len(acts))
	}
	for _, a := range acts {
		a := a.(map[string]any)
		for _, k := range []string{
			"purpose",                  // (b)
			"legal_basis",              // Art. 6(1)
			"data_subject_categories",  // (c)
			"personal_data_categories", // (c)
			"recipients",               // (d)
			"retention",                // (f)
			"security_measures",        // (g)
		} {
			if empty(a[k]) {
				t.Errorf("activity %v: %s is empty", a["activity_id"], k)
			}
		}
		// (e) may rightly be empty, but the key must be there, and every
		// recipient outside the EU/EEA must appear in it with a safeguard.
		trs, ok := a["third_country_transfers"].([]any)
		if !ok {
			t.Errorf("activity %v: third_country_transfers missing", a["activity_id"])
		}
		want := 0
		for _, r := range a["recipients"].([]any) {
			r := r.(map[string]any)
			if r["registered"] == true && r["in_eea"] == false {
				want++
			}
		}
		if len(trs) != want {
			t.Errorf("activity %v: %d transfers, want %d", a["activity_id"], len(trs), want)
		}
		for _, tr := range trs {
			if empty(tr.(map[string]any)["safeguard"]) || empty(tr.(map[string]any)["country"]) {
				t.Errorf("activity %v: transfer without country or safeguard: %v", a["activity_id"], tr)
			}
		}
	}
}

func empty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return strings.TrimSpace(v) == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

func TestCSVParsesBack(t *testing.T) {
	_, b, err := Render(clickLearn(), registryv1.ExportFormat_EXPORT_FORMAT_CSV)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+4 {
		t.Fatalf("%d rows, want a header and 4 activities", len(rows))
	}
	for i, r := range rows {
		if len(r) != len(csvHeader) {
			t.Errorf("row %d has %d columns, want %d", i, len(r), len(csvHeader))
		}
	}
	if !bytes.Contains(b, []byte("\r\n")) {
		t.Error("RFC 4180 wants CRLF line ends")
	}
	// Multi-valued cells are joined with "; ".
	col := func(name string) int {
		for i, h := range rows[0] {
			if h == name {
				return i
			}
		}
		t.Fatalf("no column %q", name)
		return 0
	}
	if got := rows[1][col("Security measures (Art. 30(1)(g))")]; got != "encryption in transit (TLS); encryption at rest; role-based access control; access logging" {
		t.Errorf("security measures cell = %q", got)
	}
}

func TestUnknownRecipient(t *testing.T) {
	for _, f := range []registryv1.ExportFormat{
		registryv1.ExportFormat_EXPORT_FORMAT_JSON,
		registryv1.ExportFormat_EXPORT_FORMAT_CSV,
		registryv1.ExportFormat_EXPORT_FORMAT_MARKDOWN,
	} {
		_, b, err := Render(clickLearn(), f)
		if err != nil {
			t.Fatalf("%v: %v", f, err)
		}
		if !bytes.Contains(b, []byte("unknown system old-fulfilment")) {
			t.Errorf("%v does not name the unknown recipient", f)
		}
	}
}

func TestNilSystemsAndEmptyRegister(t *testing.T) {
	rec := Record{
		Tenant:      &registryv1.Tenant{TenantId: "empty", DisplayName: "Empty Ltd"},
		GeneratedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Activities:  []*registryv1.ProcessingActivity{nil, {ActivityId: "a", Name: "A", RecipientSystemIds: []string{"x"}}},
	}
	for _, f := range []registryv1.ExportFormat{
		registryv1.ExportFormat_EXPORT_FORMAT_JSON,
		registryv1.ExportFormat_EXPORT_FORMAT_CSV,
		registryv1.ExportFormat_EXPORT_FORMAT_MARKDOWN,
	} {
		_, b, err := Render(rec, f)
		if err != nil {
			t.Fatalf("%v: %v", f, err)
		}
		if f != registryv1.ExportFormat_EXPORT_FORMAT_JSON && !bytes.Contains(b, []byte(notRecorded)) {
			t.Errorf("%v does not state the gaps:\n%s", f, b)
		}
	}
}

func TestInEEAOverride(t *testing.T) {
	rec := clickLearn()
	rec.InEEA = func(string) bool { return true } // everything at home
	_, b, err := Render(rec, registryv1.ExportFormat_EXPORT_FORMAT_JSON)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`"safeguard"`)) {
		t.Error("transfers listed although InEEA says every country is in the EEA")
	}
}

func TestMarkdownEscapesRegisterText(t *testing.T) {
	rec := clickLearn()
	rec.Tenant.DisplayName = "Evil <script>alert(1)</script> | *Co*\n# Heading"
	rec.Activities[0].RecipientSystemIds = []string{"bad`id"}
	_, b, err := Render(rec, registryv1.ExportFormat_EXPORT_FORMAT_MARKDOWN)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, bad := range []string{"<script>", "| *Co*", "\n# Heading"} {
		if strings.Contains(s, bad) {
			t.Errorf("Markdown carries %q unescaped", bad)
		}
	}
	if !strings.Contains(s, `\<script\>`) {
		t.Error("the name is not in the output, escaped")
	}
}

func TestCSVNeutralizesFormulas(t *testing.T) {
	for in, want := range map[string]string{
		"=HYPERLINK(\"x\")": "'=HYPERLINK(\"x\")",
		"+1":                "'+1",
		"@SUM(A1)":          "'@SUM(A1)",
		"-2":                "'-2",
		"Newsletter":        "Newsletter",
		"":                  "",
	} {
		if got := neutralizeFormula(in); got != want {
			t.Errorf("neutralizeFormula(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSubProcessors(t *testing.T) {
	rec := clickLearn()
	var systems []*registryv1.System
	for _, id := range []string{"google-analytics", "crm", "mail-relay", "carriers", "azure", "campaign-monitor"} {
		systems = append(systems, rec.Systems[id])
	}
	systems = append(systems, nil)
	got := SubProcessors(systems)
	var ids []string
	for _, s := range got {
		ids = append(ids, s.GetSystemId())
	}
	if want := "azure campaign-monitor google-analytics mail-relay"; strings.Join(ids, " ") != want {
		t.Fatalf("SubProcessors = %v, want %s", ids, want)
	}
	if systems[0].GetSystemId() != "google-analytics" {
		t.Error("SubProcessors reordered its input")
	}
	if got := SubProcessors(nil); got == nil || len(got) != 0 {
		t.Errorf("SubProcessors(nil) = %#v, want an empty list", got)
	}
}

func TestSafeguardWords(t *testing.T) {
	tests := []struct {
		name    string
		country string
		tr      *registryv1.Transfer
		want    string
	}{
		{"adequacy names the decision in force", "JP",
			&registryv1.Transfer{Mechanism: registryv1.TransferMechanism_TRANSFER_MECHANISM_ADEQUACY_DECISION},
			"Adequacy decision for Japan: Commission Decision (EU) 2019/419 (GDPR Art. 45(1))"},
		{"adequacy for the UK names the renewal", "GB",
			&registryv1.Transfer{Mechanism: registryv1.TransferMechanism_TRANSFER_MECHANISM_ADEQUACY_DECISION},
			"Adequacy decision for United Kingdom: Commission Decision of 19 December 2025 renewing (EU) 2021/1772 (GDPR Art. 45(1))"},
		{"superseded clauses say so", "US",
			&registryv1.Transfer{Mechanism: registryv1.TransferMechanism_TRANSFER_MECHANISM_STANDARD_CONTRACTUAL_CLAUSES, SccVersion: "2010/87/EU"},
			"Standard contractual clauses: Commission Decision 2010/87/EU (GDPR Art. 46(2)(c)) — Decision 2010/87/EU was repealed from 27 September 2021 (Commission Implementing Decision (EU) 2021/914, Art. 4(2) and (3)), contracts concluded before then remaining a safeguard until 27 December 2022"},
		{"clauses without a version", "US",
			&registryv1.Transfer{Mechanism: registryv1.TransferMechanism_TRANSFER_MECHANISM_STANDARD_CONTRACTUAL_CLAUSES},
			"Standard contractual clauses (GDPR Art. 46(2)(c)), version not recorded"},
		{"a derogation with its ground", "IN",
			&registryv1.Transfer{Mechanism: registryv1.TransferMechanism_TRANSFER_MECHANISM_DEROGATION, Reference: "Art. 49(1)(a)"},
			"Derogation for a specific situation (GDPR Art. 49(1)), reference “Art. 49(1)(a)”"},
		{"nothing recorded", "IN", nil, "none recorded"},
		{"a mechanism the facts do not know", "IN",
			&registryv1.Transfer{Mechanism: registryv1.TransferMechanism(99)}, "99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := clickLearn()
			rec.Systems["x"] = &registryv1.System{SystemId: "x", Name: "X", Kind: commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, Country: tt.country, Transfer: tt.tr}
			rec.Activities = []*registryv1.ProcessingActivity{{ActivityId: "a", Name: "A", RecipientSystemIds: []string{"x"}}}
			doc, err := build(rec)
			if err != nil {
				t.Fatal(err)
			}
			trs := doc.Activities[0].ThirdCountryTransfers
			if len(trs) != 1 || trs[0].Safeguard != tt.want {
				t.Fatalf("safeguard = %+v\nwant %q", trs, tt.want)
			}
		})
	}
}
