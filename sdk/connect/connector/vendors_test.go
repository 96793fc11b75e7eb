package connector_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/connect/connector"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// Each test below is a local HTTPS server that implements one vendor's
// documented request and answer shapes (cited in the builtin file), and
// checks that it receives exactly the identifier form the vendor needs
// and no other identifier.

const (
	erased     = eventsv1.OutcomeKind_OUTCOME_KIND_ERASED
	notFound   = eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND
	failed     = eventsv1.OutcomeKind_OUTCOME_KIND_FAILED
	applied    = eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED
	notApplies = eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE
)

// sha256Hex is the form Meta and LinkedIn match on, computed here
// independently of the package: SHA-256, hex, of the address trimmed and
// lower-cased.
func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// decodeStrict decodes a JSON body into v, refusing unknown fields.
func decodeStrict(r *http.Request, v any) ([]byte, error) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return raw, dec.Decode(v)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func handler(t *testing.T, name string, cfg connector.Config) subscriber.Handler {
	t.Helper()
	d, err := connector.Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	h, err := d.Handler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// The User Deletion API takes the user id in a userDeletionRequest
// resource; a 5xx is retried and a wrong token never erases.
func TestGoogleAnalyticsUserDeletion(t *testing.T) {
	var unavailable atomic.Int32
	unavailable.Store(1)
	v := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Host != "www.googleapis.com" || r.URL.Path != "/analytics/v3/userDeletion/userDeletionRequests:upsert" {
			writeJSON(w, 404, `{"error": {"code": 404, "message": "Not Found"}}`)
			return
		}
		if bearer(r) != "ga-token" {
			writeJSON(w, 401, `{"error": {"code": 401, "message": "Request had invalid authentication credentials."}}`)
			return
		}
		if unavailable.Add(-1) >= 0 {
			writeJSON(w, 503, `{"error": {"code": 503, "message": "The service is currently unavailable."}}`)
			return
		}
		var req struct {
			Kind string `json:"kind"`
			ID   struct {
				Type   string `json:"type"`
				UserID string `json:"userId"`
			} `json:"id"`
			PropertyID string `json:"propertyId"`
		}
		raw, err := decodeStrict(r, &req)
		if err != nil || req.Kind != "analytics#userDeletionRequest" || req.ID.Type != "USER_ID" || req.ID.UserID != "acct-42" || req.PropertyID != "123456789" {
			t.Errorf("upsert body %s (%v)", raw, err)
			writeJSON(w, 400, `{"error": {"code": 400, "message": "Invalid value"}}`)
			return
		}
		if bytes.Contains(raw, []byte("ada")) {
			t.Errorf("the e-mail address reached Google Analytics: %s", raw)
		}
		writeJSON(w, 200, `{"kind": "analytics#userDeletionRequest", "id": {"type": "USER_ID", "userId": "acct-42"},
			"propertyId": "123456789", "deletionRequestTime": "2026-12-06T20:00:00.000Z"}`)
	})
	ids := fixedIdentifiers{email("ada@example.com"), account("acct-42")}

	t.Run("erased after a 503", func(t *testing.T) {
		h := handler(t, "google-analytics", connector.Config{
			Params: map[string]string{"property_id": "123456789"}, SecretsDir: secrets(t, map[string]string{"access-token": "ga-token"}), HTTPClient: v.client,
		})
		r := newRig(t, h, ids)
		wantOutcome(t, r.erase(t, "ga-1"), erased)
		if n := r.deliveries("ga-1"); n != 1 {
			t.Errorf("%d deliveries, want 1: the 503 is retried in process", n)
		}
		if got := len(v.received()); got != 2 {
			t.Errorf("%d requests, want 2 (503, then 200)", got)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		h := handler(t, "google-analytics", connector.Config{
			Params: map[string]string{"property_id": "123456789"}, SecretsDir: secrets(t, map[string]string{"access-token": "stale"}), HTTPClient: v.client,
		})
		r := newRig(t, h, ids)
		o := r.erase(t, "ga-2")
		wantOutcome(t, o, failed)
		if !strings.Contains(o.GetReason(), "HTTP 401") {
			t.Errorf("reason %q does not say the vendor refused the token", o.GetReason())
		}
	})
	t.Run("no account id", func(t *testing.T) {
		h := handler(t, "google-analytics", connector.Config{
			Params: map[string]string{"property_id": "123456789"}, SecretsDir: secrets(t, map[string]string{"access-token": "ga-token"}), HTTPClient: v.client,
		})
		before := len(v.received())
		r := newRig(t, h, fixedIdentifiers{email("ada@example.com")})
		o := r.erase(t, "ga-3")
		wantOutcome(t, o, failed)
		if !strings.Contains(o.GetReason(), "no account_id identifier") {
			t.Errorf("reason %q", o.GetReason())
		}
		if len(v.received()) != before {
			t.Error("the vendor was called without the identifier it needs")
		}
	})
}

// Campaign Monitor deletes by list and plain e-mail address, with the API
// key as the Basic user name; Code 203 means already removed; 429's
// Retry-After is waited for.
func TestCampaignMonitorDeleteSubscriber(t *testing.T) {
	const list = "a58ee1d3039b8bec838e6d1482a8a965"
	var (
		mu          sync.Mutex
		subscribers = map[string]bool{"ada+news@example.com": true}
		times       []time.Time
	)
	v := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if user, pass, ok := r.BasicAuth(); !ok || user != "cm-key" || pass != "" {
			writeJSON(w, 401, `{"Code": 50, "Message": "Must supply a valid HTTP Basic Authorization header"}`)
			return
		}
		if r.Method != http.MethodDelete || r.Host != "api.createsend.com" || r.URL.Path != "/api/v3.3/subscribers/"+list+".json" {
			writeJSON(w, 404, `{"Code": 404, "Message": "Not found"}`)
			return
		}
		if len(times) == 1 {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, 429, `{"Code": 429, "Message": "Rate limit exceeded"}`)
			return
		}
		// The query is percent-encoded: a "+" sent raw would be a space.
		if r.URL.RawQuery != "email=ada%2Bnews%40example.com" && r.URL.RawQuery != "email=bad%40" {
			t.Errorf("query %q", r.URL.RawQuery)
		}
		addr := r.URL.Query().Get("email")
		switch {
		case !strings.Contains(addr, ".com"):
			writeJSON(w, 400, `{"Code": 1, "Message": "Invalid Email Address"}`)
		case !subscribers[addr]:
			writeJSON(w, 400, `{"Code": 203, "Message": "Subscriber not in list or has already been removed."}`)
		default:
			delete(subscribers, addr)
			w.WriteHeader(200)
		}
	})
	cfg := connector.Config{Params: map[string]string{"list_id": list}, SecretsDir: secrets(t, map[string]string{"api-key": "cm-key"}), HTTPClient: v.client}
	r := newRig(t, handler(t, "campaign-monitor", cfg), fixedIdentifiers{email("ada+news@example.com"), account("acct-42")})

	wantOutcome(t, r.erase(t, "cm-1"), erased)
	mu.Lock()
	if len(times) != 2 || times[1].Sub(times[0]) < time.Second {
		t.Errorf("requests at %v: the second must wait for Retry-After: 1", times)
	}
	mu.Unlock()
	if n := r.deliveries("cm-1"); n != 1 {
		t.Errorf("%d deliveries, want 1", n)
	}
	wantOutcome(t, r.erase(t, "cm-2"), notFound)

	bad := newRig(t, handler(t, "campaign-monitor", cfg), fixedIdentifiers{email("bad@")})
	o := bad.erase(t, "cm-3")
	wantOutcome(t, o, failed)
	if !strings.Contains(o.GetReason(), "Invalid Email Address") || strings.Contains(o.GetReason(), "bad@") {
		t.Errorf("reason %q: want the vendor's message without the address", o.GetReason())
	}
}

// Meta removes by SHA-256 of the normalised address, in a DELETE with the
// EMAIL_SHA256 schema; a throttling error is retried; a withdrawal of the
// audience's purpose removes, of another purpose does not call.
func TestMetaCustomAudienceRemoval(t *testing.T) {
	want := sha256Hex("ada@example.com")
	var throttled atomic.Bool
	v := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodDelete || r.Host != "graph.facebook.com" || r.URL.Path != "/v25.0/6123456789012/users" {
			writeJSON(w, 400, `{"error": {"message": "Unknown path components", "type": "OAuthException", "code": 2500}}`)
			return
		}
		if bearer(r) != "meta-token" {
			writeJSON(w, 400, `{"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}`)
			return
		}
		var req struct {
			Payload struct {
				Schema string   `json:"schema"`
				Data   []string `json:"data"`
			} `json:"payload"`
		}
		raw, err := decodeStrict(r, &req)
		if err != nil || req.Payload.Schema != "EMAIL_SHA256" || len(req.Payload.Data) != 1 || req.Payload.Data[0] != want {
			t.Errorf("payload %s (%v), want the one hash %s", raw, err, want)
		}
		if bytes.Contains(bytes.ToLower(raw), []byte("example")) || bytes.Contains(raw, []byte("acct-42")) {
			t.Errorf("a plain identifier reached Meta: %s", raw)
		}
		if throttled.CompareAndSwap(false, true) {
			writeJSON(w, 400, `{"error": {"message": "User request limit reached", "type": "OAuthException", "code": 17, "is_transient": true}}`)
			return
		}
		writeJSON(w, 200, `{"audience_id": "6123456789012", "session_id": "9778993", "num_received": 1, "num_invalid_entries": 0, "invalid_entry_samples": {}}`)
	})
	cfg := connector.Config{
		Params:     map[string]string{"audience_id": "6123456789012", "api_version": "v25.0", "purpose_id": "marketing"},
		SecretsDir: secrets(t, map[string]string{"access-token": "meta-token"}), HTTPClient: v.client,
	}
	// The address as a person typed it: Meta's normalisation trims and
	// lower-cases it before hashing.
	r := newRig(t, handler(t, "meta-custom-audiences", cfg), fixedIdentifiers{email("  Ada@Example.COM "), account("acct-42")},
		contract.KindErasureRequested, contract.KindConsentWithdrawn)
	wantOutcome(t, r.erase(t, "meta-1"), erased)
	if got := len(v.received()); got != 2 {
		t.Errorf("%d requests, want 2 (throttled, then removed)", got)
	}
	wantOutcome(t, r.withdraw(t, "meta-2", "marketing"), applied)
	n := len(v.received())
	wantOutcome(t, r.withdraw(t, "meta-3", "analytics"), notApplies)
	if len(v.received()) != n {
		t.Error("a withdrawal of another purpose called Meta")
	}

	// A system registered as holding only the hash gets only the hash
	// from the claim check; the connector sends it as it is.
	hashed := &commonv1.Identifier{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL, Form: commonv1.IdentifierForm_IDENTIFIER_FORM_SHA256_NORMALISED, Value: want}
	md5 := &commonv1.Identifier{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL, Form: commonv1.IdentifierForm_IDENTIFIER_FORM_MD5_LOWERCASE, Value: "0123456789abcdef0123456789abcdef"}
	rh := newRig(t, handler(t, "meta-custom-audiences", cfg), fixedIdentifiers{md5, hashed})
	wantOutcome(t, rh.erase(t, "meta-4"), erased)
}

// LinkedIn removes by SHA256_EMAIL through BATCH_CREATE with the version
// headers; a Retry-After longer than the handler waits stops every
// request until it has passed, and the task fails visibly.
func TestLinkedInSegmentUserRemoval(t *testing.T) {
	want := sha256Hex("ada@example.com")
	var limited atomic.Bool
	v := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Host != "api.linkedin.com" || r.URL.Path != "/rest/dmpSegments/7654321/users" {
			writeJSON(w, 404, `{"status": 404, "message": "Not Found"}`)
			return
		}
		if bearer(r) != "li-token" {
			writeJSON(w, 401, `{"status": 401, "serviceErrorCode": 65600, "message": "Invalid access token"}`)
			return
		}
		if r.Header.Get("LinkedIn-Version") != "202511" || r.Header.Get("X-Restli-Protocol-Version") != "2.0.0" || r.Header.Get("X-RestLi-Method") != "BATCH_CREATE" {
			t.Errorf("headers %v", r.Header)
		}
		if limited.Load() {
			w.Header().Set("Retry-After", "3600")
			writeJSON(w, 429, `{"status": 429, "message": "Resource level throttle limit for calls to this resource is reached."}`)
			return
		}
		var req struct {
			Elements []struct {
				Action  string `json:"action"`
				UserIDs []struct {
					IDType  string `json:"idType"`
					IDValue string `json:"idValue"`
				} `json:"userIds"`
			} `json:"elements"`
		}
		raw, err := decodeStrict(r, &req)
		if err != nil || len(req.Elements) != 1 || req.Elements[0].Action != "REMOVE" || len(req.Elements[0].UserIDs) != 1 ||
			req.Elements[0].UserIDs[0].IDType != "SHA256_EMAIL" || req.Elements[0].UserIDs[0].IDValue != want {
			t.Errorf("body %s (%v)", raw, err)
		}
		writeJSON(w, 200, `{"elements": [{"status": 201}]}`)
	})
	cfg := connector.Config{
		Params:     map[string]string{"segment_id": "7654321", "linkedin_version": "202511"},
		SecretsDir: secrets(t, map[string]string{"access-token": "li-token"}), HTTPClient: v.client,
	}
	r := newRig(t, handler(t, "linkedin-matched-audiences", cfg), fixedIdentifiers{email("ada@example.com")},
		contract.KindErasureRequested, contract.KindConsentWithdrawn)
	wantOutcome(t, r.erase(t, "li-1"), erased)
	// purpose_id is not configured: no withdrawal concerns the segment.
	wantOutcome(t, r.withdraw(t, "li-2", "marketing"), notApplies)

	limited.Store(true)
	before := len(v.received())
	o := r.erase(t, "li-3")
	wantOutcome(t, o, failed)
	if !strings.Contains(o.GetReason(), "wait until") {
		t.Errorf("reason %q", o.GetReason())
	}
	if got := len(v.received()) - before; got != 1 {
		t.Errorf("%d requests after the 429, want 1: later deliveries must honour Retry-After", got)
	}
}

// clock is a settable clock for the token cache.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Hotjar takes a bearer token from its OAuth client-credentials endpoint,
// cached for its expires_in, then a user lookup with delete_all_hits.
func TestHotjarUserLookupDeletion(t *testing.T) {
	var (
		mu      sync.Mutex
		issued  = map[string]bool{}
		grants  int
		lookups int
	)
	v := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Host != "api.hotjar.io" {
			writeJSON(w, 404, `{}`)
			return
		}
		switch r.URL.Path {
		case "/v1/oauth/token":
			if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
				writeJSON(w, 400, `{"error": "invalid_request"}`)
				return
			}
			if r.PostFormValue("grant_type") != "client_credentials" || r.PostFormValue("client_id") != "hj-id" || r.PostFormValue("client_secret") != "hj-secret" {
				writeJSON(w, 401, `{"error": "invalid_client"}`)
				return
			}
			grants++
			tok := fmt.Sprintf("hj-token-%d", grants)
			issued[tok] = true
			writeJSON(w, 200, fmt.Sprintf(`{"access_token": %q, "token_type": "Bearer", "expires_in": 3600}`, tok))
		case "/v1/organizations/998877/user-lookup":
			if !issued[bearer(r)] {
				writeJSON(w, 401, `{"message": "Unauthorized"}`)
				return
			}
			var req struct {
				Email  string `json:"data_subject_email"`
				Delete bool   `json:"delete_all_hits"`
			}
			if raw, err := decodeStrict(r, &req); err != nil || req.Email != "ada@example.com" || !req.Delete {
				t.Errorf("user-lookup body %s (%v)", raw, err)
			}
			lookups++
			writeJSON(w, 201, `{}`)
		default:
			writeJSON(w, 404, `{"message": "Not Found"}`)
		}
	})
	clk := &clock{now: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	dir := secrets(t, map[string]string{"client-id": "hj-id", "client-secret": "hj-secret"})
	cfg := connector.Config{Params: map[string]string{"organization_id": "998877"}, SecretsDir: dir, HTTPClient: v.client, Clock: clk.Now}
	r := newRig(t, handler(t, "hotjar", cfg), fixedIdentifiers{email("ada@example.com"), account("acct-42")})

	wantOutcome(t, r.erase(t, "hj-1"), erased)
	wantOutcome(t, r.erase(t, "hj-2"), erased)
	mu.Lock()
	if grants != 1 || lookups != 2 {
		t.Errorf("%d token grants and %d lookups, want 1 and 2: the token is cached", grants, lookups)
	}
	mu.Unlock()

	clk.add(time.Hour) // within 30 s of expiry: renewed
	wantOutcome(t, r.erase(t, "hj-3"), erased)
	mu.Lock()
	if grants != 2 {
		t.Errorf("%d token grants, want 2 after the token expired", grants)
	}
	// Revoked before its expiry: the 401 fetches a new token once.
	clear(issued)
	mu.Unlock()
	wantOutcome(t, r.erase(t, "hj-4"), erased)
	mu.Lock()
	if grants != 3 {
		t.Errorf("%d token grants, want 3 after the revocation", grants)
	}
	mu.Unlock()

	bad := connector.Config{
		Params: cfg.Params, HTTPClient: v.client, Clock: clk.Now,
		SecretsDir: secrets(t, map[string]string{"client-id": "hj-id", "client-secret": "wrong"}),
	}
	rb := newRig(t, handler(t, "hotjar", bad), fixedIdentifiers{email("ada@example.com")})
	o := rb.erase(t, "hj-5")
	wantOutcome(t, o, failed)
	if !strings.Contains(o.GetReason(), "token endpoint answered HTTP 401") || strings.Contains(o.GetReason(), "wrong") {
		t.Errorf("reason %q", o.GetReason())
	}
}

// An asynchronous job is polled, with the event id as idempotency key,
// until it is done; a 404 means already gone; a job that does not finish
// by the deadline is delivered again and ends failed, visibly.
func TestAsynchronousJob(t *testing.T) {
	known := sha256Hex("+442079460018")
	var (
		mu    sync.Mutex
		jobs  = map[string]string{} // idempotency key -> job id
		polls = map[string]int{}
		stuck bool
	)
	clk := &clock{now: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	v := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Host != "api.acme.example" || bearer(r) != "acme-token" {
			writeJSON(w, 401, `{"error": {"message": "unauthorised"}}`)
			return
		}
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v2/ops/erasures":
			var req struct {
				Phone       string `json:"phone_sha256"`
				Tenant      string `json:"tenant"`
				RequestedAt string `json:"requested_at"`
			}
			raw, err := decodeStrict(r, &req)
			if err != nil || req.Tenant != tenant || req.RequestedAt == "" {
				t.Errorf("body %s (%v)", raw, err)
			}
			if req.Phone != known {
				writeJSON(w, 404, `{"error": {"message": "no such subject"}}`)
				return
			}
			key := r.Header.Get("Idempotency-Key")
			if jobs[key] == "" {
				// An id that needs escaping in the poll URL.
				jobs[key] = fmt.Sprintf("job/%d?x", len(jobs)+1)
			}
			writeJSON(w, 202, fmt.Sprintf(`{"job": {"id": %q, "state": "queued"}}`, jobs[key]))
		case r.Method == http.MethodGet && strings.HasPrefix(r.URL.EscapedPath(), "/v2/ops/erasures/job%2F"):
			id := strings.TrimPrefix(r.URL.Path, "/v2/ops/erasures/")
			polls[id]++
			state := "running"
			if polls[id] >= 3 && !stuck {
				state = "done"
			}
			if stuck {
				clk.add(30 * time.Second)
			}
			writeJSON(w, 200, fmt.Sprintf(`{"job": {"id": %q, "state": %q}}`, id, state))
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL.EscapedPath())
			writeJSON(w, 404, `{}`)
		}
	})
	d, err := connector.LoadFile("testdata/acme.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := connector.Config{Params: map[string]string{"workspace": "ops"}, SecretsDir: secrets(t, map[string]string{"api-token": "acme-token"}), HTTPClient: v.client, Clock: clk.Now}
	h, err := d.Handler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	phone := func(v string) *commonv1.Identifier {
		return &commonv1.Identifier{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_PHONE, Value: v}
	}
	r := newRig(t, h, fixedIdentifiers{phone("+44 20 7946 0018"), email("ada@example.com")})
	wantOutcome(t, r.erase(t, "acme-1"), erased)
	mu.Lock()
	if jobs["acme-1"] != "job/1?x" || polls["job/1?x"] != 3 {
		t.Errorf("jobs %v, polls %v: want job/1?x polled three times", jobs, polls)
	}
	mu.Unlock()

	gone := newRig(t, h, fixedIdentifiers{phone("+1 555 0100")})
	wantOutcome(t, gone.erase(t, "acme-2"), notFound)

	// No phone number at all: this definition says not_found.
	none := newRig(t, h, fixedIdentifiers{email("ada@example.com")})
	wantOutcome(t, none.erase(t, "acme-3"), notFound)

	mu.Lock()
	stuck = true
	mu.Unlock()
	o := r.erase(t, "acme-4")
	wantOutcome(t, o, failed)
	if !strings.Contains(o.GetReason(), "did not finish within 1m0s") {
		t.Errorf("reason %q", o.GetReason())
	}
	mu.Lock()
	if jobs["acme-4"] == "" || len(jobs) != 2 {
		t.Errorf("jobs %v: the redeliveries must reuse one job through the idempotency key", jobs)
	}
	mu.Unlock()
}

// A redirect is not followed: it could carry the credentials and the
// identifier to another host. The task fails visibly instead.
func TestRedirectNotFollowed(t *testing.T) {
	var followed atomic.Bool
	v := newVendor(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "elsewhere.example" {
			followed.Store(true)
			writeJSON(w, 202, `{"job": {"id": "j-1"}}`)
			return
		}
		http.Redirect(w, r, "https://elsewhere.example/v2/ops/erasures", http.StatusTemporaryRedirect)
	})
	d, err := connector.LoadFile("testdata/acme.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h, err := d.Handler(connector.Config{Params: map[string]string{"workspace": "ops"}, SecretsDir: secrets(t, map[string]string{"api-token": "acme-token"}), HTTPClient: v.client})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, h, fixedIdentifiers{&commonv1.Identifier{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_PHONE, Value: "+442079460018"}})
	o := r.erase(t, "redirect-1")
	wantOutcome(t, o, failed)
	if !strings.Contains(o.GetReason(), "redirect") || followed.Load() {
		t.Errorf("reason %q, followed %v", o.GetReason(), followed.Load())
	}
}

// A vendor out of reach is retried and ends FAILED with a reason that
// names the host, never the URL: Campaign Monitor's carries the address.
func TestUnreachableVendorReasonHasNoIdentifier(t *testing.T) {
	v := newVendor(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	v.srv.Close()
	cfg := connector.Config{
		Params:     map[string]string{"list_id": "a58ee1d3039b8bec838e6d1482a8a965"},
		SecretsDir: secrets(t, map[string]string{"api-key": "cm-key"}), HTTPClient: v.client,
	}
	r := newRig(t, handler(t, "campaign-monitor", cfg), fixedIdentifiers{email("ada@example.com")})
	o := r.erase(t, "down-1")
	wantOutcome(t, o, failed)
	if !strings.Contains(o.GetReason(), "api.createsend.com") || strings.Contains(o.GetReason(), "ada") || strings.Contains(o.GetReason(), "example") {
		t.Errorf("reason %q: want the host and no address", o.GetReason())
	}
}
