package consent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
)

// The public endpoint's pure parts: the rate limiter's memory bound, the
// banner's language choice, and subject tokens signed with each algorithm.
// What the endpoint does end to end is tested through its listener in
// tools/lethe/internal/flows/consent/web_test.go.

// TestLimiterIsBounded: at its bound the limiter drops the buckets that
// are full again and refuses new keys while none is, so a flood of
// visitor ids cannot grow its memory.
func TestLimiterIsBounded(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	l := newLimiter(2, 3)
	for i := range 3 {
		if ok, _ := l.take(fmt.Sprint("v", i), now); !ok {
			t.Fatalf("key %d refused", i)
		}
	}
	if ok, wait := l.take("v3", now); ok || wait <= 0 || l.size() != 3 {
		t.Fatalf("a fourth key while three are busy: ok %v, wait %v, %d buckets", ok, wait, l.size())
	}
	// Half a minute later each bucket holds two tokens again: full, so
	// evicted, and the new key fits.
	now = now.Add(30 * time.Second)
	if ok, _ := l.take("v3", now); !ok || l.size() != 1 {
		t.Fatalf("after the others refilled: ok %v, %d buckets", ok, l.size())
	}
	ok1, _ := l.take("v3", now)
	ok2, wait := l.take("v3", now)
	if !ok1 || ok2 || wait != 30*time.Second {
		t.Fatalf("a bucket of two: %v %v, wait %v", ok1, ok2, wait)
	}
}

func TestPickLanguage(t *testing.T) {
	w := &consentv1.WebSettings{DefaultLanguage: "da", Texts: map[string]*consentv1.BannerTexts{"da": {}, "en": {}, "sv-FI": {}}}
	for _, tc := range []struct{ lang, accept, want string }{
		{"en", "da", "en"},
		{"EN-gb", "", "en"},
		{"", "fr-FR,en;q=0.8,da;q=0.9", "da"},
		{"", "sv-SE,sv;q=0.9", "sv-FI"},
		{"", "fr, de;q=0.5", "da"},
		{"", "en;q=0, *", "da"},
		{"fi", "en", "da"}, // lang given: Accept-Language is not consulted
		{"", "", "da"},
	} {
		if got := pickLanguage(w, tc.lang, tc.accept); got != tc.want {
			t.Errorf("pickLanguage(%q, %q) = %q, want %q", tc.lang, tc.accept, got, tc.want)
		}
	}
}

// TestSubjectTokenAlgorithms: a token verifies with the key its kid names
// under that key's one algorithm: ES256 for P-256, EdDSA for Ed25519; a
// token whose alg does not fit its key is refused.
func TestSubjectTokenAlgorithms(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, ed, _ := ed25519.GenerateKey(rand.Reader)
	c := &webConfig{keys: map[string]crypto.PublicKey{"ec": &ec.PublicKey, "ed": edPub}}
	sign := func(alg jose.SignatureAlgorithm, kid string, key any) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(map[string]any{"sub": "ada", "aud": "lethe:clio", "iat": now.Unix(),
			"exp": now.Add(5 * time.Minute).Unix(), "roles": []string{"teacher"}}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, tc := range []struct {
		name, token, err string
	}{
		{"ES256", sign(jose.ES256, "ec", ec), ""},
		{"EdDSA", sign(jose.EdDSA, "ed", ed), ""},
		{"EdDSA under the EC key's id", sign(jose.EdDSA, "ec", ed), "does not fit key"},
		{"ES256 under the Ed25519 key's id", sign(jose.ES256, "ed", ec), "does not fit key"},
		{"HS256", sign(jose.HS256, "ec", []byte("0123456789abcdef0123456789abcdef")), "not a JWT signed with EdDSA or ES256"},
	} {
		got, err := verifySubjectToken(tc.token, "clio", c, now)
		switch {
		case tc.err == "" && (err != nil || got.subject != "ada" || len(got.roles) != 1):
			t.Errorf("%s: %+v, %v", tc.name, got, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.err)
		}
	}
}
