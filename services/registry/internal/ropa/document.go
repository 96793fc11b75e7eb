package ropa

import (
	"bytes"
	"encoding/json"
)

// SchemaVersion names the JSON schema below. It changes only when a field is
// renamed or removed or changes meaning; adding a field keeps it.
const SchemaVersion = "lethe.registry.ropa.v1"

// document is the records of processing as rendered, and the JSON schema:
//
//	schema        "lethe.registry.ropa.v1"
//	regulation    the provision the record is kept under
//	generated_at  RFC 3339, UTC
//	controller    Art. 30(1)(a)
//	  tenant_id, name, country (ISO 3166-1 alpha-2), country_name
//	  contact                  {name, email, phone, url} or null
//	  data_protection_officer  {name, email, phone, url} or null
//	  supervisory_authority    {name, country, country_name, url} or null
//	activities    sorted by activity_id; each:
//	  activity_id, name
//	  purpose, purpose_id                        (b)
//	  legal_basis {code, article, description}   Art. 6(1)
//	  data_subject_categories [string]           (c)
//	  personal_data_categories [{id, name, special_category}]  (c)
//	  recipients [{system_id, name, registered, kind, kind_label,
//	               processor_id, processor_name, country, country_name,
//	               in_eea}]                      (d), in recorded order
//	  third_country_transfers [{system_id, recipient, country,
//	               country_name, mechanism, safeguard, scc_version,
//	               reference, since}]            (e), recipients outside
//	                                             the EU/EEA only
//	  retention, retention_rule_id               (f)
//	  security_measures [string]                 (g)
//
// Every key is always present; lists are [] rather than null, and enums are
// written by their proto names ("LEGAL_BASIS_CONSENT") so that a consumer
// can rely on the shape. Keys are snake_case and come in the order above.
type document struct {
	Schema      string     `json:"schema"`
	Regulation  string     `json:"regulation"`
	GeneratedAt string     `json:"generated_at"`
	Controller  controller `json:"controller"`
	Activities  []activity `json:"activities"`
}

type controller struct {
	TenantID              string     `json:"tenant_id"`
	Name                  string     `json:"name"`
	Country               string     `json:"country"`
	CountryName           string     `json:"country_name"`
	Contact               *contact   `json:"contact"`
	DataProtectionOfficer *contact   `json:"data_protection_officer"`
	SupervisoryAuthority  *authority `json:"supervisory_authority"`
}

type contact struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	Phone string `json:"phone"`
	URL   string `json:"url"`
}

type authority struct {
	Name        string `json:"name"`
	Country     string `json:"country"`
	CountryName string `json:"country_name"`
	URL         string `json:"url"`
}

type activity struct {
	ActivityID             string                 `json:"activity_id"`
	Name                   string                 `json:"name"`
	Purpose                string                 `json:"purpose"`
	PurposeID              string                 `json:"purpose_id"`
	LegalBasis             legalBasis             `json:"legal_basis"`
	DataSubjectCategories  []string               `json:"data_subject_categories"`
	PersonalDataCategories []category             `json:"personal_data_categories"`
	Recipients             []recipient            `json:"recipients"`
	ThirdCountryTransfers  []thirdCountryTransfer `json:"third_country_transfers"`
	Retention              string                 `json:"retention"`
	RetentionRuleID        string                 `json:"retention_rule_id"`
	SecurityMeasures       []string               `json:"security_measures"`
}

type legalBasis struct {
	Code        string `json:"code"`
	Article     string `json:"article"`
	Description string `json:"description"`
}

type category struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	SpecialCategory bool   `json:"special_category"`
}

type recipient struct {
	SystemID string `json:"system_id"`
	Name     string `json:"name"`
	// Registered is false for an id the register does not hold.
	Registered bool   `json:"registered"`
	Kind       string `json:"kind"`
	KindLabel  string `json:"kind_label"`
	// ProcessorID and ProcessorName name the processor that engaged a
	// sub-processor.
	ProcessorID   string `json:"processor_id"`
	ProcessorName string `json:"processor_name"`
	Country       string `json:"country"`
	CountryName   string `json:"country_name"`
	InEEA         bool   `json:"in_eea"`
}

type thirdCountryTransfer struct {
	SystemID    string `json:"system_id"`
	Recipient   string `json:"recipient"`
	Country     string `json:"country"`
	CountryName string `json:"country_name"`
	// Mechanism is the TransferMechanism's proto name.
	Mechanism string `json:"mechanism"`
	// Safeguard is the mechanism in words, with its decision, reference
	// and date.
	Safeguard  string `json:"safeguard"`
	SCCVersion string `json:"scc_version"`
	Reference  string `json:"reference"`
	// Since is the day the clauses were signed, the rules approved or the
	// certification obtained ("2006-01-02"), or "".
	Since string `json:"since"`
}

func renderJSON(doc *document) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// The record is read by people too: keep "<", ">" and "&" as written.
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
