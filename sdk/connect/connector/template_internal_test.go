package connector

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"text/template"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
)

// A value cannot change the shape of what it is printed into: whatever an
// identifier, a parameter or a value the vendor sent back holds, it stays
// one JSON string, one URL path segment or query value, one header line.
func TestEscapingByConstruction(t *testing.T) {
	hostile := `x", "admin": true, "y": "/../../v1/admin?all=1&email=z#frag` + "\u2028"
	d := &tmplData{
		Params:     map[string]string{"list": hostile},
		Identifier: hostile, EventID: "ev-1", Tenant: "clio", RequestTime: "2026-12-06T12:00:00Z",
		Extract: map[string]string{"job": hostile},
	}
	body, err := renderBody(template.Must(template.New("b").Parse(`{"id": {{.Identifier}}, "list": {{.Params.list}}}`)), d)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["id"] != hostile || got["list"] != hostile {
		t.Errorf("body %s decodes to %v", body, got)
	}

	u, err := renderURL(template.Must(template.New("u").Parse(`https://api.example.com/lists/{{.Params.list}}/jobs/{{.Extract.job}}?email={{.Identifier}}`)), d)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	if pu.Host != "api.example.com" || pu.Fragment != "" || pu.Path != "/lists/"+hostile+"/jobs/"+hostile {
		t.Errorf("URL %s parses to host %q path %q fragment %q", u, pu.Host, pu.Path, pu.Fragment)
	}
	if q := pu.Query(); len(q) != 1 || q.Get("email") != hostile {
		t.Errorf("URL %s has query %v", u, q)
	}

	d.EventID = "ev-1\r\nX-Injected: 1"
	if _, err := renderHeader(template.Must(template.New("h").Parse(`{{.EventID}}`)), d); err == nil {
		t.Error("a header value with a line break was rendered")
	}
}

// A connector trims a plain value and leaves the hashing to the contract
// (its outputs are pinned in sdk/contract's TestEncodeIdentifier).
func TestEncode(t *testing.T) {
	email := commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL
	if got := encode(email, " Ada@Example.COM ", commonv1.IdentifierForm_IDENTIFIER_FORM_PLAIN); got != "Ada@Example.COM" {
		t.Errorf("plain: %q", got)
	}
	if got, want := encode(email, "ADA@example.com", commonv1.IdentifierForm_IDENTIFIER_FORM_MD5_LOWERCASE), "3e3417d7ef77d5932a6734b916515ed5"; got != want {
		t.Errorf("md5: %s, want %s", got, want)
	}
}

func TestClassify(t *testing.T) {
	rules := []rule{
		{status: []int{200}, match: []match{{path: []string{"elements", "0", "status"}, equals: []string{"201"}}}, verdict: verdictDone},
		{status: []int{400}, match: []match{{path: []string{"Code"}, equals: []string{"203"}}}, verdict: verdictNotFound},
	}
	tests := []struct {
		status int
		body   string
		want   verdict
	}{
		{200, `{"elements": [{"status": 201}]}`, verdictDone},
		{200, `{"elements": [{"status": 400}]}`, verdictFailed}, // a 2xx the file does not recognise fails closed
		{200, `not json`, verdictFailed},
		{400, `{"Code": 203}`, verdictNotFound},
		{400, `{"Code": 1}`, verdictFailed},
		{404, ``, verdictFailed},
		{429, ``, verdictRetry},
		{503, `<html>`, verdictRetry},
	}
	for _, tt := range tests {
		if got := classify(rules, tt.status, []byte(tt.body)).verdict; got != tt.want {
			t.Errorf("classify(%d, %s) = %v, want %v", tt.status, tt.body, got, tt.want)
		}
	}
}

func TestBounded(t *testing.T) {
	got := bounded("line\r\nbreak" + strings.Repeat("é", 400))
	if strings.ContainsAny(got, "\r\n") || len([]rune(got)) != maxMessageRunes+1 {
		t.Errorf("bounded gave %d runes: %q", len([]rune(got)), got)
	}
}
