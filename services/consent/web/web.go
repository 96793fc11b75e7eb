// Package web holds the consent banner script that Lethe's public consent
// endpoint serves to browsers (banner.js, embedded), and its HTTP handler.
//
// The script is served as written: it is small enough without a
// minifier (the budget, BudgetGzip, is kept by a test), and a site's
// owner or data protection officer can read exactly what runs on their
// pages, byte for byte the file in the repository.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
)

//go:embed banner.js
var script []byte

// BudgetGzip is the most the served script may weigh gzipped, in bytes:
// a banner is on the critical path of every page of a site.
const BudgetGzip = 15 * 1024

// Paths the Handler answers.
const (
	// ScriptPath is the script's stable address, for <script src>.
	ScriptPath = "/v1/banner.js"
	// AssetsPrefix holds the script under its content hash
	// (/v1/assets/banner.<hash>.js), cached for a year: a site that pins
	// this address can add Subresource Integrity (Integrity()).
	AssetsPrefix = "/v1/assets/"
)

// Cache lifetimes. The stable address is cached for a day, so a fix
// reaches every visitor within one, and revalidates by ETag after that;
// the hashed address never changes.
const (
	stableCache = "public, max-age=86400, stale-while-revalidate=604800"
	pinnedCache = "public, max-age=31536000, immutable"
)

var (
	sum     = sha256.Sum256(script)
	hash    = hex.EncodeToString(sum[:8])
	etag    = `"` + hash + `"`
	gzipped = compress(script)
)

func compress(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// Script returns the banner script as served, uncompressed.
func Script() []byte { return bytes.Clone(script) }

// PinnedPath is the script's address under its content hash.
func PinnedPath() string { return AssetsPrefix + "banner." + hash + ".js" }

// Integrity is the script's Subresource Integrity value, for a page that
// loads it from PinnedPath with integrity= and crossorigin="anonymous".
func Integrity() string {
	s := sha512.Sum384(script)
	return "sha384-" + base64.StdEncoding.EncodeToString(s[:])
}

// Handler serves the script at ScriptPath and PinnedPath: GET and HEAD,
// gzipped for a client that accepts it, with a content-hash ETag.
func Handler() http.Handler {
	return http.HandlerFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	switch r.URL.Path {
	case ScriptPath:
		h.Set("Cache-Control", stableCache)
	case PinnedPath():
		h.Set("Cache-Control", pinnedCache)
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Del("Cache-Control")
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("ETag", etag)
	h.Set("Vary", "Accept-Encoding")
	h.Set("X-Content-Type-Options", "nosniff")
	// Any site may embed it, also one that requires CORP of what it
	// loads (Cross-Origin-Embedder-Policy), and load it with integrity=.
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Access-Control-Allow-Origin", "*")
	if matchesETag(r.Header.Get("If-None-Match")) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := script
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		body = gzipped
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

// matchesETag reports whether an If-None-Match names the script's ETag
// (or is "*").
func matchesETag(header string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether an Accept-Encoding admits gzip (q=0
// refuses it).
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
