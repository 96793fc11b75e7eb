package tenantfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

const examples = "../../../../examples/tenants"

func exampleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(examples, "*.yaml"))
	if err != nil || len(files) != 5 {
		t.Fatalf("want the five example tenants, found %v (%v)", files, err)
	}
	return files
}

// TestExamplesAreValidAndRoundTrip reads each example, checks it offline,
// writes it back in the export format and reads that again: the same
// messages, so an export of an applied example diffs as nothing.
func TestExamplesAreValidAndRoundTrip(t *testing.T) {
	for _, path := range exampleFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, err := Read(path)
			if err != nil {
				t.Fatal(err)
			}
			if ps := f.Validate(nil); len(ps) > 0 {
				t.Fatal(ps)
			}
			out, err := f.Marshal("round trip")
			if err != nil {
				t.Fatal(err)
			}
			g, err := Parse("exported.yaml", out)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			a, b := f.Objects(), g.Objects()
			if len(a) != len(b) {
				t.Fatalf("%d objects, %d after the round trip", len(a), len(b))
			}
			for i := range a {
				if !proto.Equal(a[i].Message, b[i].Message) {
					t.Errorf("%s %s differs after the round trip:\n%s\nvs\n%s", a[i].Kind, a[i].ID, MarshalObject(a[i].Message), MarshalObject(b[i].Message))
				}
			}
		})
	}
}

// TestProblemsNameFileLineAndField checks that each kind of mistake is
// reported where it was written, in the file's spelling.
func TestProblemsNameFileLineAndField(t *testing.T) {
	head := "apiVersion: lethe.dev/v1\nkind: Tenant\ntenant:\n  tenantId: acme\n  displayName: Acme\n"
	tests := []struct {
		name, body, want string
		validate         bool
	}{
		{"unknown field", "purposes:\n  - purposeId: p\n    name: P\n    legalBasis: consent\n    lifetime: P1D\n",
			"t.yaml:10:5: purposes[0].lifetime: unknown field \"lifetime\"", false},
		{"renamed field", "  settings:\n    verificationChannel: manual\n",
			"t.yaml:7:5: tenant.settings.verificationChannel: \"verificationChannel\" is now called \"verificationMethod\"", false},
		{"proto spelling", "purposes:\n  - purpose_id: p\n",
			"t.yaml:7:5: purposes[0].purposeId: write \"purposeId\", not \"purpose_id\"", false},
		{"bad enum", "purposes:\n  - purposeId: p\n    name: P\n    legalBasis: consnt\n",
			"t.yaml:9:17: purposes[0].legalBasis: \"consnt\" is not a LegalBasis; one of: consent,", false},
		{"bad duration", "purposes:\n  - purposeId: p\n    name: P\n    legalBasis: consent\n    defaultLifetime: P1Y\n",
			"t.yaml:10:22: purposes[0].defaultLifetime: \"P1Y\": a duration here is an exact length", false},
		{"output only", "systems:\n  - systemId: s\n    effectiveAt: 2020-01-01\n",
			"t.yaml:8:5: systems[0].effectiveAt: \"effectiveAt\" cannot be written", false},
		{"wrong shape", "systems:\n  - systemId: s\n    categories: user.contact\n",
			"t.yaml:8:17: systems[0].categories: want a list", false},
		{"proto rule", "purposes:\n  - purposeId: p\n    legalBasis: consent\n",
			"t.yaml:7:5: purposes[0].name: must be at least 1 characters", true},
		{"reference", "systems:\n  - systemId: s\n    name: S\n    kind: internal\n    country: DK\n    answerMode: sdk\n    purposeIds: [nope]\n",
			"t.yaml:12:18: systems[0].purposeIds[0]: no purpose \"nope\" is declared in this file", true},
		{"country", "systems:\n  - systemId: s\n    name: S\n    kind: internal\n    country: XX\n    answerMode: sdk\n",
			"t.yaml:10:5: systems[0].country: \"XX\" is not an ISO 3166-1 alpha-2 country code", true},
		{"period", "retention:\n  rules:\n    - ruleId: r\n      category: user\n      action: erase\n      basis: b\n      triggers:\n        - {kind: since_collection, period: 1Y}\n",
			"t.yaml:13:36: retention.rules[0].triggers[0].period: not an ISO 8601 duration", true},
		{"taxonomy", "categories:\n  - id: user.custom.thing\n    name: T\n",
			"t.yaml:7:5: categories[0].id: its parent \"user.custom\" is not in the taxonomy", true},
		{"web unknown purpose", "web:\n  allowedOrigins: [\"https://acme.example\"]\n  defaultLanguage: en\n  shownPurposeIds: [nope]\n" +
			"  texts:\n    en: {title: T, body: B, acceptAll: A, rejectAll: R, saveSelection: S, customise: C, necessaryLabel: N}\n",
			"t.yaml:9:21: web.shownPurposeIds[0]: purpose \"nope\" is not declared in this file", true},
		{"web text of a purpose", "web:\n  allowedOrigins: [\"https://acme.example\"]\n  defaultLanguage: en\n  texts:\n    en:\n" +
			"      title: T\n      body: B\n      acceptAll: A\n      rejectAll: R\n      saveSelection: S\n      customise: C\n      necessaryLabel: N\n" +
			"      purposes:\n        nope: {name: N}\n",
			"web.texts[\"en\"].purposes[\"nope\"]: purpose \"nope\" is not declared in this file", true},
		{"web texts by language", "web:\n  texts:\n    en: [x]\n",
			"t.yaml:8:9: web.texts[\"en\"]: want a mapping", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("t.yaml", []byte(head+tt.body))
			if err == nil && tt.validate {
				err = f.Validate(map[string]bool{"user": true, "user.contact": true}).Err()
			}
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want problems, got %v", err)
			}
			if !strings.Contains(ps.Error(), tt.want) {
				t.Fatalf("problems:\n%s\nwant one containing\n%s", ps.Error(), tt.want)
			}
		})
	}
}

// TestSchemaIsPublished keeps examples/tenants/schema.json what Schema
// generates: regenerate it with `lethe schema > examples/tenants/schema.json`.
func TestSchemaIsPublished(t *testing.T) {
	want, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(examples, "schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("examples/tenants/schema.json is stale: run `go run ./tools/lethe schema > examples/tenants/schema.json`")
	}
}

// FuzzParse feeds arbitrary bytes to the parser: it must return a file or
// problems, never panic.
func FuzzParse(f *testing.F) {
	for _, path := range []string{"clio.yaml", "cleura.yaml"} {
		if data, err := os.ReadFile(filepath.Join(examples, path)); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("apiVersion: lethe.dev/v1\nkind: Tenant\ntenant: {tenantId: a}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.yaml", data)
		if err == nil {
			_ = file.Validate(nil)
		}
	})
}

// TestWebhookAndConnectorSystemsRoundTrip reads a webhook system and a
// connector system with its parameters (the one map in tenant files) and
// writes them back unchanged, parameters in a stable order.
func TestWebhookAndConnectorSystemsRoundTrip(t *testing.T) {
	body := "apiVersion: lethe.dev/v1\nkind: Tenant\ntenant:\n  tenantId: acme\n  displayName: Acme\n  settings: {webhookPrivateNetworks: true}\n" +
		"systems:\n  - systemId: crm\n    name: CRM\n    kind: internal\n    answerMode: webhook\n    webhook: {url: \"https://crm.acme.example/lethe\"}\n" +
		"  - systemId: ga\n    name: Google Analytics\n    kind: processor\n    answerMode: connector\n" +
		"    connector:\n      name: google-analytics\n      params: {propertyId: \"123456\", idType: CLIENT_ID}\n"
	f, err := Parse("t.yaml", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Marshal("round trip")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "params:\n") || strings.Index(string(out), "idType") > strings.Index(string(out), "propertyId") {
		t.Fatalf("parameters not written in key order:\n%s", out)
	}
	g, err := Parse("exported.yaml", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	a, b := f.Objects(), g.Objects()
	if len(a) != 3 || len(b) != 3 {
		t.Fatalf("%d objects, %d after the round trip; want tenant and two systems", len(a), len(b))
	}
	for i := range a {
		if !proto.Equal(a[i].Message, b[i].Message) {
			t.Errorf("%s %s differs after the round trip:\n%s\nvs\n%s", a[i].Kind, a[i].ID, MarshalObject(a[i].Message), MarshalObject(b[i].Message))
		}
	}
	if _, err := Parse("t.yaml", []byte(strings.Replace(body, "idType: CLIENT_ID", "idType: [a]", 1))); err == nil ||
		!strings.Contains(err.Error(), "systems[1].connector.params") {
		t.Fatalf("a list as a parameter value: %v, want a problem naming the parameter", err)
	}
}
