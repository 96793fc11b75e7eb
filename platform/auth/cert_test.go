package auth_test

import (
	"context"
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lethe-privacy/lethe/platform/auth"
)

func TestSPIFFEID(t *testing.T) {
	for _, tc := range []struct {
		uris []string
		want string // identity, or the refusal's text
		ok   bool
	}{
		{[]string{"spiffe://lethe.example/system/newsletter"}, "spiffe://lethe.example/system/newsletter", true},
		{[]string{"https://lethe.example/x", "spiffe://lethe.example/operator/alice"}, "spiffe://lethe.example/operator/alice", true},
		{nil, "no SPIFFE id", false},
		{[]string{"https://lethe.example/system/newsletter"}, "no SPIFFE id", false},
		{[]string{"spiffe://other.example/system/newsletter"}, "trust domain", false},
		{[]string{"spiffe://lethe.example.evil/system/newsletter"}, "trust domain", false},
		{[]string{"spiffe://lethe.example/a", "spiffe://lethe.example/b"}, "more than one", false},
		{[]string{"spiffe://lethe.example"}, "segments", false},
		{[]string{"spiffe://lethe.example/"}, "segments", false},
		{[]string{"spiffe://lethe.example/a//b"}, "segments", false},
		{[]string{"spiffe://lethe.example/a/../b"}, "segments", false},
		{[]string{"spiffe://lethe.example:8443/a"}, "malformed", false},
		{[]string{"spiffe://user@lethe.example/a"}, "malformed", false},
		{[]string{"spiffe://lethe.example/a?x=1"}, "malformed", false},
		{[]string{"SPIFFE://lethe.example/a"}, "spiffe://lethe.example/a", true}, // the scheme is case-insensitive
	} {
		cert := &x509.Certificate{}
		for _, u := range tc.uris {
			parsed, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			cert.URIs = append(cert.URIs, parsed)
		}
		got, err := auth.SPIFFEID(cert, "lethe.example")
		if tc.ok && (err != nil || got != tc.want) {
			t.Errorf("%v: SPIFFEID = %q, %v; want %q", tc.uris, got, err, tc.want)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: SPIFFEID = %q, %v; want an error mentioning %q", tc.uris, got, err, tc.want)
		}
	}
}

// fixed is an authenticator that answers the same for every call.
type fixed struct {
	id  string
	err error
}

func (f fixed) Authenticate(context.Context) (auth.Identity, error) {
	return auth.Identity{Name: f.id}, f.err
}

// TestChain: a bearer token is the credential when present — a token no
// token authenticator accepts is refused, never passed over for the
// connection's certificate — and without one the others decide in order.
func TestChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	if err := os.WriteFile(path, []byte(`{"tokens": [{"name": "alice", "token": "0123456789abcdef-alice"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.LoadTokens(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert := fixed{id: "spiffe://lethe.example/system/newsletter"}
	none := fixed{err: auth.ErrNoCredentials}
	chain := auth.Chain{tokens, none, cert, auth.DevAuthenticator{}}

	if id, err := chain.Authenticate(withToken("0123456789abcdef-alice")); err != nil || id.Name != "token:alice" {
		t.Errorf("known token = %q, %v; want token:alice", id.Name, err)
	}
	if id, err := chain.Authenticate(withToken("0123456789abcdef-mallory")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("unknown token = %q, %v; want Unauthenticated, not the certificate's identity", id.Name, err)
	}
	if id, err := chain.Authenticate(context.Background()); err != nil || id.Name != cert.id {
		t.Errorf("no token = %q, %v; want the certificate's identity", id.Name, err)
	}
	if _, err := (auth.Chain{none}).Authenticate(context.Background()); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no credentials at all = %v, want Unauthenticated", err)
	}
	basic := metadataContext("authorization", "Basic YWxpY2U6cHc=")
	if _, err := chain.Authenticate(basic); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Basic authorization = %v, want Unauthenticated rather than ignored", err)
	}
}

func TestTokensFileIsChecked(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"short token":   `{"tokens": [{"name": "alice", "token": "short"}]}`,
		"bad name":      `{"tokens": [{"name": "spiffe://x", "token": "0123456789abcdef"}]}`,
		"unknown field": `{"tokens": [], "extra": 1}`,
		"not JSON":      `alice 0123456789abcdef`,
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := auth.LoadTokens(path, nil); err == nil {
			t.Errorf("%s: tokens file accepted", name)
		}
	}
}
