package taxonomy

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestBuiltinIsWellFormed(t *testing.T) {
	cats := Builtin()
	if n := len(cats); n < 60 || n > 150 {
		t.Errorf("%d built-in categories; the taxonomy is meant to stay small enough to read", n)
	}
	if !slices.IsSortedFunc(cats, func(a, b Category) int { return strings.Compare(a.ID, b.ID) }) {
		t.Error("Builtin() is not sorted by id")
	}
	seen := map[string]Category{}
	for _, c := range cats {
		if !ValidID(c.ID) {
			t.Errorf("%q: invalid id", c.ID)
		}
		if _, dup := seen[c.ID]; dup {
			t.Errorf("%q: defined twice", c.ID)
		}
		if !c.BuiltIn {
			t.Errorf("%q: BuiltIn is false", c.ID)
		}
		if c.Name == "" || c.Description == "" {
			t.Errorf("%q: missing name or description", c.ID)
		}
		if strings.Contains(c.Description, "\n") {
			t.Errorf("%q: description spans lines", c.ID)
		}
		if p := Parent(c.ID); p != "" {
			parent, ok := seen[p] // sorted, so the parent came first
			if !ok {
				t.Errorf("%q: parent %q does not exist", c.ID, p)
			}
			if parent.Sensitive && !c.Sensitive {
				t.Errorf("%q: under sensitive %q but not sensitive", c.ID, p)
			}
		}
		seen[c.ID] = c
	}
}

// TestBuiltinSensitive pins the special categories, so that a change to
// what Lethe treats as Art. 9 data is a deliberate one.
func TestBuiltinSensitive(t *testing.T) {
	want := []string{
		"user.biometric",
		"user.criminal_history", // Art. 10, treated alike
		"user.genetic",
		"user.health_and_medical",
		"user.political_opinion",
		"user.race_ethnicity",
		"user.religious_belief",
		"user.sexual_orientation",
		"user.trade_union_membership",
	}
	var roots []string
	for _, c := range Builtin() {
		if !c.Sensitive {
			continue
		}
		if !builtinByID[Parent(c.ID)].Sensitive {
			roots = append(roots, c.ID)
		}
	}
	if !slices.Equal(roots, want) {
		t.Errorf("sensitive subtrees = %q, want %q", roots, want)
	}
	if !builtinByID["user.biometric.fingerprint"].Sensitive {
		t.Error("user.biometric.fingerprint did not inherit sensitivity")
	}
}

// seedCategories are the categories the five seed tenants' configurations
// use (see /work/shared/design/SEEDS.md). Each must stay built in.
var seedCategories = map[string][]string{
	"clio": { // learning service for teachers and students, cookie banner
		"user.account",
		"user.account.role", // student or teacher: decides marketing eligibility
		"user.name",
		"user.contact.email",
		"user.education.enrollment",
		"user.education.progress",
		"user.education.results",
		"user.communication.newsletter",
		"user.device.cookie_id",
		"user.device.ip_address",
		"user.location.imprecise",
		"user.behavior.browsing_history",
		"user.privacy_preferences",
	},
	"clicklearn": { // software vendor
		"user.name",
		"user.contact.email",
		"user.contact.phone_number",
		"user.contact.address",
		"user.commercial.order", // order number, shared with carriers
		"user.commercial.license",
		"user.commercial.contract",
		"user.behavior.usage", // erased after a year without use
		"user.communication.newsletter",
		"user.behavior.email_engagement",
		"user.community.membership",
		"user.account.login_history", // "3 years without logging on"
		"user.device.cookie_id",
		"user.behavior.browsing_history", // Google Analytics
	},
	"clevenio": { // B2B sales data, controller and processor
		"user.name",
		"user.contact.email",
		"user.contact.email.hashed", // shared with advertising platforms
		"user.contact.phone_number",
		"user.contact.url",
		"user.professional.job_title",
		"user.professional.employer",
		"user.professional.source", // provenance of publicly sourced data
		"user.account",
		"user.communication.inquiry",
		"user.device.cookie_id",
		"user.device.advertising_id",
		"user.financial.invoice",
	},
	"clevio": { // online course platform
		"user.name",
		"user.contact.email",
		"user.contact.phone_number",
		"user.account.username",
		"user.account.credentials",
		"user.demographic.age_range",            // age-of-consent check
		"user.demographic.date_of_birth",        // age-of-consent check
		"user.demographic.country_of_residence", // which Art. 8 age applies
		"user.content.self_image",               // photos
		"user.content.public",                   // comments
		"user.education.enrollment",             // deleted with the account
		"user.education.progress",               // transactional messages
		"user.education.authored_content",       // "deletes the subject's courses"
		"user.communication.transactional",
		"user.device.device_id",
		"user.device.ip_address",
		"user.device.characteristics",
		"user.device.telemetry",
		"user.behavior.search_history",
		"user.inference.interests",
		"user.behavior.purchase_history",
		"user.financial.billing",
		"user.professional.employment_history",
	},
	"cleura": { // cloud provider
		"user.name",
		"user.contact.email",
		"user.contact.phone_number",
		"user.contact.address",
		"user.professional.job_title",
		"user.professional.employer",
		"user.social.profile", // LinkedIn prospecting
		"user.inference.prospect_assessment",
		"user.communication.newsletter",
		"user.financial.billing",
		"user.financial.invoice", // kept under Swedish accounting law
		"user.payment.verification",
		"user.account",
		"user.account.action_log", // portal and API actions
		"user.device.ip_address",
		"user.behavior.browsing_history", // cookieless visitor statistics
	},
}

func TestSeedCategoriesAreBuiltIn(t *testing.T) {
	tax, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for tenant, ids := range seedCategories {
		for _, id := range ids {
			c, ok := tax.Lookup(id)
			if !ok || !c.BuiltIn {
				t.Errorf("%s: %q is not a built-in category", tenant, id)
			}
			if c.Sensitive {
				t.Errorf("%s: %q is sensitive; no seed tenant declares Art. 9 data", tenant, id)
			}
		}
	}
}

func TestParseBuiltinRejects(t *testing.T) {
	tests := []struct {
		name, json, wantErr string
	}{
		{"unknown field", `[{"id":"user","name":"U","description":"D","sensitve":true}]`, "unknown field"},
		{"invalid id", `[{"id":"User","name":"U","description":"D"}]`, "invalid id"},
		{"duplicate", `[{"id":"user","name":"U","description":"D"},{"id":"user","name":"U","description":"D"}]`, "defined twice"},
		{"missing parent", `[{"id":"user","name":"U","description":"D"},{"id":"user.a.b","name":"B","description":"D"}]`, `parent "user.a" does not exist`},
		{"missing name", `[{"id":"user","description":"D"}]`, "name and description are required"},
		{"trailing data", `[] []`, "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseBuiltin([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseBuiltin() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseBuiltinInheritsSensitivityInAnyOrder(t *testing.T) {
	cats, err := parseBuiltin([]byte(`[
		{"id":"user.s.child","name":"C","description":"D"},
		{"id":"user.s","name":"S","description":"D","sensitive":true},
		{"id":"user","name":"U","description":"D"}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range cats {
		got[c.ID] = c.Sensitive
	}
	if got["user"] || !got["user.s"] || !got["user.s.child"] {
		t.Errorf("sensitivity = %v", got)
	}
}

func TestBuiltinReturnsACopy(t *testing.T) {
	Builtin()[0].Name = "changed"
	if Builtin()[0].Name == "changed" {
		t.Error("Builtin() shares its backing array")
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"user", true},
		{"user.contact.email", true},
		{"user.unique_id.v2", true},
		{"_.0", true},
		{strings.Repeat("a", MaxIDLen), true},
		{strings.Repeat("a", MaxIDLen+1), false},
		{"", false},
		{".", false},
		{".user", false},
		{"user.", false},
		{"user..email", false},
		{"User.contact", false},
		{"user.contact-email", false},
		{"user contact", false},
		{"user/contact", false},
		{"usér", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestParent(t *testing.T) {
	tests := []struct{ id, want string }{
		{"user", ""},
		{"user.contact", "user"},
		{"user.contact.email", "user.contact"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := Parent(tt.id); got != tt.want {
			t.Errorf("Parent(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}
}

func TestCoversAndRelated(t *testing.T) {
	tests := []struct {
		a, b          string
		covers, rlted bool
	}{
		{"user.contact", "user.contact", true, true},
		{"user.contact", "user.contact.email", true, true},
		{"user", "user.contact.email", true, true},
		{"user.contact.email", "user.contact", false, true},
		{"user.contact", "user.contacts", false, false}, // whole segments only
		{"user.contacts", "user.contact", false, false},
		{"user.contact", "user.contactemail", false, false},
		{"user.contact.email", "user.contact.phone_number", false, false}, // siblings
		{"user.contact", "user.name", false, false},
		{"user.con", "user.contact.email", false, false},
		{"user.contact", "", false, false},
	}
	for _, tt := range tests {
		if got := Covers(tt.a, tt.b); got != tt.covers {
			t.Errorf("Covers(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.covers)
		}
		if got := Related(tt.a, tt.b); got != tt.rlted {
			t.Errorf("Related(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.rlted)
		}
		if Related(tt.a, tt.b) != Related(tt.b, tt.a) {
			t.Errorf("Related(%q, %q) is not symmetric", tt.a, tt.b)
		}
	}
}

func TestCheckExtension(t *testing.T) {
	tax, err := New([]Category{{ID: "user.education.results.exam", Name: "Exams"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		c             Category
		wantField     string
		wantDesc      string // a substring of the description
		wantDefined   bool
		wantSensitive bool
	}{
		{name: "under built-in", c: Category{ID: "user.contact.email.work", Name: "Work e-mail"}},
		{name: "under extension", c: Category{ID: "user.education.results.exam.oral", Name: "Oral exams"}},
		{name: "inherits sensitivity", c: Category{ID: "user.health_and_medical.allergies", Name: "Allergies"}, wantSensitive: true},
		{name: "deep inheritance", c: Category{ID: "user.biometric.fingerprint.left", Name: "Left hand"}, wantSensitive: true},
		{name: "own sensitivity kept", c: Category{ID: "user.account.pin", Name: "PIN", Sensitive: true}, wantSensitive: true},
		{name: "built-in flag ignored", c: Category{ID: "user.account.nickname", Name: "Nickname", BuiltIn: true}},
		{name: "empty id", c: Category{Name: "X"}, wantField: "category.id", wantDesc: "is required"},
		{name: "bad id", c: Category{ID: "user.Contact", Name: "X"}, wantField: "category.id", wantDesc: "lower-case"},
		{name: "root", c: Category{ID: "employee", Name: "X"}, wantField: "category.id", wantDesc: "top-level"},
		{name: "unknown parent", c: Category{ID: "user.foo.bar", Name: "X"}, wantField: "category.id", wantDesc: `parent category "user.foo" does not exist`},
		{name: "near-miss parent", c: Category{ID: "user.contacts.email", Name: "X"}, wantField: "category.id", wantDesc: `parent category "user.contacts" does not exist`},
		{name: "duplicate of built-in", c: Category{ID: "user.contact.email", Name: "X"}, wantField: "category.id", wantDesc: "already defined (built in)", wantDefined: true},
		{name: "duplicate of extension", c: Category{ID: "user.education.results.exam", Name: "X"}, wantField: "category.id", wantDesc: "already defined (by the tenant)", wantDefined: true},
		{name: "no name", c: Category{ID: "user.contact.fax"}, wantField: "category.name", wantDesc: "is required"},
		{name: "long name", c: Category{ID: "user.contact.fax", Name: strings.Repeat("é", 201)}, wantField: "category.name", wantDesc: "at most 200"},
		{name: "long description", c: Category{ID: "user.contact.fax", Name: "Fax", Description: strings.Repeat("x", 1001)}, wantField: "category.description", wantDesc: "at most 1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tax.Extension(tt.c)
			if checkErr := tax.CheckExtension(tt.c); (checkErr == nil) != (err == nil) {
				t.Errorf("CheckExtension() = %v, Extension() error = %v", checkErr, err)
			}
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Extension() error = %v", err)
				}
				if got.ID != tt.c.ID || got.Name != tt.c.Name || got.BuiltIn || got.Sensitive != tt.wantSensitive {
					t.Errorf("Extension() = %+v, want sensitive=%v and not built in", got, tt.wantSensitive)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Extension() error = %v, want a *FieldError", err)
			}
			if fe.Field != tt.wantField || !strings.Contains(fe.Description, tt.wantDesc) {
				t.Errorf("Extension() error = %q, want field %q and a description containing %q", fe, tt.wantField, tt.wantDesc)
			}
			if errors.Is(err, ErrAlreadyDefined) != tt.wantDefined {
				t.Errorf("errors.Is(%v, ErrAlreadyDefined) = %v", err, !tt.wantDefined)
			}
		})
	}
}

func TestNew(t *testing.T) {
	// Children first: New must not depend on the order extensions come in.
	exts := []Category{
		{ID: "user.health_and_medical.allergy.food", Name: "Food allergies"},
		{ID: "user.education.results.exam.oral", Name: "Oral exams", BuiltIn: true},
		{ID: "user.health_and_medical.allergy", Name: "Allergies"},
		{ID: "user.education.results.exam", Name: "Exams"},
	}
	tax, err := New(exts)
	if err != nil {
		t.Fatal(err)
	}
	if exts[0].ID != "user.health_and_medical.allergy.food" {
		t.Error("New reordered the caller's slice")
	}
	for _, c := range exts {
		got, ok := tax.Lookup(c.ID)
		if !ok || !tax.Known(c.ID) {
			t.Fatalf("Lookup(%q) not found", c.ID)
		}
		if got.BuiltIn {
			t.Errorf("%q: BuiltIn = true", c.ID)
		}
		if want := strings.HasPrefix(c.ID, "user.health_and_medical."); got.Sensitive != want {
			t.Errorf("%q: Sensitive = %v, want %v", c.ID, got.Sensitive, want)
		}
	}
	if tax.Known("user.education.results.essay") {
		t.Error("Known reports an undefined category")
	}
	if c, ok := tax.Lookup("user.contact.email"); !ok || !c.BuiltIn {
		t.Errorf("Lookup(built-in) = %+v, %v", c, ok)
	}

	all := tax.All()
	if len(all) != len(builtin)+len(exts) {
		t.Errorf("All() has %d categories, want %d", len(all), len(builtin)+len(exts))
	}
	if !slices.IsSortedFunc(all, func(a, b Category) int { return strings.Compare(a.ID, b.ID) }) {
		t.Error("All() is not sorted by id")
	}
	// A tenant's extensions are its own: another tenant does not see them.
	other, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if other.Known("user.education.results.exam") || len(other.All()) != len(builtin) {
		t.Error("extensions leak between taxonomies")
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name        string
		exts        []Category
		wantDefined bool
	}{
		{name: "unknown parent", exts: []Category{{ID: "user.foo.bar", Name: "X"}}},
		{name: "root", exts: []Category{{ID: "employee", Name: "X"}}},
		{name: "duplicate of built-in", exts: []Category{{ID: "user.name", Name: "X"}}, wantDefined: true},
		{name: "defined twice", exts: []Category{{ID: "user.name.middle", Name: "X"}, {ID: "user.name.middle", Name: "Y"}}, wantDefined: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.exts)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("New() error = %v, want a *FieldError", err)
			}
			if errors.Is(err, ErrAlreadyDefined) != tt.wantDefined {
				t.Errorf("errors.Is(%v, ErrAlreadyDefined) = %v", err, !tt.wantDefined)
			}
		})
	}
}

func TestFieldErrorMessage(t *testing.T) {
	err := error(&FieldError{Field: "category.id", Description: `parent category "user.foo" does not exist`})
	if got, want := err.Error(), `category.id: parent category "user.foo" does not exist`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
