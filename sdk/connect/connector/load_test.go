package connector_test

import (
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"go.yaml.in/yaml/v3"

	"github.com/lethe-privacy/lethe/sdk/connect/connector"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

func TestBuiltins(t *testing.T) {
	want := []string{"campaign-monitor", "google-analytics", "hotjar", "linkedin-matched-audiences", "meta-custom-audiences"}
	if got := connector.BuiltinNames(); !slices.Equal(got, want) {
		t.Fatalf("BuiltinNames() = %v, want %v", got, want)
	}
	for _, name := range want {
		d, err := connector.Builtin(name)
		if err != nil {
			t.Fatal(err)
		}
		if u, v := d.Document(); d.Name() != name || !strings.HasPrefix(u, "https://") || v == "" {
			t.Errorf("%s: name %q, document %q %q", name, d.Name(), u, v)
		}
		if !slices.Contains(d.Kinds(), contract.KindErasureRequested) {
			t.Errorf("%s does not answer erasures", name)
		}
		if len(d.Secrets()) == 0 {
			t.Errorf("%s reads no secret", name)
		}
	}
	if _, err := connector.Builtin("mailchimp"); err == nil || !strings.Contains(err.Error(), "no builtin connector") {
		t.Errorf("Builtin(mailchimp) = %v", err)
	}
	if _, err := connector.Builtin("../hotjar"); err == nil {
		t.Error("Builtin accepted a path")
	}
}

// base returns the test definition as a YAML tree, to be broken one field
// at a time.
func base(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile("testdata/acme.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// at returns the map at a dotted path of m.
func at(m map[string]any, path string) map[string]any {
	for _, p := range strings.Split(path, ".") {
		m = m[p].(map[string]any)
	}
	return m
}

func TestParseRefuses(t *testing.T) {
	param := func(m map[string]any) map[string]any { return m["params"].([]any)[0].(map[string]any) }
	rule := func(m map[string]any) map[string]any { return m["responses"].([]any)[0].(map[string]any) }
	tests := []struct {
		name  string
		edit  func(m map[string]any)
		field string
	}{
		{"unknown key", func(m map[string]any) { m["retries"] = 3 }, "field retries not found"},
		{"unknown nested key", func(m map[string]any) { at(m, "request")["bodyy"] = "{}" }, "field bodyy not found"},
		{"name", func(m map[string]any) { m["name"] = "Acme Erasure" }, "name:"},
		{"description", func(m map[string]any) { m["description"] = " " }, "description:"},
		{"document url", func(m map[string]any) { at(m, "document")["url"] = "http://docs.acme.example" }, "document.url:"},
		{"document version", func(m map[string]any) { delete(at(m, "document"), "version") }, "document.version:"},
		{"no answers", func(m map[string]any) { m["answers"] = []any{} }, "answers:"},
		{"answer kind", func(m map[string]any) { m["answers"] = []any{"access.requested"} }, "answers[0]:"},
		{"answer twice", func(m map[string]any) { m["answers"] = []any{"erasure.requested", "erasure.requested"} }, "answers[1]:"},
		{"consent missing", func(m map[string]any) { m["answers"] = []any{"erasure.requested", "consent.withdrawn"} }, "consent:"},
		{"consent unused", func(m map[string]any) { m["consent"] = map[string]any{"purpose_param": "workspace"} }, "consent:"},
		{"consent param", func(m map[string]any) {
			m["answers"] = []any{"consent.withdrawn"}
			m["consent"] = map[string]any{"purpose_param": "purpose"}
		}, "consent.purpose_param:"},
		{"param name", func(m map[string]any) { param(m)["name"] = "Work-Space" }, "params[0].name:"},
		{"param twice", func(m map[string]any) { m["params"] = append(m["params"].([]any), param(m)) }, "params[1].name:"},
		{"param description", func(m map[string]any) { delete(param(m), "description") }, "params[0].description:"},
		{"param pattern missing", func(m map[string]any) { delete(param(m), "pattern") }, "params[0].pattern:"},
		{"param pattern unanchored", func(m map[string]any) { param(m)["pattern"] = "[a-z]+" }, "params[0].pattern:"},
		{"param pattern invalid", func(m map[string]any) { param(m)["pattern"] = "^[a-z$" }, "params[0].pattern:"},
		{"too many params", func(m map[string]any) {
			var ps []any
			for i := range 17 {
				ps = append(ps, map[string]any{"name": "p" + string(rune('a'+i)), "description": "d", "pattern": "^x$"})
			}
			m["params"] = append(ps, param(m))
		}, "params:"},
		{"identifier type", func(m map[string]any) { at(m, "identifier")["type"] = "name" }, "identifier.type:"},
		{"identifier form", func(m map[string]any) { at(m, "identifier")["form"] = "sha512" }, "identifier.form:"},
		{"md5 of a phone", func(m map[string]any) { at(m, "identifier")["form"] = "md5" }, "identifier.form:"},
		{"when_missing", func(m map[string]any) { at(m, "identifier")["when_missing"] = "skip" }, "identifier.when_missing:"},
		{"auth type", func(m map[string]any) { at(m, "auth")["type"] = "apikey" }, "auth.type:"},
		{"bearer without token", func(m map[string]any) { delete(at(m, "auth"), "token_file") }, "auth.token_file:"},
		{"bearer with token_url", func(m map[string]any) { at(m, "auth")["token_url"] = "https://acme.example/token" }, "auth.token_url:"},
		{"secret path", func(m map[string]any) { at(m, "auth")["token_file"] = "../../etc/passwd" }, "auth.token_file:"},
		{"scopes on bearer", func(m map[string]any) { at(m, "auth")["scopes"] = []any{"erase"} }, "auth.scopes:"},
		{"oauth2 token url", func(m map[string]any) {
			m["auth"] = map[string]any{"type": "oauth2_client_credentials", "token_url": "http://acme.example/token", "client_id_file": "id", "client_secret_file": "secret"}
		}, "auth.token_url:"},
		{"oauth2 without secret", func(m map[string]any) {
			m["auth"] = map[string]any{"type": "oauth2_client_credentials", "token_url": "https://acme.example/token", "client_id_file": "id"}
		}, "auth.client_secret_file:"},
		{"oauth2 scope", func(m map[string]any) {
			m["auth"] = map[string]any{"type": "oauth2_client_credentials", "token_url": "https://acme.example/token", "client_id_file": "id", "client_secret_file": "s", "scopes": []any{"a b"}}
		}, "auth.scopes[0]:"},
		{"basic without user", func(m map[string]any) { m["auth"] = map[string]any{"type": "basic", "password_file": "p"} }, "auth.username_file:"},
		{"rate", func(m map[string]any) { at(m, "rate_limit")["per_second"] = 0 }, "rate_limit.per_second:"},
		{"burst", func(m map[string]any) { at(m, "rate_limit")["burst"] = 0 }, "rate_limit.burst:"},
		{"method", func(m map[string]any) { at(m, "request")["method"] = "TRACE" }, "request.method:"},
		{"url empty", func(m map[string]any) { delete(at(m, "request"), "url") }, "request.url:"},
		{"url http", func(m map[string]any) { at(m, "request")["url"] = "http://api.acme.example/v2" }, "request.url:"},
		{"url host from a value", func(m map[string]any) { at(m, "request")["url"] = "https://{{.Params.workspace}}.acme.example/v2" }, "request.url:"},
		{"url user information", func(m map[string]any) { at(m, "request")["url"] = "https://{{.Identifier}}@api.acme.example/v2" }, "request.url:"},
		{"url undeclared param", func(m map[string]any) { at(m, "request")["url"] = "https://api.acme.example/{{.Params.region}}" }, "request.url:"},
		{"url template syntax", func(m map[string]any) { at(m, "request")["url"] = "https://api.acme.example/{{.Params" }, "request.url:"},
		{"url template function", func(m map[string]any) {
			at(m, "request")["url"] = `https://api.acme.example/{{printf "%s" .Identifier}}`
		}, "request.url:"},
		{"url template condition", func(m map[string]any) {
			at(m, "request")["url"] = `https://api.acme.example/{{if .Identifier}}x{{end}}`
		}, "request.url:"},
		{"url template variable", func(m map[string]any) { at(m, "request")["url"] = `https://api.acme.example/{{$x := .Identifier}}` }, "request.url:"},
		{"body not JSON", func(m map[string]any) { at(m, "request")["body"] = `{"phone": {{.Identifier}}` }, "request.body:"},
		{"body quoting a value", func(m map[string]any) { at(m, "request")["body"] = `{"phone": "{{.Identifier}}"}` }, "request.body:"},
		{"header set by the runner", func(m map[string]any) { at(m, "request.headers")["Authorization"] = "Bearer x" }, "request.headers.Authorization:"},
		{"header name", func(m map[string]any) { at(m, "request.headers")["Bad Header"] = "x" }, "request.headers.Bad Header:"},
		{"header undeclared value", func(m map[string]any) { at(m, "request.headers")["X-Region"] = "{{.Params.region}}" }, "request.headers.X-Region:"},
		{"no responses", func(m map[string]any) { m["responses"] = []any{} }, "responses:"},
		{"response outcome", func(m map[string]any) { rule(m)["outcome"] = "ok" }, "responses[0].outcome:"},
		{"response status", func(m map[string]any) { rule(m)["status"] = []any{999} }, "responses[0].status[0]:"},
		{"response no status", func(m map[string]any) { delete(rule(m), "status") }, "responses[0].status:"},
		{"response match path", func(m map[string]any) {
			rule(m)["match"] = []any{map[string]any{"path": "$.job", "equals": []any{"x"}}}
		}, "responses[0].match[0].path:"},
		{"response match equals", func(m map[string]any) { rule(m)["match"] = []any{map[string]any{"path": "job.state"}} }, "responses[0].match[0].equals:"},
		{"never done", func(m map[string]any) { rule(m)["outcome"] = "failed" }, "responses:"},
		{"pending without poll", func(m map[string]any) { delete(m, "poll") }, "responses[0].outcome:"},
		{"message path", func(m map[string]any) { m["message"] = "error[0]" }, "message:"},
		{"poll extract", func(m map[string]any) { at(m, "poll")["extract"] = map[string]any{} }, "poll.extract:"},
		{"poll extract path", func(m map[string]any) { at(m, "poll")["extract"] = map[string]any{"job_id": "job..id"} }, "poll.extract.job_id:"},
		{"poll undeclared extract", func(m map[string]any) {
			at(m, "poll.request")["url"] = "https://api.acme.example/v2/{{.Extract.ticket}}"
		}, "poll.request.url:"},
		{"poll body", func(m map[string]any) { at(m, "poll.request")["body"] = "{}" }, "poll.request.body:"},
		{"poll interval", func(m map[string]any) { at(m, "poll")["interval"] = "soon" }, "poll.interval:"},
		{"poll max interval", func(m map[string]any) { at(m, "poll")["max_interval"] = "1ms" }, "poll.max_interval:"},
		{"poll deadline", func(m map[string]any) { at(m, "poll")["deadline"] = "48h" }, "poll.deadline:"},
		{"poll never done", func(m map[string]any) {
			at(m, "poll")["responses"] = []any{map[string]any{"status": []any{200}, "outcome": "pending"}}
		}, "poll.responses:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base(t)
			tt.edit(m)
			raw, err := yaml.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			_, err = connector.Parse(raw)
			if err == nil {
				t.Fatalf("Parse accepted it:\n%s", raw)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not name %q", err, tt.field)
			}
		})
	}
	t.Run("unchanged", func(t *testing.T) {
		raw, err := yaml.Marshal(base(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := connector.Parse(raw); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		big := []byte("description: " + strings.Repeat("x", 70<<10))
		if _, err := connector.Load(fstest.MapFS{"big.yaml": {Data: big}}, "big.yaml"); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("Load = %v", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if _, err := connector.LoadFile("testdata/none.yaml"); err == nil {
			t.Fatal("LoadFile of a missing file succeeded")
		}
	})
}

func TestHandlerRefusesConfig(t *testing.T) {
	d, err := connector.Builtin("meta-custom-audiences")
	if err != nil {
		t.Fatal(err)
	}
	good := map[string]string{"audience_id": "6123", "api_version": "v25.0"}
	dir := secrets(t, map[string]string{"access-token": "tok"})
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name string
		cfg  connector.Config
		want string
	}{
		{"unknown param", connector.Config{Params: with("region", "eu"), SecretsDir: dir}, "params.region:"},
		{"missing param", connector.Config{Params: with("audience_id", ""), SecretsDir: dir}, "params.audience_id:"},
		{"param pattern", connector.Config{Params: with("api_version", "latest"), SecretsDir: dir}, "params.api_version:"},
		{"no secrets dir", connector.Config{Params: good}, "SecretsDir:"},
		{"missing secret", connector.Config{Params: good, SecretsDir: t.TempDir()}, `secret "access-token"`},
		{"empty secret", connector.Config{Params: good, SecretsDir: secrets(t, map[string]string{"access-token": " "})}, "is empty"},
		{"multi-line secret", connector.Config{Params: good, SecretsDir: secrets(t, map[string]string{"access-token": "a\nb"})}, "several lines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.Handler(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Handler = %v, want an error naming %q", err, tt.want)
			}
		})
	}
	if _, err := d.Handler(connector.Config{Params: good, SecretsDir: dir}); err != nil {
		t.Fatalf("Handler with a good config: %v", err)
	}
}
