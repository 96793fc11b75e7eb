package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/lethe-privacy/lethe/platform/server"
)

// The demo pages (lethe dev --demo examples/web): a static folder served
// on a loopback address of its own, a second origin beside the public
// consent endpoint, as a company's website is to Lethe.

// DefaultDemoAddr is where lethe dev serves the demo pages; the example
// tenants allow it as an origin (web.origins).
const DefaultDemoAddr = "127.0.0.1:7412"

// demoPublicBase is the public endpoint's address as the demo pages write
// it; the demo server replaces it by the address lethe dev really
// listens on.
const demoPublicBase = "http://127.0.0.1:7411"

// demoSite serves a folder of demo pages. It is hosted among lethe dev's
// services and has no API of its own.
type demoSite struct {
	srv *http.Server
	lis net.Listener
}

// newDemoSite listens on addr, which must be a loopback address, and
// serves dir there, pointing its pages at the public endpoint publicAddr.
func newDemoSite(dir, addr, publicAddr string) (*demoSite, error) {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("--demo %q: not a folder", dir)
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("--demo-addr %q: lethe dev serves the demo pages in plain http on a loopback address only", addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--demo-addr: %w", err)
	}
	h := demoHandler(dir, "http://"+publicAddr)
	return &demoSite{lis: lis, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// demoHandler serves the files of dir; in HTML files, demoPublicBase
// becomes publicBase. Nothing is cached: a developer editing a page sees
// the change on reload.
func demoHandler(dir, publicBase string) http.Handler {
	files := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		name := path.Clean("/" + r.URL.Path)
		if strings.HasSuffix(r.URL.Path, "/") {
			name = path.Join(name, "index.html")
		}
		if path.Ext(name) != ".html" || publicBase == demoPublicBase || r.Method != http.MethodGet {
			files.ServeHTTP(w, r)
			return
		}
		page, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			files.ServeHTTP(w, r) // its 404, or the folder's redirect
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(bytes.ReplaceAll(page, []byte(demoPublicBase), []byte(publicBase)))
	})
}

// Addr is the address the pages are served on.
func (d *demoSite) Addr() string { return d.lis.Addr().String() }

// Register adds nothing: the demo pages are no API.
func (*demoSite) Register(*server.Server) {}

// Run serves the pages until ctx ends.
func (d *demoSite) Run(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- d.srv.Serve(d.lis) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := d.srv.Shutdown(shutdown)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// Close releases the listener if Run never served it.
func (d *demoSite) Close() error {
	if err := d.lis.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// demoPages are the folders of dir that hold a page (index.html), by
// name, for lethe dev to print.
func demoPages(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var pages []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "index.html")); e.IsDir() && err == nil {
			pages = append(pages, e.Name())
		}
	}
	return pages
}
