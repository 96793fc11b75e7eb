package servertest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/tlsconfig"
	"github.com/lethe-privacy/lethe/platform/tlsconfig/tlstest"
)

// TrustDomain is the SPIFFE trust domain of the identities PKI issues.
const TrustDomain = "lethe.test"

// PKI is a production deployment's certificates for tests and benchmarks:
// a CA, the server's key pair and callers' certificates with SPIFFE
// identities, written where a server reads them.
type PKI struct {
	dir                   string
	ca                    *tlstest.CA
	caFile                string
	serverCert, serverKey string
}

// NewPKI issues a CA and a server key pair valid for localhost and
// 127.0.0.1.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{dir: t.TempDir(), ca: tlstest.NewCA(t, "lethe test CA")}
	p.caFile = p.ca.WritePEM(t, p.dir, "ca.pem")
	p.serverCert, p.serverKey = p.ca.Issue(t, tlstest.Leaf{Name: "lethe-server",
		URIs: []string{ServerIdentity}}).Write(t, p.dir, "server")
	return p
}

// Production returns the configuration a production deployment runs with:
// the production profile, mutual TLS with SPIFFE identities from client
// certificates, and authorization by the policy file written from policy
// (JSON, see auth.FilePolicy).
func (p *PKI) Production(t testing.TB, policy string) server.Config {
	t.Helper()
	path := filepath.Join(p.dir, "policy.json")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	return server.Config{
		Profile:         server.ProfileProduction,
		TLSCertFile:     p.serverCert,
		TLSKeyFile:      p.serverKey,
		TLSClientCAFile: p.caFile,
		TrustDomain:     TrustDomain,
		PolicyFile:      path,
	}
}

// CAFile is the PEM file of the CA: what a host that dials the server
// (the services dialling their neighbours) trusts.
func (p *PKI) CAFile() string { return p.caFile }

// ServerIdentity is the SPIFFE id of the server's own certificate, which
// it presents when it dials other services.
const ServerIdentity = "spiffe://" + TrustDomain + "/service/server"

// Identity is the SPIFFE id of the caller called name: the identity a
// policy names.
func Identity(name string) string { return "spiffe://" + TrustDomain + "/system/" + name }

// Client returns transport credentials for the caller called name: a
// client certificate carrying Identity(name), trusting the CA.
func (p *PKI) Client(t testing.TB, name string) credentials.TransportCredentials {
	t.Helper()
	return credentials.NewTLS(p.clientTLS(t, name))
}

// ClientWithIdentity is Client for a caller whose certificate carries the
// SPIFFE id given, of any path in TrustDomain (a deployable's
// service-account form, spiffe://lethe.test/ns/lethe/sa/lethe-connect).
func (p *PKI) ClientWithIdentity(t testing.TB, spiffeID string) credentials.TransportCredentials {
	t.Helper()
	return credentials.NewTLS(p.tlsFor(t, spiffeID, spiffeID))
}

// clientTLS is the TLS configuration of the caller called name: a client
// certificate carrying Identity(name), trusting the CA.
func (p *PKI) clientTLS(t testing.TB, name string) *tls.Config {
	t.Helper()
	return p.tlsFor(t, name, Identity(name))
}

// ClientFiles issues the certificate of the caller called name, carrying
// Identity(name), and returns the PEM files a separate client program
// (ghz, grpcurl) is given with the CA file.
func (p *PKI) ClientFiles(t testing.TB, name string) (certFile, keyFile string) {
	t.Helper()
	return p.ca.Issue(t, tlstest.Leaf{Name: name, URIs: []string{Identity(name)}}).Write(t, p.dir, name)
}

// ServerTLS is the listener's TLS configuration of a production server
// built from Production: its key pair, callers' certificates required and
// verified against the CA. A plain grpc.Server given it speaks the same
// TLS as the kit's server, so that a benchmark's baseline pays the same
// handshake and record costs.
func (p *PKI) ServerTLS(t testing.TB) *tls.Config {
	t.Helper()
	pair, err := tlsconfig.LoadKeyPair(p.serverCert, p.serverKey, tlsconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.LoadPool(p.caFile, tlsconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tlsconfig.Server(pair, pool)
}

// tlsFor is the TLS configuration of a caller whose certificate, named
// name, carries the SPIFFE id spiffeID, trusting the CA.
func (p *PKI) tlsFor(t testing.TB, name, spiffeID string) *tls.Config {
	t.Helper()
	pair := p.ca.Issue(t, tlstest.Leaf{Name: name, URIs: []string{spiffeID}})
	cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	return &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{cert}}
}

// StartTCP builds a server from cfg on a loopback TCP listener, lets
// register add services, runs it until the test ends and returns its
// address. Unlike Start it goes through the kernel's network stack and,
// with a TLS configuration, through TLS: what a deployed server does.
func StartTCP(t testing.TB, cfg server.Config, register func(*server.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ServeTCP(t, cfg, lis, register)
	return lis.Addr().String()
}

// ServeTCP is StartTCP on a listener the test made: a test whose client
// must know the address before the server exists (a neighbour that
// comes up late) listens itself.
func ServeTCP(t testing.TB, cfg server.Config, lis net.Listener, register func(*server.Server)) {
	t.Helper()
	runUntilCleanup(t, build(t, cfg, lis, register).Run)
}

// Dial connects to addr with creds (plaintext when nil) and closes the
// connection when the test ends.
func Dial(t testing.TB, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
