// Package tlsconfig builds the TLS configurations of Lethe's listeners and
// of its outgoing connections (service to service over gRPC, service to
// NATS) from PEM files, and keeps them current: a certificate, key or CA
// bundle replaced on disk is used by the next handshake, without a restart.
// A replacement that does not load (a half-written pair, a key that does
// not match, an expired certificate) leaves the last good version in force
// and is logged.
//
// One key pair serves a process both ways: it is presented to callers on
// the gRPC listener and to the servers the process dials, as SPIFFE
// X.509-SVIDs are. Its certificate therefore carries both the serverAuth
// and clientAuth extended key usages (or none).
package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/lethe-privacy/lethe/platform/internal/livefile"
)

// Options tune how files are watched; the zero value is fine.
type Options struct {
	// Interval is the least time between two looks at the files for a
	// change; one second when zero, every handshake when negative (tests).
	Interval time.Duration
	// Logger receives reloads and refused reloads; slog.Default() when nil.
	Logger *slog.Logger
	// Now is the clock that decides whether a certificate has expired; the
	// wall clock when nil.
	Now func() time.Time
}

func (o Options) live() livefile.Options {
	return livefile.Options{Interval: o.Interval, Logger: o.Logger}
}

// KeyPair is a certificate chain and its private key, kept current.
type KeyPair struct {
	file *livefile.File[*tls.Certificate]
}

// LoadKeyPair loads a PEM certificate chain (leaf first) and its PEM
// private key. A certificate that has already expired is refused: serving
// it would fail every handshake.
func LoadKeyPair(certFile, keyFile string, opts Options) (*KeyPair, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	f, err := livefile.Load([]string{certFile, keyFile}, func(c [][]byte) (*tls.Certificate, error) {
		pair, err := tls.X509KeyPair(c[0], c[1])
		if err != nil {
			return nil, err
		}
		if pair.Leaf == nil {
			if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				return nil, err
			}
		}
		if t := now(); t.After(pair.Leaf.NotAfter) {
			return nil, fmt.Errorf("certificate expired at %s", pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return &pair, nil
	}, opts.live())
	if err != nil {
		return nil, fmt.Errorf("tls key pair: %w", err)
	}
	return &KeyPair{file: f}, nil
}

// Certificate returns the current certificate and key.
func (k *KeyPair) Certificate() *tls.Certificate { return k.file.Get() }

// Pool is a bundle of CA certificates, kept current.
type Pool struct {
	file *livefile.File[*x509.CertPool]
}

// LoadPool loads a PEM bundle of one or more CA certificates.
func LoadPool(file string, opts Options) (*Pool, error) {
	f, err := livefile.Load([]string{file}, func(c [][]byte) (*x509.CertPool, error) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(c[0]) {
			return nil, errors.New("no PEM certificate in the file")
		}
		return pool, nil
	}, opts.live())
	if err != nil {
		return nil, fmt.Errorf("tls CA bundle: %w", err)
	}
	return &Pool{file: f}, nil
}

// CertPool returns the current bundle.
func (p *Pool) CertPool() *x509.CertPool { return p.file.Get() }

// minVersion is TLS 1.2, HTTP/2's minimum (RFC 9113 section 9.2); clients
// that can negotiate 1.3 do.
const minVersion = tls.VersionTLS12

// Server returns the configuration of a listener that presents cert and,
// when clientCAs is not nil, requires every caller to present a
// certificate that clientCAs signed (mutual TLS). Each handshake reads the
// current files.
func Server(cert *KeyPair, clientCAs *Pool) *tls.Config {
	return &tls.Config{
		MinVersion: minVersion,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := &tls.Config{MinVersion: minVersion, Certificates: []tls.Certificate{*cert.Certificate()}}
			if clientCAs != nil {
				c.ClientCAs = clientCAs.CertPool()
				c.ClientAuth = tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// Client returns the configuration of one outgoing handshake: the server
// must present a certificate that roots signed for the name dialled, and
// cert, when not nil, is presented when the server asks for one.
func Client(cert *KeyPair, roots *Pool) *tls.Config {
	c := &tls.Config{MinVersion: minVersion, RootCAs: roots.CertPool()}
	if cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert.Certificate(), nil
		}
	}
	return c
}

// Credentials returns gRPC transport credentials for dialling with
// Client's configuration, rebuilt for every handshake so that a rotated
// CA bundle is used without a restart (grpc's own TLS credentials fix the
// bundle when they are made).
func Credentials(cert *KeyPair, roots *Pool) credentials.TransportCredentials {
	return &clientCreds{cert: cert, roots: roots}
}

type clientCreds struct {
	cert       *KeyPair
	roots      *Pool
	serverName string
}

// ClientHandshake implements credentials.TransportCredentials.
func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg := Client(c.cert, c.roots)
	cfg.ServerName = c.serverName
	return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, conn)
}

// ServerHandshake implements credentials.TransportCredentials; these
// credentials only dial.
func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tlsconfig: client credentials used by a server")
}

// Info implements credentials.TransportCredentials.
func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

// Clone implements credentials.TransportCredentials.
func (c *clientCreds) Clone() credentials.TransportCredentials {
	clone := *c
	return &clone
}

// OverrideServerName implements credentials.TransportCredentials.
//
// Deprecated: use grpc.WithAuthority, as grpc-go does.
func (c *clientCreds) OverrideServerName(name string) error {
	c.serverName = name
	return nil
}
