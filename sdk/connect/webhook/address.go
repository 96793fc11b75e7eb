package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// MaxURLLength bounds a webhook URL, as the registry's proto does.
const MaxURLLength = 2000

// URLPolicy says which webhook URLs a deployment accepts.
type URLPolicy struct {
	// AllowHTTP accepts http:// for a loopback host ("localhost",
	// 127.0.0.0/8, ::1): the development profile, where a receiver runs
	// beside Lethe. Any other http URL is refused.
	AllowHTTP bool
	// AllowPrivate accepts hosts on private, loopback, link-local and
	// unique-local addresses (the tenant's webhook_private_networks).
	// Metadata addresses are refused even then.
	AllowPrivate bool
}

// CheckURL reports what is wrong with raw as a webhook URL under p: not
// absolute, not https (or http to loopback when p allows it), with a user
// name or password, a fragment, too long, or a host that is a literal
// address p forbids. A host name is checked again, resolved, at each
// delivery (see [Dialer]), since its addresses can change.
func CheckURL(raw string, p URLPolicy) error {
	if len(raw) > MaxURLLength {
		return fmt.Errorf("longer than %d characters", MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	host := u.Hostname()
	switch {
	case !u.IsAbs() || u.Opaque != "" || host == "":
		return errors.New("not an absolute URL with a host")
	case u.User != nil:
		return errors.New("must not carry a user name or password: the request is signed with the system's secret")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return errors.New("must not have a fragment")
	}
	loopback := IsLoopbackHost(host)
	switch u.Scheme {
	case "https":
	case "http":
		if !p.AllowHTTP || !loopback {
			return errors.New("must be https (http only to a loopback host, in the development profile)")
		}
	default:
		return fmt.Errorf("scheme %q: must be https", u.Scheme)
	}
	if addr, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		if err := CheckAddr(addr, p.AllowPrivate); err != nil {
			return err
		}
	} else if loopback && !p.AllowPrivate {
		return errors.New("localhost is a loopback host, refused unless the tenant sets webhook_private_networks")
	}
	return nil
}

// IsLoopbackHost reports whether host names this machine: localhost (and
// *.localhost, with or without the trailing dot) or a loopback address.
func IsLoopbackHost(host string) bool {
	host = strings.TrimSuffix(host, ".") // "localhost." is localhost
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}

// metadata are the cloud providers' instance metadata addresses: AWS, GCP
// and Azure at 169.254.169.254 (Azure's wire server at 168.63.129.16),
// AWS's IPv6 fd00:ec2::254, Alibaba's 100.100.100.200. A request to one
// can hand out the runner's own credentials, so none is ever a target.
var metadata = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),
	netip.MustParseAddr("168.63.129.16"),
	netip.MustParseAddr("100.100.100.200"),
	netip.MustParseAddr("fd00:ec2::254"),
}

// sharedOrReserved are ranges that are neither private nor public but reach
// no legitimate receiver either: "this network" 0.0.0.0/8, carrier-grade
// NAT 100.64.0.0/10 (RFC 6598), IETF protocol assignments 192.0.0.0/24,
// benchmarking 198.18.0.0/15, reserved 240.0.0.0/4 and the documentation
// ranges; NAT64 64:ff9b::/96 can wrap a private IPv4 address.
var sharedOrReserved = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// ErrForbiddenAddress is wrapped by the errors of [CheckAddr].
var ErrForbiddenAddress = errors.New("forbidden webhook address")

// CheckAddr refuses an address a webhook must not reach: metadata,
// unspecified, multicast and reserved addresses always; private (RFC 1918,
// fc00::/7), loopback and link-local ones unless allowPrivate. An
// IPv4-mapped IPv6 address is judged as the IPv4 address it maps.
func CheckAddr(addr netip.Addr, allowPrivate bool) error {
	addr = addr.Unmap().WithZone("")
	forbid := func(what string) error { return fmt.Errorf("%w: %s is %s", ErrForbiddenAddress, addr, what) }
	for _, m := range metadata {
		if addr == m {
			return forbid("a cloud metadata address")
		}
	}
	switch {
	case !addr.IsValid():
		return forbid("not an address")
	case addr.IsUnspecified():
		return forbid("unspecified")
	case addr.IsMulticast() || addr.IsInterfaceLocalMulticast() || addr.IsLinkLocalMulticast():
		return forbid("multicast")
	case addr == netip.MustParseAddr("255.255.255.255"):
		return forbid("broadcast")
	}
	for _, p := range sharedOrReserved {
		if p.Contains(addr) {
			return forbid("in a shared or reserved range (" + p.String() + ")")
		}
	}
	if allowPrivate {
		return nil
	}
	const hint = ", refused unless the tenant sets webhook_private_networks"
	switch {
	case addr.IsLoopback():
		return forbid("a loopback address" + hint)
	case addr.IsPrivate():
		return forbid("a private address" + hint)
	case addr.IsLinkLocalUnicast():
		return forbid("a link-local address" + hint)
	}
	return nil
}

// dialControl refuses, at connect time, an address CheckAddr forbids: the
// address actually dialled, after DNS resolution, so that a host name that
// resolves to a public address when checked and a private one when used
// (DNS rebinding) is still refused.
func dialControl(allowPrivate bool) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		addr, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Errorf("%w: %q is not an address", ErrForbiddenAddress, host)
		}
		return CheckAddr(addr, allowPrivate)
	}
}
