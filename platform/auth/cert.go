package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/lethe-privacy/lethe/platform/apierror"
)

// ErrNoCredentials is what an authenticator returns when the call carries
// none of the credentials it checks, so that a Chain asks the next one. It
// is Unauthenticated, for an authenticator used on its own.
var ErrNoCredentials = apierror.Unauthenticated("the call carries no credentials: present a client certificate or a bearer token")

// CertAuthenticator identifies a caller by the SPIFFE id in the client
// certificate that the TLS handshake verified against the listener's client
// CA: the URI SAN spiffe://<TrustDomain>/<path>, which is the identity's
// name as it is, for example spiffe://lethe.example/system/newsletter.
//
// A certificate with no SPIFFE id, more than one, or one of another trust
// domain is refused: the CA may sign for several trust domains, and only
// this one's workloads are callers.
type CertAuthenticator struct {
	// TrustDomain is the SPIFFE trust domain callers belong to, such as
	// "lethe.example".
	TrustDomain string
}

// Authenticate implements Authenticator.
func (a CertAuthenticator) Authenticate(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, ErrNoCredentials
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	// Only a chain the handshake verified counts: a certificate a client
	// merely sent (VerifyClientCertIfGiven without a CA) proves nothing.
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return Identity{}, ErrNoCredentials
	}
	name, err := certIdentities.spiffeID(info.State.PeerCertificates[0], a.TrustDomain)
	if err != nil {
		return Identity{}, apierror.Unauthenticated("client certificate: " + err.Error())
	}
	return Identity{Name: name}, nil
}

// certIdentities remembers the SPIFFE id of the certificates callers
// presented: a connection presents one certificate for all its calls, and
// reading the id anew (URI checks, a regular expression per path
// segment) was the largest part of authenticating a call over mutual TLS.
// The id is a function of the certificate's bytes and the trust domain
// alone; the handshake has verified the chain.
var certIdentities = &idCache{ids: map[string]cachedID{}}

// idCacheSize bounds the cache: a few thousand callers' certificates, a
// few megabytes. When full it starts afresh.
const idCacheSize = 4096

type idCache struct {
	mu  sync.RWMutex
	ids map[string]cachedID // by the certificate's DER bytes
}

type cachedID struct {
	trustDomain string
	id          string
	err         error
}

// spiffeID is SPIFFEID, remembered.
func (c *idCache) spiffeID(cert *x509.Certificate, trustDomain string) (string, error) {
	c.mu.RLock()
	v, ok := c.ids[string(cert.Raw)]
	c.mu.RUnlock()
	if ok && v.trustDomain == trustDomain {
		return v.id, v.err
	}
	id, err := SPIFFEID(cert, trustDomain)
	c.mu.Lock()
	if len(c.ids) >= idCacheSize {
		clear(c.ids)
	}
	c.ids[string(cert.Raw)] = cachedID{trustDomain: trustDomain, id: id, err: err}
	c.mu.Unlock()
	return id, err
}

var (
	trustDomainSyntax = regexp.MustCompile(`^[a-z0-9._-]+$`)
	spiffeSegment     = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// ValidTrustDomain reports whether td is a SPIFFE trust domain name.
func ValidTrustDomain(td string) error {
	if !trustDomainSyntax.MatchString(td) {
		return fmt.Errorf("trust domain %q is not a lower-case SPIFFE trust domain name such as lethe.example", td)
	}
	return nil
}

// SPIFFEID returns the SPIFFE id of cert, which must be in trustDomain, as
// the SPIFFE X.509-SVID specification defines it: exactly one URI SAN with
// the spiffe scheme, a path of one or more segments, and no port, user,
// query or fragment.
func SPIFFEID(cert *x509.Certificate, trustDomain string) (string, error) {
	var ids []string
	for _, u := range cert.URIs {
		if !strings.EqualFold(u.Scheme, "spiffe") {
			continue
		}
		if u.Scheme != "spiffe" || u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			return "", fmt.Errorf("SPIFFE id %q is malformed", u.String())
		}
		ids = append(ids, u.Host+u.Path)
	}
	switch len(ids) {
	case 0:
		return "", errors.New("no SPIFFE id (spiffe:// URI SAN)")
	case 1:
	default:
		return "", errors.New("more than one SPIFFE id")
	}
	td, path, _ := strings.Cut(ids[0], "/")
	if td != trustDomain {
		return "", fmt.Errorf("SPIFFE id of trust domain %q, want %q", td, trustDomain)
	}
	segments := strings.Split(path, "/")
	for _, s := range segments {
		if !spiffeSegment.MatchString(s) || s == "." || s == ".." {
			return "", fmt.Errorf("SPIFFE id path %q is not one or more /-separated segments", "/"+path)
		}
	}
	return "spiffe://" + td + "/" + path, nil
}

// bearer marks the authenticators that read a bearer token, which a Chain
// asks when the call carries one.
type bearer interface{ readsBearerToken() }

// Chain asks authenticators in order. When the call carries a bearer token
// it is the credential: only the token authenticators are asked, and a
// token none of them accepts is refused even if the connection also has a
// client certificate (a service acting for an operator presents the
// operator's token over its own certificate). Otherwise the others are
// asked, and the first that finds its kind of credential decides.
type Chain []Authenticator

// Authenticate implements Authenticator.
func (c Chain) Authenticate(ctx context.Context) (Identity, error) {
	_, hasToken, err := bearerToken(ctx)
	if err != nil {
		return Identity{}, err
	}
	for _, a := range c {
		if _, isBearer := a.(bearer); isBearer != hasToken {
			continue
		}
		id, err := a.Authenticate(ctx)
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, ErrNoCredentials) {
			return Identity{}, err
		}
	}
	if hasToken {
		return Identity{}, apierror.Unauthenticated("the bearer token is not accepted")
	}
	return Identity{}, ErrNoCredentials
}
