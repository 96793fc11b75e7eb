package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/credentials"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/tlsconfig/tlstest"
	"github.com/lethe-privacy/lethe/services/registry"
)

// The operator commands reach a production deployment: mutual TLS with the
// operator's certificate from a context file, and the policy deciding what
// the operator may do. A caller without the CA's certificate is refused in
// the handshake; one the policy does not name is denied.
func TestCommandsDialAProductionDeployment(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "lethe test CA")
	caFile := ca.WritePEM(t, dir, "ca.pem")
	srvCert, srvKey := ca.Issue(t, tlstest.Leaf{Name: "lethe-registry", URIs: []string{"spiffe://lethe.test/service/registry"}}).Write(t, dir, "server")
	opCert, opKey := ca.Issue(t, tlstest.Leaf{Name: "ada", URIs: []string{"spiffe://lethe.test/operator/ada"}}).Write(t, dir, "ada")
	eveCert, eveKey := ca.Issue(t, tlstest.Leaf{Name: "eve", URIs: []string{"spiffe://lethe.test/operator/eve"}}).Write(t, dir, "eve")
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"rules": [{"identities": ["spiffe://lethe.test/operator/ada"],
		"methods": ["/lethe.registry.v1.RegistryService/*"], "tenants": ["*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := registry.New(service.Deps{DataDir: t.TempDir(), Clock: clock.Real{}, Logger: quiet}, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	addr := servertest.StartTCP(t, server.Config{Logger: quiet, Profile: server.ProfileProduction, TLSCertFile: srvCert, TLSKeyFile: srvKey,
		TLSClientCAFile: caFile, TrustDomain: "lethe.test", PolicyFile: policy}, reg.Register)
	// A tenant to list, created by ada over the same mutual TLS.
	admin := registryv1.NewRegistryServiceClient(servertest.Dial(t, addr, clientCreds(t, ca, "ada")))
	if _, err := admin.CreateTenant(context.Background(), &registryv1.CreateTenantRequest{RequestId: "t1",
		Tenant: &registryv1.Tenant{TenantId: "clio", DisplayName: "Clio"}}); err != nil {
		t.Fatal(err)
	}

	config := func(name, cert, key string) string {
		path := filepath.Join(dir, name+".yaml")
		body := fmt.Sprintf("currentContext: prod\ncontexts:\n  - name: prod\n    address: %s\n    tls:\n      ca: %s\n      cert: %s\n      key: %s\n      serverName: localhost\n",
			addr, caFile, cert, key)
		if cert == "" {
			body = fmt.Sprintf("currentContext: prod\ncontexts:\n  - name: prod\n    address: %s\n    tls:\n      ca: %s\n      serverName: localhost\n", addr, caFile)
		}
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	lethe := func(configFile string) (int, string) {
		var out, errOut bytes.Buffer
		code := run([]string{"registry", "tenants", "--config", configFile}, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, out := lethe(config("ada", opCert, opKey)); code != exitOK || !strings.Contains(out, "clio") {
		t.Fatalf("ada lists tenants: exit %d\n%s", code, out)
	}
	if code, out := lethe(config("eve", eveCert, eveKey)); code == exitOK || !strings.Contains(strings.ToLower(out), "permission") {
		t.Fatalf("eve, whom no rule names: exit %d, want a denial\n%s", code, out)
	}
	if code, out := lethe(config("anonymous", "", "")); code == exitOK {
		t.Fatalf("a caller without a client certificate: exit %d, want a refusal\n%s", code, out)
	}
}

// clientCreds is a client certificate for name, issued by ca, trusting ca.
func clientCreds(t *testing.T, ca *tlstest.CA, name string) credentials.TransportCredentials {
	t.Helper()
	pair := ca.Issue(t, tlstest.Leaf{Name: name, URIs: []string{"spiffe://lethe.test/operator/" + name}})
	cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}})
}
