package broker

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/nats-io/nats.go"

	"github.com/lethe-privacy/lethe/platform/tlsconfig"
)

// TLS returns the connection option for a NATS server that speaks TLS: the
// server must present a certificate that roots signed for the host dialled,
// and cert, when not nil, is presented as the client certificate (which a
// server configured with "verify" requires, and "verify_and_map" maps to a
// NATS user). Both are read at every connect and reconnect, so rotated
// files are used without a restart.
func TLS(cert *tlsconfig.KeyPair, roots *tlsconfig.Pool) nats.Option {
	var certCB nats.TLSCertHandler
	if cert != nil {
		certCB = func() (tls.Certificate, error) { return *cert.Certificate(), nil }
	}
	return nats.ClientTLSConfig(certCB, func() (*x509.CertPool, error) { return roots.CertPool(), nil })
}
