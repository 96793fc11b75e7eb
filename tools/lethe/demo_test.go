package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// The demo server points the pages at the public endpoint lethe dev
// really listens on, and serves everything else as it is.
func TestDemoPagesPointAtThePublicEndpoint(t *testing.T) {
	get := func(h http.Handler, path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		body, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(body)
	}
	moved := demoHandler("../../examples/web", "http://127.0.0.1:17411")
	for _, path := range []string{"/clio/", "/clio/index.html"} {
		code, body := get(moved, path)
		if code != http.StatusOK || !strings.Contains(body, `src="http://127.0.0.1:17411/v1/banner.js"`) || strings.Contains(body, demoPublicBase) {
			t.Errorf("GET %s: %d, the page does not name the endpoint's address:\n%s", path, code, body)
		}
	}
	script, err := os.ReadFile("../../examples/web/clio/statistics.js")
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(moved, "/clio/statistics.js"); code != http.StatusOK || body != string(script) {
		t.Errorf("GET /clio/statistics.js: %d, not the file as it is", code)
	}
	if code, _ := get(moved, "/clio/../../tenants/clio.yaml"); code == http.StatusOK {
		t.Error("the demo server serves a file outside its folder")
	}
	if code, _ := get(moved, "/nothing.html"); code != http.StatusNotFound {
		t.Errorf("GET /nothing.html: %d, want 404", code)
	}
	// On the README's addresses the pages are served as they are.
	page, err := os.ReadFile("../../examples/web/clio/index.html")
	if err != nil {
		t.Fatal(err)
	}
	if _, body := get(demoHandler("../../examples/web", demoPublicBase), "/clio/"); body != string(page) {
		t.Error("on the default address the page is not served as it is")
	}
}

func TestDemoRefusesAnythingButALoopbackFolder(t *testing.T) {
	if _, err := newDemoSite("../../examples/web", "0.0.0.0:0", "127.0.0.1:7411"); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("a demo on 0.0.0.0: %v, want a refusal naming loopback", err)
	}
	if _, err := newDemoSite("../../examples/web/clio/index.html", "127.0.0.1:0", "127.0.0.1:7411"); err == nil || !strings.Contains(err.Error(), "not a folder") {
		t.Errorf("a demo of a file: %v, want a refusal", err)
	}
}
