package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// publicAddr is the address of a lethe dev's public consent endpoint
// (docs/web-consent.md), which the tests call as the demo page does.
type publicAddr string

// demoOrigin is the demo page's origin, which the example tenants allow.
const demoOrigin = "http://127.0.0.1:7412"

// get reads path and wants 200.
func (a publicAddr) get(t *testing.T, path string) string {
	t.Helper()
	return a.do(t, http.MethodGet, path, "", "")
}

// post sends body as the demo page does, for visitor, and wants 200.
func (a publicAddr) post(t *testing.T, path, visitor, body string) string {
	t.Helper()
	return a.do(t, http.MethodPost, path, visitor, body)
}

func (a publicAddr) do(t *testing.T, method, path, visitor, body string) string {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+string(a)+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if visitor != "" {
		req.Header.Set("Lethe-Visitor", visitor)
		req.Header.Set("Origin", demoOrigin)
		req.Header.Set("Content-Type", "application/json")
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
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, data)
	}
	return string(data)
}
