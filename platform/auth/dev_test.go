package auth_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/lethe-privacy/lethe/platform/auth"
)

// textAddr is a peer address as grpc.Server.ServeHTTP (the HTTP/JSON
// listener) reports it: the "ip:port" net/http read from the connection,
// with network "tcp".
type textAddr string

func (a textAddr) Network() string { return "tcp" }
func (a textAddr) String() string  { return string(a) }

// The development authenticator accepts local callers only, whether the
// peer is a TCP address (gRPC) or its text (HTTP/JSON).
func TestDevAuthenticatorAcceptsLoopbackOnly(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		ok   bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000}, true},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 5000}, false},
		{textAddr("127.0.0.1:5000"), true},
		{textAddr("[::1]:5000"), true},
		{textAddr("192.0.2.7:5000"), false},
		{textAddr("localhost:5000"), false}, // a name is not what net/http reports; refuse it
		{textAddr("garbage"), false},
	} {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: c.addr})
		id, err := auth.DevAuthenticator{}.Authenticate(ctx)
		if c.ok && (err != nil || id.Name != auth.DevIdentityName) {
			t.Errorf("%s: %v, %v; want %s", c.addr, id, err, auth.DevIdentityName)
		}
		if !c.ok && status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, %v; want Unauthenticated", c.addr, id, err)
		}
	}
}
