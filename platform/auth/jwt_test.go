package auth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/auth/authtest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
)

const (
	issuer   = "https://idp.lethe.example"
	audience = "lethe"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testKeys are generated once: RSA generation is slow under -race.
var testKeys = sync.OnceValue(func() map[string]crypto.Signer {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return map[string]crypto.Signer{"ec": ec, "ed": ed, "rsa": rs, "other": other}
})

func claims(mutate func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss": issuer, "sub": "alice", "aud": audience,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Add(-time.Minute).Unix(),
	}
	if mutate != nil {
		mutate(c)
	}
	return c
}

func newJWT(t testing.TB, keysFile string) *auth.JWTAuthenticator {
	t.Helper()
	a, err := auth.NewJWTAuthenticator(auth.JWTConfig{KeysFile: keysFile, Issuer: issuer, Audience: audience, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func withToken(token string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
}

// TestJWT holds the verifier to RFC 7519 and RFC 8725: the token's
// algorithm must fit the key's type, and exp, nbf, iss and aud are checked.
func TestJWT(t *testing.T) {
	keys := testKeys()
	dir := t.TempDir()
	jwks := filepath.Join(dir, "jwks.json")
	authtest.WriteJWKS(t, jwks, map[string]crypto.Signer{"ec-1": keys["ec"], "ed-1": keys["ed"], "rsa-1": keys["rsa"]})
	a := newJWT(t, jwks)

	rsaPub := keys["rsa"].Public().(*rsa.PublicKey)
	rsaPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(rsaPub))})
	hs256 := func(secret []byte) string {
		input := authtest.Segment(t, map[string]string{"alg": "HS256", "typ": "JWT"}) + "." + authtest.Segment(t, claims(nil))
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(input))
		return input + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	valid := authtest.Sign(t, keys["ec"], "ES256", "ec-1", claims(nil))
	// raw signs a header and claims written by hand, with the EC key.
	raw := func(header, claims string) string {
		input := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
		return input + "." + authtest.SignInput(t, keys["ec"], input)
	}
	parts := strings.Split(valid, ".")

	for _, tc := range []struct {
		name  string
		token string
		want  string // identity, or the refusal's text
		ok    bool
	}{
		{"ES256", valid, "jwt:" + issuer + "/alice", true},
		{"EdDSA", authtest.Sign(t, keys["ed"], "EdDSA", "ed-1", claims(nil)), "jwt:" + issuer + "/alice", true},
		{"RS256", authtest.Sign(t, keys["rsa"], "RS256", "rsa-1", claims(nil)), "jwt:" + issuer + "/alice", true},
		{"no kid tries every key of the algorithm", authtest.Sign(t, keys["ec"], "ES256", "", claims(nil)), "jwt:" + issuer + "/alice", true},
		{"aud as an array", authtest.Sign(t, keys["ec"], "ES256", "", claims(func(c map[string]any) { c["aud"] = []string{"other", audience} })), "jwt:" + issuer + "/alice", true},
		{"expired within the leeway", authtest.Sign(t, keys["ec"], "ES256", "", claims(func(c map[string]any) { c["exp"] = now.Add(-10 * time.Second).Unix() })), "jwt:" + issuer + "/alice", true},

		{"expired", authtest.Sign(t, keys["ec"], "ES256", "ec-1", claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), "expired", false},
		{"no exp", authtest.Sign(t, keys["ec"], "ES256", "ec-1", claims(func(c map[string]any) { delete(c, "exp") })), "no exp", false},
		{"not valid yet", authtest.Sign(t, keys["ec"], "ES256", "ec-1", claims(func(c map[string]any) { c["nbf"] = now.Add(time.Minute).Unix() })), "nbf", false},
		{"wrong audience", authtest.Sign(t, keys["ec"], "ES256", "ec-1", claims(func(c map[string]any) { c["aud"] = "billing" })), "audience", false},
		{"no audience", authtest.Sign(t, keys["ec"], "ES256", "ec-1", claims(func(c map[string]any) { delete(c, "aud") })), "no aud", false},
		{"wrong issuer", authtest.Sign(t, keys["ec"], "ES256", "ec-1", claims(func(c map[string]any) { c["iss"] = "https://evil.example" })), "issuer", false},
		{"no subject", authtest.Sign(t, keys["ec"], "ES256", "ec-1", claims(func(c map[string]any) { delete(c, "sub") })), "no sub", false},
		{"wrong key", authtest.Sign(t, keys["other"], "ES256", "ec-1", claims(nil)), "signature", false},
		{"wrong key without kid", authtest.Sign(t, keys["other"], "ES256", "", claims(nil)), "signature", false},
		{"kid of another key", authtest.Sign(t, keys["ec"], "ES256", "rsa-1", claims(nil)), "signature", false},
		{"alg none", authtest.Segment(t, map[string]string{"alg": "none"}) + "." + parts[1] + ".", `"none" is not accepted`, false},
		{"alg none with a signature", authtest.Segment(t, map[string]string{"alg": "none"}) + "." + parts[1] + "." + parts[2], `"none" is not accepted`, false},
		{"alg confusion: HS256 keyed with the RSA public key", hs256(rsaPubPEM), `"HS256" is not accepted`, false},
		{"alg confusion: HS256 keyed with the raw modulus", hs256(rsaPub.N.Bytes()), `"HS256" is not accepted`, false},
		{"alg confusion: RS256 claimed, signed ES256", authtest.Sign(t, keys["ec"], "RS256", "", claims(nil)), "signature", false},
		{"alg confusion: ES256 claimed, signed EdDSA", authtest.Sign(t, keys["ed"], "ES256", "", claims(nil)), "signature", false},
		{"header and claims swapped", parts[1] + "." + parts[0] + "." + parts[2], "not accepted", false},
		{"tampered claims", parts[0] + "." + authtest.Segment(t, claims(func(c map[string]any) { c["sub"] = "admin" })) + "." + parts[2], "signature", false},
		{"critical extension", authtest.Segment(t, map[string]any{"alg": "ES256", "crit": []string{"b64"}}) + "." + parts[1] + "." + parts[2], "critical", false},
		{"two parts", parts[0] + "." + parts[1], "three", false},
		// Strict JSON, found by FuzzVerify against the earlier hand-written
		// parser: member names are exact, duplicates are refused, and a
		// NumericDate is a number (RFC 7519 section 2).
		{"header names are case-sensitive", raw(`{"ALG":"ES256"}`, string(must(json.Marshal(claims(nil))))), "not accepted", false},
		{"claim names are case-sensitive", authtest.Sign(t, keys["ec"], "ES256", "", claims(func(c map[string]any) { delete(c, "iss"); c["ISS"] = issuer })), "issuer", false},
		{"duplicate claim", raw(`{"alg":"ES256"}`, `{"iss":"https://evil.example","iss":"`+issuer+`","sub":"alice","aud":"lethe","exp":`+fmt.Sprint(now.Add(time.Minute).Unix())+`}`), "claims", false},
		{"exp as a string", authtest.Sign(t, keys["ec"], "ES256", "", claims(func(c map[string]any) { c["exp"] = fmt.Sprint(now.Add(time.Minute).Unix()) })), "claims", false},
		{"not base64", "!!!." + parts[1] + "." + parts[2], "base64", false},
		{"too long", valid + strings.Repeat("A", 9000), "too long", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := a.Authenticate(withToken(tc.token))
			if tc.ok {
				if err != nil || id.Name != tc.want {
					t.Fatalf("Authenticate = %q, %v; want %q", id.Name, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Authenticate accepted the token as %q", id.Name)
			}
			if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Authenticate = %v, want Unauthenticated mentioning %q", err, tc.want)
			}
		})
	}
}

// TestJWTKeysFromPEM: the keys file may be PEM public keys, which have no
// kid; each key still verifies only its own algorithm.
func TestJWTKeysFromPEM(t *testing.T) {
	keys := testKeys()
	path := filepath.Join(t.TempDir(), "keys.pem")
	authtest.WritePEM(t, path, keys["ec"], keys["ed"], keys["rsa"])
	a := newJWT(t, path)
	for alg, key := range map[string]crypto.Signer{"ES256": keys["ec"], "EdDSA": keys["ed"], "RS256": keys["rsa"]} {
		if _, err := a.Verify(authtest.Sign(t, key, alg, "", claims(nil))); err != nil {
			t.Errorf("%s: %v", alg, err)
		}
	}
	if _, err := a.Verify(authtest.Sign(t, keys["other"], "ES256", "", claims(nil))); err == nil {
		t.Error("a key not in the file verified")
	}
}

// TestJWTKeysRotate: a new key written to the keys file is used without a
// restart; a broken file keeps the keys in force.
func TestJWTKeysRotate(t *testing.T) {
	keys := testKeys()
	path := filepath.Join(t.TempDir(), "keys.pem")
	authtest.WritePEM(t, path, keys["ec"])
	// The reloads' log is the sync point: the broken file is checked once
	// it was looked at and refused, not after a guessed time.
	var logs logbuf.Buffer
	a, err := auth.NewJWTAuthenticator(auth.JWTConfig{KeysFile: path, Issuer: issuer, Audience: audience, Now: func() time.Time { return now },
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	token := authtest.Sign(t, keys["other"], "ES256", "", claims(nil))
	if _, err := a.Verify(token); err == nil {
		t.Fatal("verified before the key was added")
	}
	authtest.WritePEM(t, path, keys["ec"], keys["other"])
	eventually.Succeeds(t, "the added key is picked up", func() error {
		_, err := a.Verify(token)
		return err
	})
	if err := os.WriteFile(path, []byte("-----BEGIN GARBAGE"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the broken keys file is looked at and refused", func() bool {
		_, _ = a.Verify(token) // a look happens on use, once the interval passed
		return strings.Contains(logs.String(), "file not reloaded")
	})
	if _, err := a.Verify(token); err != nil {
		t.Fatalf("a broken keys file replaced the good keys: %v", err)
	}
}

func TestJWTKeysFileIsChecked(t *testing.T) {
	dir := t.TempDir()
	priv := must(x509.MarshalPKCS8PrivateKey(testKeys()["ec"]))
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"private key":       string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv})),
		"small RSA key":     string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&small.PublicKey))})),
		"P-384 key":         string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&p384.PublicKey))})),
		"JWKS private":      `{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}`,
		"JWKS only oct":     `{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}`,
		"JWKS alg mismatch": `{"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "RS256", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
		"JWKS off curve":    `{"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE", "y": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"}]}`,
		"neither":           "hello",
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := auth.NewJWTAuthenticator(auth.JWTConfig{KeysFile: path, Issuer: issuer, Audience: audience}); err == nil {
			t.Errorf("%s: keys file accepted", name)
		}
	}
	if _, err := auth.NewJWTAuthenticator(auth.JWTConfig{KeysFile: filepath.Join(dir, "neither")}); err == nil {
		t.Error("no issuer and audience accepted")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func metadataContext(kv ...string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
}
