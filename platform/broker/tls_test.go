package broker_test

import (
	"bufio"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/tlsconfig"
	"github.com/lethe-privacy/lethe/platform/tlsconfig/tlstest"
)

// TestTLSWithClientCertificates runs an embedded nats-server that speaks
// TLS only and verifies client certificates ("verify"): a service that
// presents a certificate of the CA connects and publishes; without one, with
// one of another CA, or in plaintext it is refused.
func TestTLSWithClientCertificates(t *testing.T) {
	ca := tlstest.NewCA(t, "lethe NATS CA")
	foreign := tlstest.NewCA(t, "someone else's CA")
	dir := t.TempDir()
	caFile := ca.WritePEM(t, dir, "ca.pem")
	roots, err := tlsconfig.LoadPool(caFile, tlsconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	load := func(p tlstest.Pair, name string) *tlsconfig.KeyPair {
		certFile, keyFile := p.Write(t, dir, name)
		pair, err := tlsconfig.LoadKeyPair(certFile, keyFile, tlsconfig.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return pair
	}
	serverPair := load(ca.Issue(t, tlstest.Leaf{Name: "nats"}), "nats")
	e, err := broker.StartEmbedded(broker.EmbeddedConfig{
		Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir(), ServerName: "lethe-tls",
		TLS: tlsconfig.Server(serverPair, roots),
	}, brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)

	consent := load(ca.Issue(t, tlstest.Leaf{Name: "lethe-consent", URIs: []string{"spiffe://lethe.example/service/consent"}}), "consent")
	nc, err := broker.Connect(e.ClientURL(), "lethe-consent", brokertest.Logger(t), broker.TLS(consent, roots))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if !nc.IsConnected() {
		t.Fatalf("with a client certificate: not connected: %v", nc.LastError())
	}
	if _, err := nc.TLSConnectionState(); err != nil {
		t.Fatalf("connection is not TLS: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	if _, err := broker.EnsureStream(ctx, js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, broker.SubjectPrefix+".clio.erasure.requested", []byte("event")); err != nil {
		t.Fatalf("publish over TLS: %v", err)
	}

	stranger := load(foreign.Issue(t, tlstest.Leaf{Name: "stranger"}), "stranger")
	// Sent whatever CAs the server names as acceptable (Go's client sends
	// nothing when none fits), so that the server's verification is tested.
	alwaysSend := tlsconfig.Client(nil, roots)
	alwaysSend.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return stranger.Certificate(), nil }
	for name, opt := range map[string]nats.Option{
		"no client certificate":       broker.TLS(nil, roots),
		"certificate of a foreign CA": nats.Secure(alwaysSend),
	} {
		t.Run(name, func(t *testing.T) {
			// nats.Connect without Lethe's retry, so the refusal is returned.
			nc, err := nats.Connect(e.ClientURL(), opt, nats.Timeout(2*time.Second), nats.NoReconnect())
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			t.Logf("refused: %v", err)
		})
	}

	t.Run("plaintext", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", e.Server().Addr().String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(conn)
		info, err := r.ReadString('\n')
		if err != nil || !strings.Contains(info, `"tls_required":true`) {
			t.Fatalf("INFO = %q, %v; want tls_required", info, err)
		}
		if _, err := conn.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
			return // refused already
		}
		if line, err := r.ReadString('\n'); err == nil && strings.HasPrefix(line, "PONG") {
			t.Fatalf("a plaintext client was served: %q", line)
		}
	})
}
