package service

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lethe-privacy/lethe/platform/flagenv"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
	"github.com/lethe-privacy/lethe/platform/tlsconfig"
)

// Neighbour is a Lethe service that another one calls over gRPC. A
// Factory declares its neighbours; the host dials each the way it dials
// the registry (Dialer) and hands the connections to the service in
// Deps.Neighbours.
type Neighbour struct {
	// Name is the neighbour's short name ("consent"); its address is the
	// flag --<name>-addr, or LETHE_<NAME>_ADDR.
	Name string
	// DevAddr is the address the development profile dials when the flag
	// is not set: the neighbour's own default listen address. Production
	// has no default; a missing address refuses the start.
	DevAddr string
}

// Flag is the flag that sets the neighbour's address.
func (n Neighbour) Flag() string { return n.Name + "-addr" }

// neighbourAddrs holds the neighbours' addresses as their flags set them.
type neighbourAddrs map[string]string

// registerNeighbourFlags binds an --<name>-addr flag for each neighbour.
func (a neighbourAddrs) registerFlags(fs *flag.FlagSet, neighbours []Neighbour) {
	for _, n := range neighbours {
		fs.Func(n.Flag(), fmt.Sprintf("gRPC address of the %s service this one calls, dialled like the registry (development default %s; required in production)", n.Name, n.DevAddr),
			func(v string) error {
				a[n.Name] = strings.TrimSpace(v)
				return nil
			})
	}
}

// resolve returns every neighbour's address, the development default
// standing in for a missing one in the development profile only, and what
// the profile refuses: production names every missing address at once.
func (a neighbourAddrs) resolve(profile string, neighbours []Neighbour) (map[string]string, []error) {
	out := map[string]string{}
	var missing []string
	for _, n := range neighbours {
		addr := a[n.Name]
		if addr == "" && profile != server.ProfileProduction {
			addr = n.DevAddr
		}
		if addr == "" {
			missing = append(missing, fmt.Sprintf("--%s (%s)", n.Flag(), flagenv.Name(EnvPrefix, n.Flag())))
			continue
		}
		out[n.Name] = addr
	}
	if len(missing) > 0 {
		return out, []error{fmt.Errorf("production has no default address for the services this one calls: set %s", strings.Join(missing, ", "))}
	}
	return out, nil
}

// Dialer connects a process to the Lethe services it calls, every one
// alike: over TLS, presenting the process's certificate (its identity),
// when it has a CA bundle for their certificates, and with the process's
// telemetry, so that a call carries its trace on. Only the development
// profile dials plaintext; no other path in the kit makes a plaintext
// connection to a service.
type Dialer struct {
	profile   string
	transport credentials.TransportCredentials
	stats     grpc.DialOption
}

// NewDialer returns the dialer of the completed configuration cfg: with
// roots, mutual TLS presenting cfg's certificate; without, plaintext,
// which Dial refuses outside the development profile.
func NewDialer(cfg server.CompletedConfig, roots *tlsconfig.Pool) Dialer {
	d := Dialer{profile: cfg.Profile}
	if roots != nil {
		d.transport = tlsconfig.Credentials(cfg.KeyPair, roots)
	}
	if p := cfg.Telemetry; p != nil {
		d.stats = grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(p.Tracer),
			otelgrpc.WithMeterProvider(p.Meter), otelgrpc.WithPropagators(p.Propagator)))
	}
	return d
}

// Dial returns a connection to the service called name at addr. The
// connection is made on first use, so the neighbour may start later.
func (d Dialer) Dial(name, addr string) (*grpc.ClientConn, error) {
	transport := d.transport
	if transport == nil {
		if d.profile != server.ProfileDev {
			return nil, fmt.Errorf("%s at %s: the %s profile dials services over TLS only: set --tls-ca", name, addr, d.profile)
		}
		transport = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(transport)}
	if d.stats != nil {
		opts = append(opts, d.stats)
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s at %s: %w", name, addr, err)
	}
	return conn, nil
}

// dialAll dials the registry and every neighbour. On failure it closes
// what it dialled.
func (d Dialer) dialAll(registryAddr string, neighbours map[string]string) (*grpc.ClientConn, map[string]*grpc.ClientConn, error) {
	registry, err := d.Dial("registry", registryAddr)
	if err != nil {
		return nil, nil, err
	}
	conns := map[string]*grpc.ClientConn{}
	for name, addr := range neighbours {
		if strings.Contains(addr, shardrouter.ShardPlaceholder) {
			continue // a template: routeSharded dials each shard
		}
		conn, err := d.Dial(name, addr)
		if err != nil {
			return nil, nil, errors.Join(err, closeConns(registry, conns))
		}
		conns[name] = conn
	}
	return registry, conns, nil
}

// closeConns closes the registry's and the neighbours' connections.
func closeConns(registry *grpc.ClientConn, conns map[string]*grpc.ClientConn) error {
	var err error
	if registry != nil {
		err = registry.Close()
	}
	for _, c := range conns {
		err = errors.Join(err, c.Close())
	}
	return err
}

// routeSharded returns a shardrouter.Router for each neighbour whose
// address is a template naming the shard ("consent-{shard}:9090"): the
// consent writers partitioned by tenant (docs/scale.md). The router asks
// the registry for the tenant's shard and dials each shard like any
// neighbour.
func (d Dialer) routeSharded(registry grpc.ClientConnInterface, neighbours map[string]string) (map[string]*shardrouter.Router, error) {
	out := map[string]*shardrouter.Router{}
	for name, addr := range neighbours {
		if !strings.Contains(addr, shardrouter.ShardPlaceholder) {
			continue
		}
		r, err := shardrouter.New(shardrouter.Config{Registry: registry, Template: addr,
			Dial: func(addr string) (grpc.ClientConnInterface, error) { return d.Dial(name, addr) }})
		if err != nil {
			return nil, err
		}
		out[name] = r
	}
	return out, nil
}
