// Package auth holds the authentication and authorization slots of the
// kit's interceptor chain. The chain asks an Authenticator who is calling
// and a Policy whether that identity may call a method for a tenant; the
// handlers read the identity from the context. The development profile
// fills the slots with DevAuthenticator (local callers only) and AllowAll;
// production fills them with certificate and token authentication and a
// policy file, without any service changing.
package auth

import (
	"context"
	"net"

	"google.golang.org/grpc/peer"

	"github.com/lethe-privacy/lethe/platform/apierror"
)

// Identity is an authenticated caller.
type Identity struct {
	// Name identifies the caller in logs, audit entries and policies: a
	// SPIFFE id, a token subject, or DevIdentityName in development.
	Name string
}

// DevIdentityName is the identity the development profile gives every local
// caller. Audit entries written in development carry it, so they cannot be
// mistaken for a production caller's.
const DevIdentityName = "dev:local"

type identityKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity the authentication slot established.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Authenticator establishes who is calling, from the connection (peer
// certificate, address) or the request metadata. It returns an
// Unauthenticated error when it cannot.
type Authenticator interface {
	Authenticate(ctx context.Context) (Identity, error)
}

// DevAuthenticator accepts callers on the same machine (loopback TCP, Unix
// sockets, in-memory test listeners) as DevIdentityName and refuses everyone
// else, so a development server bound to a public address by mistake still
// serves nobody remote.
type DevAuthenticator struct{}

// Authenticate implements Authenticator.
func (DevAuthenticator) Authenticate(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || !isLocal(p.Addr) {
		return Identity{}, apierror.Unauthenticated("the development profile accepts local callers only")
	}
	return Identity{Name: DevIdentityName}, nil
}

func isLocal(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	if addr == nil {
		return false
	}
	// A call through grpc.Server.ServeHTTP (the HTTP/JSON listener) names
	// its peer by the "ip:port" net/http read from the connection.
	if addr.Network() == "tcp" {
		host, _, err := net.SplitHostPort(addr.String())
		ip := net.ParseIP(host)
		return err == nil && ip != nil && ip.IsLoopback()
	}
	// grpc's bufconn listener, used by tests, names its network "bufconn".
	return addr.Network() == "bufconn"
}

// Request is what a Policy decides on.
type Request struct {
	Identity Identity
	// FullMethod is the gRPC method, "/lethe.consent.v1.ConsentService/Check".
	FullMethod string
	// TenantID is the tenant the request is for; empty for methods that are
	// not scoped to one tenant.
	TenantID string
}

// Policy decides whether a request is allowed. It returns nil to allow and
// a PermissionDenied error to deny.
type Policy interface {
	Authorize(ctx context.Context, r Request) error
}

// AllowAll is the development policy: every authenticated caller may call
// every method for every tenant. The server logs a warning when it runs
// with it.
type AllowAll struct{}

// Authorize implements Policy.
func (AllowAll) Authorize(context.Context, Request) error { return nil }
