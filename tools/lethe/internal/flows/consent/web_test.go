package consent_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/services/consent"
)

// The public consent endpoint for browsers (docs/web-consent.md), through
// its real listener, against the consent service and the registry as
// lethe dev runs them: what a banner records must be what a backend's
// Check answers over gRPC.

const (
	clioSite = "https://www.clio.com"
	demoPage = "http://127.0.0.1:7412"
	// chrome is the user agent the tests' "browser" sends.
	chrome = "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36"
)

// webFixture is a fixture whose consent service serves the public
// endpoint, and the key Clio's backend signs subject tokens with.
type webFixture struct {
	*fixture
	base string
	key  ed25519.PrivateKey
}

// startWeb starts the services with the public endpoint on a loopback
// port, and Clio with its purposes and web settings.
func startWeb(t *testing.T, public consent.PublicOptions) *webFixture {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public.Listener = lis
	f := startOn(t, servicetest.Options{Clock: clock.NewFake(servicetest.Epoch), Logger: quiet}, nil,
		func(f *fixture) { f.public = public })
	clio(t, f)
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w := &webFixture{fixture: f, base: "http://" + lis.Addr().String(), key: key}
	if _, err := f.consent.PutWebSettings(f.ctx, &consentv1.PutWebSettingsRequest{RequestId: f.id(), TenantId: "clio",
		Settings: clioWeb(t, pub)}); err != nil {
		t.Fatal(err)
	}
	return w
}

// clioWeb is Clio's banner as the tests use it.
func clioWeb(t *testing.T, pub ed25519.PublicKey) *consentv1.WebSettings {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	texts := func(title, stats, marketing string) *consentv1.BannerTexts {
		return &consentv1.BannerTexts{Title: title, Body: "…", AcceptAll: "Accept all", RejectAll: "Reject all", SaveSelection: "Save",
			Customise: "Customise", NecessaryLabel: "Always on", PolicyUrl: "https://www.clio.com/privacy-policy",
			Purposes: map[string]*consentv1.PurposeText{
				"cookies.necessary":  {Name: "Necessary"},
				"cookies.statistics": {Name: stats},
				"marketing":          {Name: marketing},
			}}
	}
	return &consentv1.WebSettings{
		AllowedOrigins:   []string{clioSite, demoPage},
		SubjectTokenKeys: []*consentv1.SubjectTokenKey{{KeyId: "clio-1", PublicKeyPem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}},
		Texts: map[string]*consentv1.BannerTexts{
			"da": texts("Cookies på Clio", "Statistik", "Markedsføring"),
			"en": texts("Cookies at Clio", "Statistics", "Marketing"),
		},
		DefaultLanguage: "da",
		ShownPurposeIds: []string{"cookies.necessary", "cookies.statistics", "marketing"},
	}
}

// newVisitor is a visitor id as the banner script makes one.
func newVisitor() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// answer is a public endpoint's answer.
type answer struct {
	status int
	header http.Header
	body   map[string]any
}

// errorField returns the error's code and field.
func (a answer) errorField() (string, string) {
	e, _ := a.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	field, _ := e["field"].(string)
	return code, field
}

// call makes a request to the public endpoint.
func (w *webFixture) call(t *testing.T, method, path string, header map[string]string, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, w.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", chrome)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header}
	if len(bytes.TrimSpace(data)) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(data, &a.body); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return a
}

// decide posts a decision from Clio's site.
func (w *webFixture) decide(t *testing.T, visitor string, extra map[string]string, body string) answer {
	t.Helper()
	h := map[string]string{"Origin": clioSite}
	if visitor != "" {
		h["Lethe-Visitor"] = visitor
	}
	for k, v := range extra {
		h[k] = v
	}
	return w.call(t, http.MethodPost, "/v1/tenants/clio/decisions", h, body)
}

// decision is a decision's body over Clio's three shown purposes.
func decision(requestID, choice string, selected ...string) string {
	sel, _ := json.Marshal(selected)
	if selected == nil {
		sel = []byte("[]")
	}
	return fmt.Sprintf(`{"requestId":%q,"choice":%q,"selected":%s,"shown":[{"id":"cookies.necessary","noticeVersion":""},`+
		`{"id":"cookies.statistics","noticeVersion":"2024-01"},{"id":"marketing","noticeVersion":"2024-01"}]}`, requestID, choice, sel)
}

// token signs a subject token as Clio's backend would.
func (w *webFixture) token(t *testing.T, claims map[string]any, kid string, key ed25519.PrivateKey) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// subjectToken is a valid token for sub with roles.
func (w *webFixture) subjectToken(t *testing.T, sub string, roles ...string) string {
	now := w.clock.Now()
	claims := map[string]any{"sub": sub, "aud": "lethe:clio", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	if roles != nil {
		claims["roles"] = roles
	}
	return w.token(t, claims, "clio-1", w.key)
}

// history returns a subject's records.
func (w *webFixture) history(t *testing.T, subject string) []*consentv1.ConsentRecord {
	t.Helper()
	resp, err := w.consent.ListConsentHistory(w.ctx, &consentv1.ListConsentHistoryRequest{TenantId: "clio", SubjectId: subject})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Records
}

func (w *webFixture) allowed(t *testing.T, subject, purpose string, attrs *consentv1.SubjectAttributes) bool {
	t.Helper()
	return w.check(t, "clio", subject, purpose, attrs).Allowed
}

// TestBannerDecisionsReachCheck: accept all, reject all and a selection,
// each recorded through the public endpoint for an anonymous visitor, are
// what a backend's Check answers over gRPC for visitor:<id>; the records
// keep the Art. 7(1) evidence: method BANNER, the notice version shown,
// the page's origin, a user-agent hash and the fingerprint.
func TestBannerDecisionsReachCheck(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})

	// The banner, as a server reads it (no Origin): Danish by default,
	// English when the browser prefers it.
	b := w.call(t, http.MethodGet, "/v1/tenants/clio/banner", nil, "")
	if b.status != http.StatusOK || b.body["language"] != "da" || b.body["ask"] != true || b.body["choices"] != nil {
		t.Fatalf("banner = %d %v", b.status, b.body)
	}
	b = w.call(t, http.MethodGet, "/v1/tenants/clio/banner", map[string]string{"Accept-Language": "en-GB,en;q=0.9,da;q=0.5"}, "")
	if b.body["language"] != "en" || b.body["texts"].(map[string]any)["title"] != "Cookies at Clio" {
		t.Fatalf("banner in English = %v", b.body)
	}
	purposes := b.body["purposes"].([]any)
	if len(purposes) != 3 || purposes[0].(map[string]any)["necessary"] != true || purposes[1].(map[string]any)["noticeVersion"] != "2024-01" {
		t.Fatalf("purposes = %v", purposes)
	}

	all, none, some := newVisitor(), newVisitor(), newVisitor()
	for visitor, body := range map[string]string{
		all:  decision("req-accept-all-1", "accept_all"),
		none: decision("req-reject-all-1", "reject_all"),
		some: decision("req-selected-1", "accept_selected", "cookies.statistics"),
	} {
		a := w.decide(t, visitor, nil, body)
		if a.status != http.StatusOK || a.body["ask"] != false || a.header.Get("Access-Control-Allow-Origin") != clioSite {
			t.Fatalf("decision = %d %v %v", a.status, a.body, a.header)
		}
	}
	for _, tc := range []struct {
		visitor, purpose string
		want             bool
	}{
		{all, "cookies.statistics", true}, {all, "marketing", true},
		{none, "cookies.statistics", false}, {none, "marketing", false}, {none, "cookies.necessary", true},
		{some, "cookies.statistics", true}, {some, "marketing", false},
	} {
		if got := w.allowed(t, "visitor:"+tc.visitor, tc.purpose, nil); got != tc.want {
			t.Errorf("Check(visitor %s, %s) = %v, want %v", tc.visitor[:4], tc.purpose, got, tc.want)
		}
	}

	// The visitor's choices come back with the banner, which no longer asks.
	b = w.call(t, http.MethodGet, "/v1/tenants/clio/banner", map[string]string{"Origin": clioSite, "Lethe-Visitor": some}, "")
	ch := b.body["choices"].(map[string]any)
	got := ch["purposes"].(map[string]any)
	if b.body["ask"] != false || got["cookies.statistics"] != true || got["marketing"] != false || got["cookies.necessary"] != true ||
		ch["decidedAt"] != servicetest.Epoch.Format(time.RFC3339) || ch["expiresAt"] != servicetest.Epoch.Add(365*24*time.Hour).Format(time.RFC3339) {
		t.Fatalf("choices = %v, ask %v", ch, b.body["ask"])
	}

	// Art. 7(1): the controller can show how and under what the consent
	// was given.
	records := w.history(t, "visitor:"+all)
	if len(records) != 2 {
		t.Fatalf("records = %v, want statistics and marketing", records)
	}
	for _, r := range records {
		ev := r.Evidence
		if r.Method != consentv1.CollectionMethod_COLLECTION_METHOD_BANNER || r.NoticeVersion != "2024-01" || ev.Origin != clioSite ||
			len(ev.UserAgentHash) != 32 || len(ev.Fingerprint) != 32 || ev.KeyId == "" || ev.Gpc || r.Actor != "web:clio" {
			t.Errorf("record = %v", r)
		}
	}
	// The same browser hashes alike for another visitor; nothing readable
	// is kept.
	if other := w.history(t, "visitor:"+none)[0].Evidence; !bytes.Equal(other.UserAgentHash, records[0].Evidence.UserAgentHash) {
		t.Error("the same user agent hashed differently")
	}
	if bytes.Contains(mustJSON(t, records), []byte("Chrome")) {
		t.Error("the user agent is stored in the clear")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
