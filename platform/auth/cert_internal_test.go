package auth

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

// TestCertIdentityIsRememberedPerTrustDomain: the remembered SPIFFE id of
// a certificate is the one SPIFFEID reads, refusals included, and a
// certificate remembered for one trust domain is judged afresh for
// another; a full cache starts afresh rather than growing.
func TestCertIdentityIsRememberedPerTrustDomain(t *testing.T) {
	c := &idCache{ids: map[string]cachedID{}}
	cert := func(raw, uri string) *x509.Certificate {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		return &x509.Certificate{Raw: []byte(raw), URIs: []*url.URL{u}}
	}
	newsletter := cert("der-1", "spiffe://lethe.example/system/newsletter")
	for range 2 {
		if id, err := c.spiffeID(newsletter, "lethe.example"); err != nil || id != "spiffe://lethe.example/system/newsletter" {
			t.Fatalf("spiffeID = %q, %v", id, err)
		}
	}
	if _, err := c.spiffeID(newsletter, "other.example"); err == nil || !strings.Contains(err.Error(), "trust domain") {
		t.Fatalf("the same certificate for trust domain other.example: %v, want a refusal", err)
	}
	bad := cert("der-2", "spiffe://lethe.example/a//b")
	for range 2 {
		if _, err := c.spiffeID(bad, "lethe.example"); err == nil {
			t.Fatal("a malformed SPIFFE id accepted")
		}
	}
	for i := range idCacheSize + 1 {
		_, _ = c.spiffeID(cert(string(rune(i))+"-x", "spiffe://lethe.example/system/x"), "lethe.example")
	}
	if n := len(c.ids); n > idCacheSize {
		t.Fatalf("%d certificates remembered, want at most %d", n, idCacheSize)
	}
}
