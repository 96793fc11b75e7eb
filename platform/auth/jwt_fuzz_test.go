package auth_test

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/lethe-privacy/lethe/platform/auth/authtest"
)

// FuzzVerify holds Verify to go-jose used plainly, as an oracle: a token
// Verify accepts must be one go-jose accepts too (a signature by a key of
// the file under an accepted algorithm; exp, nbf, iss and aud as
// configured), with exp and sub present and the identity its claims say.
// So Lethe's key selection, its policy and its error mapping can never
// make the verifier more lenient than the library. The fuzzer writes the
// header and the claims and chooses the signing key, so that it reaches
// tokens whose signature verifies, where leniency would matter; the suffix
// tampers with the signature. Run against the earlier hand-written parser,
// its seeds found four leniencies (case-insensitive member names,
// duplicate members, exp as a string), which led to adopting go-jose.
//
// `go test -run '^$' -fuzz FuzzVerify ./auth/` searches; `make test` runs
// the seeds. docs/security.md records the long runs.
func FuzzVerify(f *testing.F) {
	keys := testKeys()
	signers := []crypto.Signer{keys["ec"], keys["ed"], keys["rsa"], keys["other"]}
	jwks := filepath.Join(f.TempDir(), "jwks.json")
	authtest.WriteJWKS(f, jwks, map[string]crypto.Signer{"ec-1": keys["ec"], "ed-1": keys["ed"], "rsa-1": keys["rsa"]})
	// The oracle's keys: the same public keys, as go-jose reads them.
	var oracleKeys []any
	for _, k := range signers[:3] {
		oracleKeys = append(oracleKeys, k.Public())
	}

	good, _ := json.Marshal(claims(nil))
	for _, seed := range []struct {
		header string
		key    uint8
		suffix string
	}{
		{`{"alg":"ES256","kid":"ec-1"}`, 0, ""},
		{`{"alg":"EdDSA"}`, 1, ""},
		{`{"alg":"RS256","kid":"rsa-1","typ":"JWT"}`, 2, ""},
		{`{"alg":"ES256"}`, 3, ""},
		{`{"alg":"RS256"}`, 0, ""},
		{`{"alg":"none"}`, 0, ""},
		{`{"alg":"HS256"}`, 2, ""},
		{`{"alg":"ES256","crit":["exp"],"exp":1}`, 0, ""},
		{`{"ALG":"ES256"}`, 0, ""},
		{`{"alg":"ES256","alg":"none"}`, 0, ""},
		{`{"alg":"EdDSA"}`, 1, "A"},
		{`[]`, 0, ""},
	} {
		f.Add(seed.header, string(good), seed.key, seed.suffix)
	}
	for _, c := range []string{
		`{"iss":"https://idp.lethe.example","sub":"alice","aud":["x","lethe"],"exp":1772366700}`,
		`{"ISS":"https://idp.lethe.example","SUB":"alice","AUD":"lethe","EXP":1772366700}`,
		`{"iss":"https://idp.lethe.example","sub":"alice","aud":"lethe","exp":1772366700.5,"nbf":1e9}`,
		`{"iss":"https://idp.lethe.example","sub":"alice","aud":"lethe","exp":"1772366700"}`,
		`{"iss":"https://idp.lethe.example","sub":"","aud":"lethe","exp":1772366700}`,
		`{"iss":"https://evil.example","iss":"https://idp.lethe.example","sub":"alice","aud":"lethe","exp":1772366700}`,
		`{"iss":"https://idp.lethe.example","sub":"alice","aud":"lethe","exp":1e300}`,
	} {
		f.Add(`{"alg":"ES256"}`, c, uint8(0), "")
	}

	a := newJWT(f, jwks)
	f.Fuzz(func(t *testing.T, header, claimsJSON string, key uint8, suffix string) {
		input := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claimsJSON))
		token := input + "." + authtest.SignInput(t, signers[int(key)%len(signers)], input) + suffix
		identity, err := a.Verify(token)
		if err != nil {
			return
		}
		tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA, jose.RS256})
		if err != nil {
			t.Fatalf("Verify accepted %q as %q; go-jose refuses to parse it: %v", token, identity, err)
		}
		var c jwt.Claims
		verified := false
		for _, k := range oracleKeys {
			if tok.Claims(k, &c) == nil {
				verified = true
				break
			}
		}
		if !verified {
			t.Fatalf("Verify accepted %q as %q; its signature verifies with no key for go-jose", token, identity)
		}
		if err := c.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{audience}, Time: now}, 30e9); err != nil {
			t.Fatalf("Verify accepted %q as %q; go-jose finds its claims invalid: %v", token, identity, err)
		}
		if c.Expiry == nil || c.Subject == "" {
			t.Fatalf("Verify accepted %q as %q without exp or sub", token, identity)
		}
		if want := "jwt:" + c.Issuer + "/" + c.Subject; identity != want {
			t.Fatalf("Verify named %q; the claims say %q", identity, want)
		}
	})
}
