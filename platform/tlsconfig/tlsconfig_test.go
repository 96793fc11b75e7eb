package tlsconfig_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/tlsconfig"
	"github.com/lethe-privacy/lethe/platform/tlsconfig/tlstest"
)

const (
	serverID = "spiffe://lethe.example/service/registry"
	clientID = "spiffe://lethe.example/service/dsar"
)

// logs collects what the package logs, written from handshake goroutines.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// refused returns the lines that report a refused reload.
func (l *logs) refused() []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, "not reloaded") {
			out = append(out, line)
		}
	}
	return out
}

// watch returns options that look at the files at every handshake, so that
// a handshake after a replacement is the point at which it has been read.
func watch(l *logs) tlsconfig.Options {
	return tlsconfig.Options{Interval: -1, Logger: slog.New(slog.NewTextHandler(l, nil))}
}

func loadPair(t *testing.T, p tlstest.Pair, dir, name string, opts tlsconfig.Options) (*tlsconfig.KeyPair, string, string) {
	t.Helper()
	certFile, keyFile := p.Write(t, dir, name)
	kp, err := tlsconfig.LoadKeyPair(certFile, keyFile, opts)
	if err != nil {
		t.Fatal(err)
	}
	return kp, certFile, keyFile
}

func loadPool(t *testing.T, path string, opts tlsconfig.Options, cas ...*tlstest.CA) *tlsconfig.Pool {
	t.Helper()
	tlstest.Replace(t, path, bundle(cas...))
	pool, err := tlsconfig.LoadPool(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

func bundle(cas ...*tlstest.CA) []byte {
	var b []byte
	for _, ca := range cas {
		b = append(b, ca.PEM()...)
	}
	return b
}

// outcome is what the server side of one handshake saw.
type outcome struct {
	peer *x509.Certificate // the client's certificate, if it sent one
	err  error
}

// listener is a real TLS listener that completes each handshake, sends one
// byte and hangs up, and reports what it saw.
type listener struct {
	addr     string
	outcomes chan outcome
}

func listen(t *testing.T, cfg *tls.Config) *listener {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{addr: lis.Addr().String(), outcomes: make(chan outcome, 16)}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = lis.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				conn := c.(*tls.Conn)
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				o := outcome{err: conn.Handshake()}
				if o.err == nil {
					if peers := conn.ConnectionState().PeerCertificates; len(peers) > 0 {
						o.peer = peers[0]
					}
					_, o.err = conn.Write([]byte{1})
				}
				l.outcomes <- o
			})
		}
	})
	return l
}

// handshake makes one connection as a client with cfg and returns the
// client's view (its error, or the connection's state once the server's
// byte arrived) and the server's.
func (l *listener) handshake(t *testing.T, cfg *tls.Config) (tls.ConnectionState, outcome, error) {
	t.Helper()
	var state tls.ConnectionState
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", l.addr, cfg)
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		// TLS 1.3 ends the client's handshake before the server has
		// checked its certificate: the server's byte, or its alert, comes
		// after. Reading it also takes in the session ticket.
		_, err = conn.Read(make([]byte, 1))
		state = conn.ConnectionState()
		_ = conn.Close()
	}
	select {
	case o := <-l.outcomes:
		return state, o, err
	case <-time.After(10 * time.Second):
		t.Fatal("the server never finished the handshake")
		return state, outcome{}, err
	}
}

// presented makes a handshake that must succeed and returns the
// certificate the server presented.
func (l *listener) presented(t *testing.T, cfg *tls.Config) *x509.Certificate {
	t.Helper()
	state, o, err := l.handshake(t, cfg)
	if err != nil || o.err != nil {
		t.Fatalf("handshake: client %v, server %v", err, o.err)
	}
	return state.PeerCertificates[0]
}

func client(t *testing.T, cert *tlsconfig.KeyPair, roots *tlsconfig.Pool) *tls.Config {
	t.Helper()
	cfg := tlsconfig.Client(cert, roots)
	cfg.ServerName = "localhost"
	return cfg
}

func sameCert(a, b *x509.Certificate) bool { return a != nil && b != nil && a.Equal(b) }

// TestServerCertificateRotation: the certificate replaced on disk is the
// one the next handshake presents; a replacement that does not load (half
// written, a key that does not match, expired) is read, refused, logged,
// and the last good certificate stays in force until a good one comes.
func TestServerCertificateRotation(t *testing.T) {
	ca := tlstest.NewCA(t, "lethe CA")
	dir := t.TempDir()
	var l logs
	first := ca.Issue(t, tlstest.Leaf{Name: "registry", URIs: []string{serverID}})
	kp, certFile, keyFile := loadPair(t, first, dir, "server", watch(&l))
	roots := loadPool(t, filepath.Join(dir, "ca.pem"), watch(&l), ca)
	lis := listen(t, tlsconfig.Server(kp, nil))
	cfg := client(t, nil, roots)

	if got := lis.presented(t, cfg); !sameCert(got, first.Cert) {
		t.Fatalf("presented %v, want the first certificate", got.SerialNumber)
	}
	rotated := ca.Issue(t, tlstest.Leaf{Name: "registry", URIs: []string{serverID}})
	rotated.Write(t, dir, "server")
	if got := lis.presented(t, cfg); !sameCert(got, rotated.Cert) {
		t.Fatalf("after the rotation the server presented %v, want the new %v", got.SerialNumber, rotated.Cert.SerialNumber)
	}
	if !sameCert(kp.Certificate().Leaf, rotated.Cert) {
		t.Fatal("Certificate() is not the rotated certificate")
	}

	next := ca.Issue(t, tlstest.Leaf{Name: "registry", URIs: []string{serverID}})
	for i, tc := range []struct {
		name  string
		write func()
		says  string
	}{
		{"half-written certificate", func() {
			// Written in place, as a careless copy does, and cut short.
			if err := os.WriteFile(certFile, next.CertPEM[:len(next.CertPEM)/2], 0o600); err != nil {
				t.Fatal(err)
			}
		}, "failed to find"},
		{"key that does not match", func() {
			tlstest.Pair{CertPEM: next.CertPEM, KeyPEM: ca.Issue(t, tlstest.Leaf{Name: "other"}).KeyPEM}.Write(t, dir, "server")
		}, "private key does not match"},
		{"expired certificate", func() {
			ca.Issue(t, tlstest.Leaf{Name: "registry", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}).Write(t, dir, "server")
		}, "certificate expired"},
		{"missing key", func() {
			if err := os.Remove(keyFile); err != nil {
				t.Fatal(err)
			}
		}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.write()
			if got := lis.presented(t, cfg); !sameCert(got, rotated.Cert) {
				t.Fatalf("presented %v, want the last good %v", got.SerialNumber, rotated.Cert.SerialNumber)
			}
			// The handshake read the files: the refusal is logged, once.
			refused := l.refused()
			if len(refused) != i+1 || !strings.Contains(refused[i], tc.says) {
				t.Fatalf("refused reloads logged:\n%s\nwant %d, the last saying %q", strings.Join(refused, "\n"), i+1, tc.says)
			}
			if got := lis.presented(t, cfg); !sameCert(got, rotated.Cert) || len(l.refused()) != i+1 {
				t.Fatalf("a second handshake presented %v and logged %d refusals; want the last good and no new log line until the files change", got.SerialNumber, len(l.refused()))
			}
		})
	}

	next.Write(t, dir, "server")
	if got := lis.presented(t, cfg); !sameCert(got, next.Cert) {
		t.Fatalf("after a good replacement the server presented %v, want %v", got.SerialNumber, next.Cert.SerialNumber)
	}
}

// TestLoadKeyPairRefuses: there is no last good version at load, so
// anything that does not load is an error: an expired certificate (by the
// injected clock), a key that does not match, a file missing or not PEM.
func TestLoadKeyPairRefuses(t *testing.T) {
	ca := tlstest.NewCA(t, "lethe CA")
	dir := t.TempDir()
	quiet := tlsconfig.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}

	expired := ca.Issue(t, tlstest.Leaf{Name: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour).Truncate(time.Second)})
	certFile, keyFile := expired.Write(t, dir, "expired")
	_, err := tlsconfig.LoadKeyPair(certFile, keyFile, quiet)
	if want := "certificate expired at " + expired.Cert.NotAfter.UTC().Format(time.RFC3339); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("expired certificate: %v, want %q", err, want)
	}

	current := ca.Issue(t, tlstest.Leaf{Name: "current"})
	certFile, keyFile = current.Write(t, dir, "current")
	for _, tc := range []struct {
		at time.Time
		ok bool
	}{
		{current.Cert.NotAfter.Add(-time.Second), true},
		{current.Cert.NotAfter, true},
		{current.Cert.NotAfter.Add(time.Second), false},
	} {
		opts := quiet
		opts.Now = clock.NewFake(tc.at).Now
		_, err := tlsconfig.LoadKeyPair(certFile, keyFile, opts)
		if (err == nil) != tc.ok {
			t.Errorf("loaded at %s, NotAfter %s: %v, want ok %v", tc.at, current.Cert.NotAfter, err, tc.ok)
		}
	}

	other := ca.Issue(t, tlstest.Leaf{Name: "other"})
	for name, files := range map[string][2]string{
		"key of another certificate": {certFile, writeFile(t, dir, "other.key", other.KeyPEM)},
		"missing key":                {certFile, filepath.Join(dir, "absent.key")},
		"certificate not PEM":        {writeFile(t, dir, "text.crt", []byte("not a certificate")), keyFile},
		"empty certificate":          {writeFile(t, dir, "empty.crt", nil), keyFile},
	} {
		if _, err := tlsconfig.LoadKeyPair(files[0], files[1], quiet); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	for name, data := range map[string][]byte{"not PEM": []byte("not a certificate"), "empty": nil, "a key": other.KeyPEM} {
		if _, err := tlsconfig.LoadPool(writeFile(t, dir, "pool.pem", data), quiet); err == nil {
			t.Errorf("CA bundle %s: loaded", name)
		}
	}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	tlstest.Replace(t, path, data)
	return path
}

// TestClientCARotation: the CA bundle that verifies callers is read again
// when replaced: a CA added is trusted by the next handshake, a CA taken
// out is refused by the next, even to a caller resuming a session it had
// while the CA was trusted; a bundle that does not load leaves the last
// good one in force.
func TestClientCARotation(t *testing.T) {
	ca, other := tlstest.NewCA(t, "lethe CA"), tlstest.NewCA(t, "partner CA")
	dir := t.TempDir()
	var l logs
	serverKP, _, _ := loadPair(t, ca.Issue(t, tlstest.Leaf{Name: "registry", URIs: []string{serverID}}), dir, "server", watch(&l))
	bundleFile := filepath.Join(dir, "client-ca.pem")
	clientCAs := loadPool(t, bundleFile, watch(&l), ca)
	lis := listen(t, tlsconfig.Server(serverKP, clientCAs))
	roots := loadPool(t, filepath.Join(dir, "roots.pem"), watch(&l), ca)

	ours, _, _ := loadPair(t, ca.Issue(t, tlstest.Leaf{Name: "dsar", URIs: []string{clientID}}), dir, "dsar", watch(&l))
	partner, _, _ := loadPair(t, other.Issue(t, tlstest.Leaf{Name: "partner", URIs: []string{"spiffe://partner.example/system/crm"}}), dir, "partner", watch(&l))
	partnerCfg := client(t, partner, roots)
	partnerCfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	accepted := func(cfg *tls.Config) (bool, tls.ConnectionState) {
		t.Helper()
		state, o, clientErr := lis.handshake(t, cfg)
		if (clientErr == nil) != (o.err == nil) {
			t.Fatalf("the client saw %v and the server %v", clientErr, o.err)
		}
		return o.err == nil, state
	}

	if ok, _ := accepted(client(t, ours, roots)); !ok {
		t.Fatal("a certificate of the trusted CA was refused")
	}
	if ok, _ := accepted(client(t, nil, roots)); ok {
		t.Fatal("a caller without a certificate was accepted")
	}
	if ok, _ := accepted(partnerCfg); ok {
		t.Fatal("a certificate of a CA not in the bundle was accepted")
	}

	tlstest.Replace(t, bundleFile, bundle(ca, other))
	if ok, _ := accepted(partnerCfg); !ok {
		t.Fatal("after the partner's CA was added its certificate was refused")
	}
	if ok, state := accepted(partnerCfg); !ok || !state.DidResume {
		t.Fatalf("second handshake: accepted %v, resumed %v; want a resumed session (what the removal below must not let through)", ok, state.DidResume)
	}

	tlstest.Replace(t, bundleFile, []byte("not a certificate"))
	if ok, _ := accepted(partnerCfg); !ok {
		t.Fatal("a broken bundle replaced the last good one")
	}
	if refused := l.refused(); len(refused) != 1 || !strings.Contains(refused[0], "no PEM certificate") {
		t.Fatalf("refused reloads logged:\n%s\nwant the broken bundle", strings.Join(refused, "\n"))
	}

	tlstest.Replace(t, bundleFile, bundle(ca))
	if ok, state := accepted(partnerCfg); ok {
		t.Fatalf("after the partner's CA was removed its certificate was accepted (resumed %v)", state.DidResume)
	}
	if ok, _ := accepted(client(t, ours, roots)); !ok {
		t.Fatal("after the rotation a certificate of the trusted CA was refused")
	}
}

// TestClientVerifiesTheServer: an outgoing handshake accepts a server only
// with a certificate of the trusted CAs for the name dialled, and presents
// the process's own certificate (the same pair it serves with), current at
// each handshake.
func TestClientVerifiesTheServer(t *testing.T) {
	ca, other := tlstest.NewCA(t, "lethe CA"), tlstest.NewCA(t, "someone else's CA")
	dir := t.TempDir()
	var l logs
	serverKP, _, _ := loadPair(t, ca.Issue(t, tlstest.Leaf{Name: "registry", URIs: []string{serverID}}), dir, "server", watch(&l))
	lis := listen(t, tlsconfig.Server(serverKP, loadPool(t, filepath.Join(dir, "client-ca.pem"), watch(&l), ca)))
	roots := loadPool(t, filepath.Join(dir, "roots.pem"), watch(&l), ca)
	first := ca.Issue(t, tlstest.Leaf{Name: "dsar", URIs: []string{clientID}})
	ours, _, _ := loadPair(t, first, dir, "dsar", watch(&l))

	mutual := client(t, ours, roots)
	_, o, err := lis.handshake(t, mutual)
	if err != nil || o.err != nil {
		t.Fatalf("handshake: client %v, server %v", err, o.err)
	}
	if !sameCert(o.peer, first.Cert) || len(o.peer.URIs) != 1 || o.peer.URIs[0].String() != clientID {
		t.Fatalf("the server saw the client as %v, want its certificate with %s", o.peer, clientID)
	}
	byAddress := tlsconfig.Client(ours, roots)
	byAddress.ServerName = "127.0.0.1"
	if _, _, err := lis.handshake(t, byAddress); err != nil {
		t.Fatalf("dialled by address: %v", err)
	}

	misnamed := client(t, ours, roots)
	misnamed.ServerName = "consent.lethe.example"
	var hostErr x509.HostnameError
	if _, _, err := lis.handshake(t, misnamed); !errors.As(err, &hostErr) {
		t.Fatalf("dialled by a name the certificate does not hold: %v, want a hostname error", err)
	}
	foreign := loadPool(t, filepath.Join(dir, "foreign.pem"), watch(&l), other)
	var authErr x509.UnknownAuthorityError
	if _, _, err := lis.handshake(t, client(t, ours, foreign)); !errors.As(err, &authErr) {
		t.Fatalf("a server of an untrusted CA: %v, want an unknown authority error", err)
	}

	rotated := ca.Issue(t, tlstest.Leaf{Name: "dsar", URIs: []string{clientID}})
	rotated.Write(t, dir, "dsar")
	if _, o, err := lis.handshake(t, mutual); err != nil || !sameCert(o.peer, rotated.Cert) {
		t.Fatalf("after the client's rotation the server saw %v (%v), want the new certificate", o.peer, err)
	}
}

// TestCredentials: gRPC dials with Credentials verify the server against
// the CA bundle as it is at each handshake (a bundle replaced is used by
// the next connection, with the same credentials) and against the name
// dialled, and present the process's certificate.
func TestCredentials(t *testing.T) {
	ca, other := tlstest.NewCA(t, "lethe CA"), tlstest.NewCA(t, "old CA")
	dir := t.TempDir()
	var l logs
	serverKP, _, _ := loadPair(t, ca.Issue(t, tlstest.Leaf{Name: "registry", URIs: []string{serverID}}), dir, "server", watch(&l))
	clientCAs := loadPool(t, filepath.Join(dir, "client-ca.pem"), watch(&l), ca)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsconfig.Server(serverKP, clientCAs))))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	rootsFile := filepath.Join(dir, "roots.pem")
	roots := loadPool(t, rootsFile, watch(&l), other)
	ours, _, _ := loadPair(t, ca.Issue(t, tlstest.Leaf{Name: "dsar", URIs: []string{clientID}}), dir, "dsar", watch(&l))
	creds := tlsconfig.Credentials(ours, roots)
	port := lis.Addr().(*net.TCPAddr).Port
	check := func(target string, opts ...grpc.DialOption) error {
		t.Helper()
		conn, err := grpc.NewClient(target, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	localhost := "localhost:" + strconv.Itoa(port)

	if err := check(localhost); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("roots without the server's CA: %v, want Unavailable for an unknown authority", err)
	}
	tlstest.Replace(t, rootsFile, bundle(other, ca))
	if err := check(localhost); err != nil {
		t.Fatalf("after the server's CA was added to the bundle: %v", err)
	}
	if err := check("127.0.0.1:" + strconv.Itoa(port)); err != nil {
		t.Fatalf("dialled by address: %v", err)
	}
	if err := check(localhost, grpc.WithAuthority("consent.lethe.example")); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not consent.lethe.example") {
		t.Fatalf("dialled for a name the server's certificate does not hold: %v, want Unavailable naming it", err)
	}
	if err := check(localhost, grpc.WithTransportCredentials(tlsconfig.Credentials(nil, roots))); status.Code(err) != codes.Unavailable {
		t.Fatalf("without a client certificate: %v, want Unavailable", err)
	}

	if got := creds.Info().SecurityProtocol; got != "tls" {
		t.Errorf("security protocol = %q, want tls", got)
	}
	if _, _, err := creds.ServerHandshake(nil); err == nil {
		t.Error("the client credentials served a handshake")
	}
}
