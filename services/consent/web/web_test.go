package web

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func get(t *testing.T, method, path string, header http.Header) *http.Response {
	t.Helper()
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	// The transport would otherwise ask for gzip itself and undo it.
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func body(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServedSizeWithinBudget gzips the bytes the handler serves to a
// browser and fails above the budget; the figure goes into
// docs/benchmarks.md.
func TestServedSizeWithinBudget(t *testing.T) {
	resp := get(t, http.MethodGet, ScriptPath, http.Header{"Accept-Encoding": {"gzip, deflate, br"}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("GET %s: %s, Content-Encoding %q; want 200 gzip", ScriptPath, resp.Status, resp.Header.Get("Content-Encoding"))
	}
	served := body(t, resp)
	zr, err := gzip.NewReader(bytes.NewReader(served))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, script) {
		t.Fatal("the gzipped body is not the script")
	}
	t.Logf("banner.js: %d bytes, %d bytes gzipped as served (budget %d)", len(plain), len(served), BudgetGzip)
	if len(served) > BudgetGzip {
		t.Fatalf("banner.js is %d bytes gzipped, over the budget of %d", len(served), BudgetGzip)
	}
}

func TestServesScriptWithCachingHeaders(t *testing.T) {
	resp := get(t, http.MethodGet, ScriptPath, nil)
	b := body(t, resp)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, script) {
		t.Fatalf("GET %s: %s, %d bytes; want 200 and the script", ScriptPath, resp.Status, len(b))
	}
	want := map[string]string{
		"Content-Type":           "text/javascript; charset=utf-8",
		"Cache-Control":          stableCache,
		"Etag":                   etag,
		"X-Content-Type-Options": "nosniff",
		"Content-Encoding":       "",
		"Vary":                   "Accept-Encoding",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}

	// A revalidation with the ETag costs no body.
	resp = get(t, http.MethodGet, ScriptPath, http.Header{"If-None-Match": {`"other", ` + etag}})
	if resp.StatusCode != http.StatusNotModified || len(body(t, resp)) != 0 {
		t.Errorf("If-None-Match with the ETag: %s, want 304 without a body", resp.Status)
	}
	resp = get(t, http.MethodGet, ScriptPath, http.Header{"If-None-Match": {`"0000"`}})
	if resp.StatusCode != http.StatusOK {
		t.Errorf("If-None-Match with another ETag: %s, want 200", resp.Status)
	}
	// gzip refused by q=0 is not sent.
	resp = get(t, http.MethodGet, ScriptPath, http.Header{"Accept-Encoding": {"gzip;q=0, identity"}})
	if resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("gzip;q=0: Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}

	// The pinned address: the same bytes, cached for a year.
	resp = get(t, http.MethodGet, PinnedPath(), nil)
	if b := body(t, resp); resp.StatusCode != http.StatusOK || !bytes.Equal(b, script) || resp.Header.Get("Cache-Control") != pinnedCache {
		t.Errorf("GET %s: %s, Cache-Control %q", PinnedPath(), resp.Status, resp.Header.Get("Cache-Control"))
	}

	resp = get(t, http.MethodHead, ScriptPath, nil)
	if resp.StatusCode != http.StatusOK || len(body(t, resp)) != 0 || resp.Header.Get("Etag") != etag {
		t.Errorf("HEAD: %s", resp.Status)
	}
	for _, path := range []string{"/v1/assets/banner.0000000000000000.js", "/v1/banner.css", "/"} {
		if resp := get(t, http.MethodGet, path, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
	if resp := get(t, http.MethodPost, ScriptPath, nil); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}
}
