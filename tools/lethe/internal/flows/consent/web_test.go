package consent_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/services/consent"
	"github.com/lethe-privacy/lethe/services/consent/web"
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
func startWeb(t testing.TB, public consent.PublicOptions) *webFixture {
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
func clioWeb(t testing.TB, pub ed25519.PublicKey) *consentv1.WebSettings {
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

// TestStudentTokenNeverGetsMarketing: Clio's policy §2.2, "Marketing
// cookies are never enabled for student accounts regardless of whether the
// student has clicked Accept all": a student's banner does not offer
// marketing, a decision that names it is refused, and Check never allows
// it for the student, while a teacher's accept all does.
func TestStudentTokenNeverGetsMarketing(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})
	student := map[string]string{"Origin": clioSite, "Authorization": "Bearer " + w.subjectToken(t, "stud-1", "student")}
	b := w.call(t, http.MethodGet, "/v1/tenants/clio/banner", student, "")
	if b.status != http.StatusOK {
		t.Fatalf("banner = %d %v", b.status, b.body)
	}
	for _, p := range b.body["purposes"].([]any) {
		if p.(map[string]any)["id"] == "marketing" {
			t.Fatal("a student is asked about marketing")
		}
	}
	if _, ok := b.body["choices"].(map[string]any)["purposes"].(map[string]any)["marketing"]; ok {
		t.Fatal("a student's choices list marketing")
	}
	a := w.decide(t, "", student, decision("req-student-1", "accept_all"))
	if code, field := a.errorField(); a.status != http.StatusBadRequest || code != "INVALID_ARGUMENT" || field != "shown[2].id" {
		t.Fatalf("a student's decision naming marketing = %d %v", a.status, a.body)
	}
	a = w.decide(t, "", student, `{"requestId":"req-student-2","choice":"accept_all","shown":[{"id":"cookies.statistics","noticeVersion":"2024-01"}]}`)
	if a.status != http.StatusOK {
		t.Fatalf("student accept all = %d %v", a.status, a.body)
	}
	if w.allowed(t, "stud-1", "marketing", &consentv1.SubjectAttributes{Role: "student"}) {
		t.Fatal("Check allows marketing for a student")
	}
	if !w.allowed(t, "stud-1", "cookies.statistics", &consentv1.SubjectAttributes{Role: "student"}) {
		t.Fatal("the student's statistics consent was not recorded")
	}

	teacher := map[string]string{"Authorization": "Bearer " + w.subjectToken(t, "teach-1", "teacher")}
	if a := w.decide(t, "", teacher, decision("req-teacher-1", "accept_all")); a.status != http.StatusOK {
		t.Fatalf("teacher accept all = %d %v", a.status, a.body)
	}
	if !w.allowed(t, "teach-1", "marketing", &consentv1.SubjectAttributes{Role: "teacher"}) {
		t.Fatal("a teacher's accept all does not allow marketing")
	}
}

// TestGPCRefusesOptedInPurposes: a decision made with Sec-GPC: 1 records
// the signal on every record and refuses every purpose that opts in to it
// (Clio's marketing), even on accept all; the others are as chosen.
func TestGPCRefusesOptedInPurposes(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})
	v := newVisitor()
	b := w.call(t, http.MethodGet, "/v1/tenants/clio/banner", map[string]string{"Origin": clioSite, "Lethe-Visitor": v, "Sec-GPC": "1"}, "")
	if b.body["gpc"] != true {
		t.Fatalf("banner gpc = %v", b.body["gpc"])
	}
	a := w.decide(t, v, map[string]string{"Sec-GPC": "1"}, decision("req-gpc-1", "accept_all"))
	if a.status != http.StatusOK {
		t.Fatalf("decision = %d %v", a.status, a.body)
	}
	if got := a.body["choices"].(map[string]any)["purposes"].(map[string]any); got["marketing"] != false || got["cookies.statistics"] != true {
		t.Fatalf("choices = %v", got)
	}
	d := w.check(t, "clio", "visitor:"+v, "marketing", nil)
	if d.Allowed || d.Reason != consentv1.Reason_REASON_DENIED {
		t.Fatalf("Check(marketing) = %v %s, want a recorded refusal", d.Allowed, d.Reason)
	}
	for _, r := range w.history(t, "visitor:"+v) {
		if !r.Evidence.Gpc {
			t.Errorf("record %s does not note the GPC signal", r.PurposeId)
		}
	}
}

// TestNoticeChangeAsksAgain: Art. 7(1) and Art. 4(11) — consent is to the
// notice shown. Once a purpose's notice changes, the banner asks again
// and shows the new version, and a decision naming the old one is 409
// NOTICE_CHANGED with nothing recorded.
func TestNoticeChangeAsksAgain(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})
	v := newVisitor()
	if a := w.decide(t, v, nil, decision("req-notice-1", "accept_all")); a.status != http.StatusOK || a.body["ask"] != false {
		t.Fatalf("decision = %d %v", a.status, a.body)
	}
	w.clock.Advance(time.Hour)
	w.purpose(t, "clio", &consentv1.Purpose{PurposeId: "marketing", Name: "Marketing", DirectMarketing: true, GpcOptOut: true,
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DefaultLifetime: durationpb.New(730 * 24 * time.Hour),
		Eligibility:    &consentv1.Eligibility{ExcludedRoles: []string{"student"}},
		NoticeVersions: []*consentv1.NoticeVersion{notice("2024-01", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), true), notice("2026-12", w.clock.Now(), true)}})

	b := w.call(t, http.MethodGet, "/v1/tenants/clio/banner", map[string]string{"Origin": clioSite, "Lethe-Visitor": v}, "")
	if b.body["ask"] != true || b.body["purposes"].([]any)[2].(map[string]any)["noticeVersion"] != "2026-12" {
		t.Fatalf("after the change: ask %v, purposes %v", b.body["ask"], b.body["purposes"])
	}
	before := len(w.history(t, "visitor:"+v))
	a := w.decide(t, v, nil, decision("req-notice-2", "accept_all"))
	if code, _ := a.errorField(); a.status != http.StatusConflict || code != "NOTICE_CHANGED" {
		t.Fatalf("stale decision = %d %v", a.status, a.body)
	}
	if after := len(w.history(t, "visitor:"+v)); after != before {
		t.Fatalf("a refused decision recorded %d records", after-before)
	}
	fresh := strings.Replace(decision("req-notice-3", "accept_all"), `"marketing","noticeVersion":"2024-01"`, `"marketing","noticeVersion":"2026-12"`, 1)
	if a := w.decide(t, v, nil, fresh); a.status != http.StatusOK || a.body["ask"] != false {
		t.Fatalf("decision on the new notice = %d %v", a.status, a.body)
	}
}

// TestForeignOriginIsRefused: CORS admits the tenant's origins only: a
// foreign page's decision is 403 without CORS headers and records
// nothing, its preflight gets no CORS headers, and an allowed page's
// preflight gets them.
func TestForeignOriginIsRefused(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})
	v := newVisitor()
	a := w.call(t, http.MethodPost, "/v1/tenants/clio/decisions", map[string]string{"Origin": "https://evil.example", "Lethe-Visitor": v},
		decision("req-foreign-1", "accept_all"))
	if code, _ := a.errorField(); a.status != http.StatusForbidden || code != "FORBIDDEN_ORIGIN" || a.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign decision = %d %v %v", a.status, a.body, a.header)
	}
	// Without an Origin (not a browser page), only the banner may be read.
	if a := w.call(t, http.MethodPost, "/v1/tenants/clio/decisions", map[string]string{"Lethe-Visitor": v}, decision("req-foreign-2", "accept_all")); a.status != http.StatusForbidden {
		t.Fatalf("decision without Origin = %d", a.status)
	}
	if n := len(w.history(t, "visitor:"+v)); n != 0 {
		t.Fatalf("refused decisions recorded %d records", n)
	}
	pre := map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,lethe-visitor"}
	if a := w.call(t, http.MethodOptions, "/v1/tenants/clio/decisions", pre, ""); a.header.Get("Access-Control-Allow-Origin") != "" ||
		a.header.Get("Access-Control-Allow-Methods") != "" || a.status < 400 {
		t.Fatalf("foreign preflight = %d %v", a.status, a.header)
	}
	pre["Origin"] = demoPage
	a = w.call(t, http.MethodOptions, "/v1/tenants/clio/decisions", pre, "")
	if a.status != http.StatusNoContent || a.header.Get("Access-Control-Allow-Origin") != demoPage || a.header.Get("Access-Control-Max-Age") != "600" ||
		!strings.Contains(a.header.Get("Access-Control-Allow-Headers"), "Lethe-Visitor") || a.header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("allowed preflight = %d %v", a.status, a.header)
	}
	// An unknown tenant answers as a tenant without web settings does.
	for _, tenant := range []string{"no-such-tenant", "other"} {
		if tenant == "other" {
			w.tenant(t, "other")
		}
		a := w.call(t, http.MethodGet, "/v1/tenants/"+tenant+"/banner", nil, "")
		if code, _ := a.errorField(); a.status != http.StatusNotFound || code != "NOT_FOUND" || a.body["error"].(map[string]any)["message"] != "no consent endpoint for this tenant" {
			t.Fatalf("%s: %d %v", tenant, a.status, a.body)
		}
	}
}

// TestBadInputNamesTheFieldAndRecordsNothing: every refusal is 400 naming
// the field (or 413 for a body over 8 KiB), and nothing is recorded.
func TestBadInputNamesTheFieldAndRecordsNothing(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})
	v := newVisitor()
	tests := []struct {
		name, visitor, body, field string
	}{
		{"visitor id too short", "abc", decision("req-bad-1", "accept_all"), "Lethe-Visitor"},
		{"visitor id with a dot", strings.Repeat("a", 21) + ".", decision("req-bad-2", "accept_all"), "Lethe-Visitor"},
		{"not JSON", v, `{"requestId":`, ""},
		{"choice as a number", v, `{"requestId":"req-bad-3","choice":1,"shown":[]}`, "choice"},
		{"unknown field", v, `{"requestId":"req-bad-4","choice":"accept_all","shown":[{"id":"marketing","noticeVersion":"2024-01"}],"extra":true}`, "extra"},
		{"no request id", v, strings.Replace(decision("x", "accept_all"), `"requestId":"x"`, `"requestId":""`, 1), "requestId"},
		{"unknown choice", v, decision("req-bad-5", "accept_most"), "choice"},
		{"unknown purpose", v, strings.Replace(decision("req-bad-6", "accept_all"), `"id":"marketing"`, `"id":"no.such.purpose"`, 1), "shown[2].id"},
		{"selected not shown", v, strings.Replace(decision("req-bad-7", "accept_selected", "marketing"), `,{"id":"marketing","noticeVersion":"2024-01"}`, "", 1), "selected[0]"},
		{"selected on accept all", v, decision("req-bad-8", "accept_all", "marketing"), "selected"},
		{"nothing shown", v, `{"requestId":"req-bad-9","choice":"reject_all","shown":[]}`, "shown"},
		{"notice version too long", v, strings.Replace(decision("req-bad-10", "accept_all"), `"2024-01"}]`, `"`+strings.Repeat("9", 65)+`"}]`, 1), "shown[2].noticeVersion"},
	}
	for _, tc := range tests {
		a := w.decide(t, tc.visitor, nil, tc.body)
		if code, field := a.errorField(); a.status != http.StatusBadRequest || code != "INVALID_ARGUMENT" || field != tc.field {
			t.Errorf("%s: %d %v, want 400 naming %q", tc.name, a.status, a.body, tc.field)
		}
	}
	big := `{"requestId":"req-big-1","choice":"accept_all","shown":[{"id":"marketing","noticeVersion":"` + strings.Repeat("x", 9<<10) + `"}]}`
	if a := w.decide(t, v, nil, big); a.status != http.StatusRequestEntityTooLarge {
		t.Errorf("body over 8 KiB = %d %v", a.status, a.body)
	}
	if n := len(w.history(t, "visitor:"+v)); n != 0 {
		t.Fatalf("refused decisions recorded %d records", n)
	}
}

// TestDecisionReplay: a decision is idempotent under its requestId, per
// visitor: a replay answers the same and records nothing more, the same
// id with another body is 400 naming requestId, and another visitor may
// use the same id.
func TestDecisionReplay(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})
	v := newVisitor()
	first := w.decide(t, v, nil, decision("req-replay-1", "accept_selected", "cookies.statistics"))
	w.clock.Advance(time.Minute)
	again := w.decide(t, v, nil, decision("req-replay-1", "accept_selected", "cookies.statistics"))
	if first.status != http.StatusOK || again.status != http.StatusOK || !bytes.Equal(mustJSON(t, first.body), mustJSON(t, again.body)) {
		t.Fatalf("replay = %d %v, first %d %v", again.status, again.body, first.status, first.body)
	}
	if n := len(w.history(t, "visitor:"+v)); n != 2 {
		t.Fatalf("records after a replay = %d, want 2", n)
	}
	a := w.decide(t, v, nil, decision("req-replay-1", "reject_all"))
	if code, field := a.errorField(); a.status != http.StatusBadRequest || code != "INVALID_ARGUMENT" || field != "requestId" {
		t.Fatalf("same id, another body = %d %v", a.status, a.body)
	}
	other := newVisitor()
	if a := w.decide(t, other, nil, decision("req-replay-1", "reject_all")); a.status != http.StatusOK {
		t.Fatalf("another visitor's same id = %d %v", a.status, a.body)
	}
	if w.allowed(t, "visitor:"+other, "cookies.statistics", nil) || !w.allowed(t, "visitor:"+v, "cookies.statistics", nil) {
		t.Fatal("two visitors' decisions under one id were mixed")
	}
}

// TestRateLimits: a visitor's decisions and an address's requests are
// bounded; the refusal is 429 with Retry-After and records nothing, and
// the bucket refills with the clock (no sleeping: the service's clock is
// the fixture's fake).
func TestRateLimits(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{DecisionsPerMinute: 2, RequestsPerMinute: 1000})
	v := newVisitor()
	for i := range 2 {
		if a := w.decide(t, v, nil, decision(fmt.Sprint("req-rate-", i), "accept_all")); a.status != http.StatusOK {
			t.Fatalf("decision %d = %d %v", i, a.status, a.body)
		}
	}
	a := w.decide(t, v, nil, decision("req-rate-2", "reject_all"))
	// The page can read the answer: CORS headers come with the 429.
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") != "30" || a.header.Get("Access-Control-Allow-Origin") != clioSite {
		t.Fatalf("third decision in a minute = %d, Retry-After %q", a.status, a.header.Get("Retry-After"))
	}
	if !w.allowed(t, "visitor:"+v, "marketing", nil) {
		t.Fatal("a refused decision was recorded")
	}
	// Another visitor has a bucket of its own.
	if a := w.decide(t, newVisitor(), nil, decision("req-rate-3", "accept_all")); a.status != http.StatusOK {
		t.Fatalf("another visitor = %d", a.status)
	}
	w.clock.Advance(30 * time.Second)
	if a := w.decide(t, v, nil, decision("req-rate-4", "reject_all")); a.status != http.StatusOK {
		t.Fatalf("after 30 s = %d %v", a.status, a.body)
	}

	w2 := startWeb(t, consent.PublicOptions{RequestsPerMinute: 3})
	for i := range 3 {
		if a := w2.call(t, http.MethodGet, "/v1/tenants/clio/banner", nil, ""); a.status != http.StatusOK {
			t.Fatalf("request %d = %d", i, a.status)
		}
	}
	if a := w2.call(t, http.MethodGet, "/v1/tenants/clio/banner", nil, ""); a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") != "20" {
		t.Fatalf("fourth request from one address = %d, Retry-After %q", a.status, a.header.Get("Retry-After"))
	}
}

// TestSubjectTokenRefusals: a token that is expired, for another tenant,
// signed by an unknown key or not by the key it names, or too long-lived
// is 401 saying why, and records nothing.
func TestSubjectTokenRefusals(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})
	now := w.clock.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"sub": "ada", "aud": "lethe:clio", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
		mod(c)
		return c
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name, token, why string
	}{
		{"expired", w.token(t, claims(func(c map[string]any) {
			c["iat"] = now.Add(-20 * time.Minute).Unix()
			c["exp"] = now.Add(-10 * time.Minute).Unix()
		}), "clio-1", w.key), "expired"},
		{"another tenant's", w.token(t, claims(func(c map[string]any) { c["aud"] = "lethe:cleura" }), "clio-1", w.key), `aud does not include "lethe:clio"`},
		{"unknown key", w.token(t, claims(func(map[string]any) {}), "clio-9", w.key), `unknown key id "clio-9"`},
		{"bad signature", w.token(t, claims(func(map[string]any) {}), "clio-1", stranger), "does not verify"},
		{"lives too long", w.token(t, claims(func(c map[string]any) { c["exp"] = now.Add(time.Hour).Unix() }), "clio-1", w.key), "more than 15m0s after iat"},
		{"no iat", w.token(t, claims(func(c map[string]any) { delete(c, "iat") }), "clio-1", w.key), "no iat"},
		{"a visitor's id", w.token(t, claims(func(c map[string]any) { c["sub"] = "visitor:" + newVisitor() }), "clio-1", w.key), "anonymous visitors"},
		{"not a JWT", "abc", "not a signed JWT"},
	}
	for _, tc := range tests {
		a := w.decide(t, "", map[string]string{"Authorization": "Bearer " + tc.token}, decision("req-token-1", "accept_all"))
		e, _ := a.body["error"].(map[string]any)
		if code, _ := a.errorField(); a.status != http.StatusUnauthorized || code != "UNAUTHENTICATED" || !strings.Contains(fmt.Sprint(e["message"]), tc.why) {
			t.Errorf("%s: %d %v, want 401 saying %q", tc.name, a.status, a.body, tc.why)
		}
	}
	if n := len(w.history(t, "ada")); n != 0 {
		t.Fatalf("refused tokens recorded %d records", n)
	}
}

// TestLinkKeepsVisitorHistory: on login, an anonymous visitor's decisions
// become the subject's as new records naming the visitor's, for the
// purposes the subject has not decided since; the visitor's history is
// untouched, and linking again links nothing.
func TestLinkKeepsVisitorHistory(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})
	v := newVisitor()
	w.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_DENY)
	w.clock.Advance(time.Minute)
	if a := w.decide(t, v, nil, decision("req-link-1", "accept_all")); a.status != http.StatusOK {
		t.Fatalf("visitor decision = %d %v", a.status, a.body)
	}
	w.clock.Advance(time.Minute)
	w.record(t, "clio", "ada", "cookies.statistics", consentv1.ConsentAction_CONSENT_ACTION_DENY)
	w.clock.Advance(time.Minute)
	visitorBefore := w.history(t, "visitor:"+v)

	token := map[string]string{"Origin": clioSite, "Lethe-Visitor": v, "Authorization": "Bearer " + w.subjectToken(t, "ada", "teacher")}
	a := w.call(t, http.MethodPost, "/v1/tenants/clio/link", token, "")
	if a.status != http.StatusOK || fmt.Sprint(a.body["linked"]) != "[marketing]" {
		t.Fatalf("link = %d %v, want marketing only (ada refused statistics herself since)", a.status, a.body)
	}
	if !w.allowed(t, "ada", "marketing", &consentv1.SubjectAttributes{Role: "teacher"}) || w.allowed(t, "ada", "cookies.statistics", nil) {
		t.Fatal("after linking, Check does not follow the newer decisions")
	}
	var visitorMarketing *consentv1.ConsentRecord
	for _, r := range visitorBefore {
		if r.PurposeId == "marketing" {
			visitorMarketing = r
		}
	}
	ada := w.history(t, "ada")
	linked := ada[len(ada)-1]
	if linked.LinkedFrom.GetRecordId() != visitorMarketing.RecordId || linked.LinkedFrom.GetSubjectId() != "visitor:"+v ||
		linked.Action != consentv1.ConsentAction_CONSENT_ACTION_GRANT || linked.Method != consentv1.CollectionMethod_COLLECTION_METHOD_BANNER ||
		linked.Evidence.GetOrigin() != clioSite || !linked.GivenAt.AsTime().Equal(visitorMarketing.GivenAt.AsTime()) || linked.NoticeVersion != "2024-01" {
		t.Fatalf("linked record = %v, visitor's %v", linked, visitorMarketing)
	}
	if after := w.history(t, "visitor:"+v); !bytes.Equal(mustJSON(t, after), mustJSON(t, visitorBefore)) {
		t.Fatal("linking changed the visitor's history")
	}
	if a := w.call(t, http.MethodPost, "/v1/tenants/clio/link", token, ""); a.status != http.StatusOK || fmt.Sprint(a.body["linked"]) != "[]" {
		t.Fatalf("second link = %d %v", a.status, a.body)
	}
	if n := len(w.history(t, "ada")); n != len(ada) {
		t.Fatalf("a second link recorded %d records", n-len(ada))
	}
	delete(token, "Authorization")
	if a := w.call(t, http.MethodPost, "/v1/tenants/clio/link", token, ""); a.status != http.StatusUnauthorized {
		t.Fatalf("link without a token = %d", a.status)
	}
}

// TestWebSettingsAreValidated: PutWebSettings names every field it
// refuses, and a tenant without settings has none to get.
func TestWebSettingsAreValidated(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})
	w.tenant(t, "other")
	if _, err := w.consent.GetWebSettings(w.ctx, &consentv1.GetWebSettingsRequest{TenantId: "other"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get settings of a tenant without = %v", err)
	}
	got, err := w.consent.GetWebSettings(w.ctx, &consentv1.GetWebSettingsRequest{TenantId: "clio"})
	if err != nil || got.Settings.DefaultLanguage != "da" {
		t.Fatalf("get = %v, %v", got, err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p384PEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	tests := []struct {
		name  string
		edit  func(*consentv1.WebSettings)
		field string
	}{
		{"http origin of a site", func(s *consentv1.WebSettings) { s.AllowedOrigins[0] = "http://www.clio.com" }, "settings.allowed_origins[0]"},
		{"origin with a path", func(s *consentv1.WebSettings) { s.AllowedOrigins[0] = "https://www.clio.com/da" }, "settings.allowed_origins[0]"},
		{"upper-case origin", func(s *consentv1.WebSettings) { s.AllowedOrigins[1] = "https://WWW.clio.com" }, "settings.allowed_origins[1]"},
		{"wildcard origin", func(s *consentv1.WebSettings) { s.AllowedOrigins[0] = "https://*.clio.com" }, "settings.allowed_origins[0]"},
		{"private key", func(s *consentv1.WebSettings) {
			s.SubjectTokenKeys[0].PublicKeyPem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		}, "settings.subject_token_keys[0].public_key_pem"},
		{"a P-384 key", func(s *consentv1.WebSettings) { s.SubjectTokenKeys[0].PublicKeyPem = p384PEM }, "settings.subject_token_keys[0].public_key_pem"},
		{"key id twice", func(s *consentv1.WebSettings) {
			s.SubjectTokenKeys = append(s.SubjectTokenKeys, s.SubjectTokenKeys[0])
		}, "settings.subject_token_keys[1].key_id"},
		{"default language without texts", func(s *consentv1.WebSettings) { s.DefaultLanguage = "sv" }, "settings.default_language"},
		{"unknown purpose shown", func(s *consentv1.WebSettings) { s.ShownPurposeIds = append(s.ShownPurposeIds, "no.such.purpose") }, "settings.shown_purpose_ids[3]"},
		{"a shown purpose without its text", func(s *consentv1.WebSettings) { delete(s.Texts["en"].Purposes, "marketing") }, `settings.texts["en"].purposes["marketing"]`},
		{"http policy address", func(s *consentv1.WebSettings) { s.Texts["da"].PolicyUrl = "http://www.clio.com/privacy" }, `settings.texts["da"].policy_url`},
		{"no origins", func(s *consentv1.WebSettings) { s.AllowedOrigins = nil }, "settings.allowed_origins"},
	}
	for _, tc := range tests {
		s := proto.Clone(got.Settings).(*consentv1.WebSettings)
		tc.edit(s)
		_, err := w.consent.PutWebSettings(w.ctx, &consentv1.PutWebSettingsRequest{RequestId: w.id(), TenantId: "clio", Settings: s})
		fields := []string{}
		for _, v := range apierror.Violations(err) {
			fields = append(fields, v.Field)
		}
		if status.Code(err) != codes.InvalidArgument || !slices.Contains(fields, tc.field) {
			t.Errorf("%s: %v (fields %v), want InvalidArgument naming %s", tc.name, err, fields, tc.field)
		}
	}
	// Nothing of the refused settings took effect.
	if a := w.call(t, http.MethodGet, "/v1/tenants/clio/banner", map[string]string{"Origin": clioSite}, ""); a.status != http.StatusOK {
		t.Fatalf("banner after refused settings = %d %v", a.status, a.body)
	}
}

// TestForwardedForOnlyFromTrustedProxies: the client's address (rate
// limits, the evidence fingerprint) is the connection's, unless the
// connection comes from a configured proxy: then X-Forwarded-For's last
// address that is not itself a proxy. A forged header from anyone else
// changes nothing.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	fingerprint := func(w *webFixture, header map[string]string) []byte {
		t.Helper()
		v := newVisitor()
		if a := w.decide(t, v, header, decision("req-xff-1", "reject_all")); a.status != http.StatusOK {
			t.Fatalf("decision = %d %v", a.status, a.body)
		}
		return w.history(t, "visitor:"+v)[0].Evidence.Fingerprint
	}
	direct := startWeb(t, consent.PublicOptions{RequestsPerMinute: 3})
	plain := fingerprint(direct, nil)
	if forged := fingerprint(direct, map[string]string{"X-Forwarded-For": "203.0.113.9"}); !bytes.Equal(forged, plain) {
		t.Error("an untrusted X-Forwarded-For changed the evidence")
	}
	// The third request from 127.0.0.1 spends its bucket whatever the
	// header claims.
	fingerprint(direct, map[string]string{"X-Forwarded-For": "203.0.113.10"})
	if a := direct.decide(t, newVisitor(), map[string]string{"X-Forwarded-For": "203.0.113.11"}, decision("req-xff-2", "reject_all")); a.status != http.StatusTooManyRequests {
		t.Fatalf("a forged address escaped the rate limit: %d", a.status)
	}

	behind := startWeb(t, consent.PublicOptions{RequestsPerMinute: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	a := fingerprint(behind, map[string]string{"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
	b := fingerprint(behind, map[string]string{"X-Forwarded-For": "203.0.113.10, 127.0.0.2"})
	if bytes.Equal(a, b) {
		t.Error("two browsers behind the proxy have one fingerprint")
	}
	// Each browser has a bucket of its own (one request a minute here).
	if r := behind.decide(t, newVisitor(), map[string]string{"X-Forwarded-For": "203.0.113.9"}, decision("req-xff-3", "reject_all")); r.status != http.StatusTooManyRequests {
		t.Fatalf("203.0.113.9's second request = %d, want 429", r.status)
	}
}

// TestExpiredConsentAsksAgain: a grant with a lifetime (the test's
// statistics cookies: 365 days; Clio's policy §2.4: cookies last up to 730
// days) stops counting when it expires, and the banner asks again.
func TestExpiredConsentAsksAgain(t *testing.T) {
	w := startWeb(t, consent.PublicOptions{})
	v := newVisitor()
	if a := w.decide(t, v, nil, decision("req-expiry-1", "accept_all")); a.status != http.StatusOK || a.body["ask"] != false {
		t.Fatalf("decision = %d %v", a.status, a.body)
	}
	header := map[string]string{"Origin": clioSite, "Lethe-Visitor": v}
	w.clock.Advance(364 * 24 * time.Hour)
	if b := w.call(t, http.MethodGet, "/v1/tenants/clio/banner", header, ""); b.body["ask"] != false {
		t.Fatalf("before expiry: ask %v", b.body["ask"])
	}
	w.clock.Advance(2 * 24 * time.Hour)
	b := w.call(t, http.MethodGet, "/v1/tenants/clio/banner", header, "")
	got := b.body["choices"].(map[string]any)["purposes"].(map[string]any)
	if b.body["ask"] != true || got["cookies.statistics"] != false || got["marketing"] != true {
		t.Fatalf("after the statistics grant expired: ask %v, choices %v", b.body["ask"], got)
	}
}

// TestHealthAndAssets: the listener answers health, and serves the banner
// script through the Assets handler it is given (Lethe's own without one).
func TestHealthAndAssets(t *testing.T) {
	assets := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = io.WriteString(w, "/* "+r.URL.Path+" */")
	})
	w := startWeb(t, consent.PublicOptions{Assets: assets})
	for path, want := range map[string]string{"/healthz": "ok\n", "/v1/banner.js": "/* /v1/banner.js */", "/v1/assets/banner.css": "/* /v1/assets/banner.css */"} {
		resp, err := http.Get(w.base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("GET %s = %d %q, want %q", path, resp.StatusCode, body, want)
		}
	}
	// Without one, Lethe's own banner script (package web).
	bare := startWeb(t, consent.PublicOptions{})
	resp, err := http.Get(bare.base + "/v1/banner.js")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, web.Script()) {
		t.Errorf("banner.js without assets = %d, %d bytes; want Lethe's script", resp.StatusCode, len(body))
	}
	if a := bare.call(t, http.MethodGet, "/v1/operator/anything", nil, ""); a.status != http.StatusNotFound {
		t.Errorf("an unknown route = %d", a.status)
	}
}
