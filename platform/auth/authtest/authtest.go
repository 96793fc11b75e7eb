// Package authtest signs JWTs and writes key files for tests of the
// authentication slot, with the standard library only.
package authtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"testing"
)

// Sign returns a compact JWS of claims with header {"alg": alg, "kid":
// kid} (kid left out when empty), signed by key: *ecdsa.PrivateKey
// (ES256), ed25519.PrivateKey (EdDSA) or *rsa.PrivateKey (RS256). The alg
// is written as given, so a test can lie about it.
func Sign(t testing.TB, key crypto.Signer, alg, kid string, claims map[string]any) string {
	t.Helper()
	header := map[string]any{"alg": alg, "typ": "JWT"}
	if kid != "" {
		header["kid"] = kid
	}
	input := Segment(t, header) + "." + Segment(t, claims)
	return input + "." + SignInput(t, key, input)
}

// SignInput returns the base64url signature of a JWS signing input
// ("<header>.<claims>") by key, as Sign makes it.
func SignInput(t testing.TB, key crypto.Signer, input string) string {
	t.Helper()
	digest := sha256.Sum256([]byte(input))
	var sig []byte
	var err error
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		// JWS carries r||s, 32 bytes each (RFC 7518 section 3.4).
		r, s, e := ecdsa.Sign(rand.Reader, k, digest[:])
		if e != nil {
			t.Fatal(e)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, []byte(input))
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:])
	default:
		t.Fatalf("authtest: key of type %T", key)
	}
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(sig)
}

// Segment is v as a base64url JSON segment of a JWT.
func Segment(t testing.TB, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(data)
}

// WritePEM writes the public keys of keys as PEM PUBLIC KEY blocks.
func WritePEM(t testing.TB, path string, keys ...crypto.Signer) {
	t.Helper()
	var out []byte
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// WriteJWKS writes the public keys of keys as a JWKS, each with its kid.
func WriteJWKS(t testing.TB, path string, keys map[string]crypto.Signer) {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	for kid, k := range keys {
		switch pub := k.Public().(type) {
		case *ecdsa.PublicKey:
			raw, err := pub.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			set.Keys = append(set.Keys, map[string]string{"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(raw[1:33]), "y": b64(raw[33:])})
		case ed25519.PublicKey:
			set.Keys = append(set.Keys, map[string]string{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pub)})
		case *rsa.PublicKey:
			e := []byte{byte(pub.E >> 16), byte(pub.E >> 8), byte(pub.E)}
			set.Keys = append(set.Keys, map[string]string{"kty": "RSA", "kid": kid, "n": b64(pub.N.Bytes()), "e": b64(e)})
		}
	}
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
