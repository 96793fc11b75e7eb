package deploy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/lethe-privacy/lethe/deploy"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/tlsconfig/tlstest"
)

// TestNATSReloadsRotatedCertificates runs a real nats-server with the
// production overlay's TLS files for clients and routes (nats/client-tls.conf,
// nats/cluster-tls.conf, their /etc/nats/tls paths moved to a temporary
// folder), replaces the mounted files as the kubelet does when cert-manager
// renews Secret nats-tls, and reloads the configuration as
// `nats-server --signal reload` (SIGHUP) does. It shows what
// deploy/README.md tells operators: the files are read at start and at a
// reload, not when they change; after a reload new client and route
// connections get the renewed certificate, with the configuration text
// unchanged; and a CA bundle is re-read too, so a CA is rotated with an
// overlap (old and new CA in ca.crt, then the new alone).
func TestNATSReloadsRotatedCertificates(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if err := os.Mkdir(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"client-tls.conf", "cluster-tls.conf"} {
		data, err := os.ReadFile(filepath.Join(deploy.Dir(), "overlays", "production", "nats", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(data, []byte("/etc/nats/tls/")) {
			t.Fatalf("%s names no file under /etc/nats/tls, where the nats-tls Secret is mounted", name)
		}
		data = bytes.ReplaceAll(data, []byte("/etc/nats/tls/"), []byte(tlsDir+"/"))
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The shape of deploy/nats/nats.conf, on free loopback ports, one node.
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(`host: 127.0.0.1
port: -1
cluster {
  name: lethe
  host: 127.0.0.1
  port: -1
  include ./cluster-tls.conf
}
include ./client-tls.conf
`), 0o600); err != nil {
		t.Fatal(err)
	}

	oldCA := tlstest.NewCA(t, "old CA")
	// install writes the Secret's three files, the key first, each
	// replaced whole (the kubelet swaps the whole folder at once).
	install := func(pair tlstest.Pair, cas ...*tlstest.CA) {
		t.Helper()
		var bundle []byte
		for _, ca := range cas {
			bundle = append(bundle, ca.PEM()...)
		}
		for _, f := range []struct {
			name string
			data []byte
		}{{"tls.key", pair.KeyPEM}, {"tls.crt", pair.CertPEM}, {"ca.crt", bundle}} {
			tmp := filepath.Join(tlsDir, f.name+".tmp")
			if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(tlsDir, f.name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	first := oldCA.Issue(t, tlstest.Leaf{Name: "nats"})
	install(first, oldCA)

	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	s := brokertest.Run(t, opts)
	clientAddr, routeAddr := s.Addr().String(), s.ClusterAddr().String()

	// presented dials addr as a client with a certificate of ca and
	// returns the serial of the certificate the server presents, or the
	// handshake's error. Clients get the server's INFO before the
	// handshake; routes start with it.
	presented := func(addr string, infoFirst bool, client *tlstest.CA, roots ...*tlstest.CA) (string, error) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if infoFirst {
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "INFO ") {
				t.Fatalf("%s: want INFO before the handshake, got %q, %v", addr, line, err)
			}
		}
		pair := client.Issue(t, tlstest.Leaf{Name: "lethe-consent"})
		cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r.Cert)
		}
		tc := tls.Client(conn, &tls.Config{ServerName: "localhost", RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err := tc.Handshake(); err != nil {
			return "", err
		}
		// With TLS 1.3 a refused client certificate shows at the first
		// read: wait for the server's first line over TLS, its PONG to a
		// client's PING or a route's INFO.
		if infoFirst {
			if _, err := tc.Write([]byte("CONNECT {\"verbose\":false,\"tls_required\":true}\r\nPING\r\n")); err != nil {
				return "", err
			}
		}
		line, err := bufio.NewReader(tc).ReadString('\n')
		if err != nil {
			return "", err
		}
		if want := map[bool]string{true: "PONG", false: "INFO "}[infoFirst]; !strings.HasPrefix(line, want) {
			t.Fatalf("%s: got %q over TLS, want %s", addr, line, want)
		}
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	expect := func(step string, want tlstest.Pair, client *tlstest.CA, roots ...*tlstest.CA) {
		t.Helper()
		for _, e := range []struct {
			what      string
			addr      string
			infoFirst bool
		}{{"client", clientAddr, true}, {"route", routeAddr, false}} {
			got, err := presented(e.addr, e.infoFirst, client, roots...)
			if err != nil {
				t.Fatalf("%s: %s connection: %v", step, e.what, err)
			}
			if got != want.Cert.SerialNumber.String() {
				t.Errorf("%s: %s connection got certificate %s, want %s", step, e.what, got, want.Cert.SerialNumber)
			}
		}
	}
	expect("at start", first, oldCA, oldCA)

	// A renewal (cert-manager, rotationPolicy Always: a new key) changes
	// the files; the server keeps the old certificate until a reload.
	renewed := oldCA.Issue(t, tlstest.Leaf{Name: "nats"})
	install(renewed, oldCA)
	expect("renewed, not reloaded", first, oldCA, oldCA)
	if err := s.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	expect("renewed and reloaded", renewed, oldCA, oldCA)

	// A new CA, with overlap: the bundle trusts both while the new
	// certificates roll out, so clients still holding old-CA certificates
	// connect.
	newCA := tlstest.NewCA(t, "new CA")
	overlap := newCA.Issue(t, tlstest.Leaf{Name: "nats"})
	install(overlap, oldCA, newCA)
	if err := s.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	expect("overlap, old client", overlap, oldCA, oldCA, newCA)
	expect("overlap, new client", overlap, newCA, newCA)

	// The old CA removed: its clients are refused.
	install(overlap, newCA)
	if err := s.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	expect("new CA only, new client", overlap, newCA, newCA)
	for _, addr := range []struct {
		addr      string
		infoFirst bool
	}{{clientAddr, true}, {routeAddr, false}} {
		if _, err := presented(addr.addr, addr.infoFirst, oldCA, newCA); err == nil {
			t.Errorf("%s: a client certificate of the removed CA is still accepted", addr.addr)
		}
	}
}
