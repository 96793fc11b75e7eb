package servertest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lethe-privacy/lethe/platform/auth/authtest"
	"github.com/lethe-privacy/lethe/platform/server"
)

// The issuer and audience of the bearer JWTs a JWT signs.
const (
	JWTIssuer   = "https://idp.lethe.test"
	JWTAudience = "lethe"
)

// JWT signs bearer tokens that a server configured by PKI.WithJWT accepts.
type JWT struct {
	t   testing.TB
	key *ecdsa.PrivateKey
}

// WithJWT makes cfg also accept bearer JWTs (ES256) signed by the
// returned JWT, beside client certificates. Each call makes a new key:
// a second JWT signs tokens that a server configured by the first refuses.
func (p *PKI) WithJWT(t testing.TB, cfg *server.Config) *JWT {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	authtest.WriteJWKS(t, path, map[string]crypto.Signer{"k1": key})
	cfg.JWTKeysFile, cfg.JWTIssuer, cfg.JWTAudience = path, JWTIssuer, JWTAudience
	return &JWT{t: t, key: key}
}

// Token is a bearer token for subject, valid for an hour.
func (j *JWT) Token(subject string) string {
	now := time.Now()
	return authtest.Sign(j.t, j.key, "ES256", "k1", map[string]any{
		"iss": JWTIssuer, "aud": JWTAudience, "sub": subject,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	})
}

// JWTIdentity is the identity of a caller presenting Token(subject): the
// name a policy gives.
func JWTIdentity(subject string) string { return "jwt:" + JWTIssuer + "/" + subject }

// HTTPClient returns an HTTP client for the caller called name: it
// presents a client certificate carrying Identity(name) and trusts the
// CA, as Client does for gRPC.
func (p *PKI) HTTPClient(t testing.TB, name string) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: p.clientTLS(t, name), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// StartHTTP is StartTCP with the HTTP/JSON listener on as well: it
// returns the gRPC address and the HTTP base URL (https:// when cfg has
// TLS).
func StartHTTP(t testing.TB, cfg server.Config, register func(*server.Server)) (grpcAddr, baseURL string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = lis.Close()
		t.Fatal(err)
	}
	cfg.HTTPListener = hlis
	ServeTCP(t, cfg, lis, register)
	scheme := "http://"
	if cfg.TLSCertFile != "" {
		scheme = "https://"
	}
	return lis.Addr().String(), scheme + hlis.Addr().String()
}

// PostJSON calls procedure ("/lethe.consent.v1.ConsentService/Check") at
// baseURL as an HTTP/JSON client does (the Connect protocol's unary POST),
// with token as its bearer token when not empty, and returns the HTTP
// status and the response body.
func PostJSON(t testing.TB, client *http.Client, baseURL, procedure, token, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, baseURL+procedure, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read the response: %v", procedure, err)
	}
	return resp.StatusCode, out
}

// HTTPError is an error answer of the HTTP/JSON listener: the Connect
// protocol's error body, each status detail with its JSON form (debug).
type HTTPError struct {
	// Code is the gRPC code in the Connect spelling ("invalid_argument").
	Code string `json:"code"`
	// Message is the status message.
	Message string `json:"message"`
	// Details are the status details (google.rpc.ErrorInfo, BadRequest).
	Details []struct {
		Type  string          `json:"type"`
		Debug json.RawMessage `json:"debug"`
	} `json:"details"`
}

// DecodeHTTPError decodes body as an HTTPError, failing the test when it
// is not one.
func DecodeHTTPError(t testing.TB, body []byte) HTTPError {
	t.Helper()
	var e HTTPError
	if err := json.Unmarshal(body, &e); err != nil || e.Code == "" {
		t.Fatalf("not a Connect error body (%v): %s", err, body)
	}
	return e
}

// Fields returns the fields that the error's google.rpc.BadRequest detail
// names, read from its JSON form alone.
func (e HTTPError) Fields() []string {
	var fields []string
	for _, d := range e.Details {
		if d.Type != "google.rpc.BadRequest" {
			continue
		}
		var br struct {
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		}
		if json.Unmarshal(d.Debug, &br) == nil {
			for _, v := range br.FieldViolations {
				fields = append(fields, v.Field)
			}
		}
	}
	return fields
}
