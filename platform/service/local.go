package service

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"

	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/tlsconfig"
)

// Local is a set of services built to run together behind one server, each
// reaching the registry and its neighbours through one connection to that
// server's own listener. `lethe dev` hosts all four services so, and
// platform/service/servicetest any set of them in a test: one composition,
// so that what the tests run is what a developer runs.
type Local struct {
	srv      *server.Server
	services []Service
	conn     *grpc.ClientConn
}

// NewLocal builds, in order, the service of each factory for the completed
// server configuration cfg, whose Listener must be set (the services dial
// its address), and the server. deps gives every service its DataDir, NATS
// and JetStream (and Backup, AnchorEvery); its Clock, Logger and Telemetry
// are cfg's where deps leaves them nil (and its Profile where deps has none), and Registry and every declared
// neighbour are the connection to the listener. A factory that needs other
// dependencies wraps New. The services dial the listener in plaintext, as
// only the development profile allows, unless DialRoots is given. On
// failure NewLocal closes what it built and the listener.
func NewLocal(cfg server.CompletedConfig, deps Deps, factories []Factory, opts ...LocalOption) (*Local, error) {
	lis := cfg.Listener
	if lis == nil {
		return nil, errors.New("local services: the server configuration has no listener")
	}
	if deps.Clock == nil {
		deps.Clock = cfg.Clock
	}
	if deps.Logger == nil {
		deps.Logger = cfg.Logger
	}
	if deps.Telemetry == nil {
		deps.Telemetry = cfg.Telemetry
	}
	if deps.Profile == "" {
		deps.Profile = cfg.ProfileOrDefault()
	}
	// One listener serves every service, so one connection reaches the
	// registry and every service's neighbours.
	var o localOptions
	for _, opt := range opts {
		opt(&o)
	}
	conn, err := NewDialer(cfg, o.roots).Dial(cfg.Name, lis.Addr().String())
	if err != nil {
		return nil, errors.Join(err, lis.Close())
	}
	deps.Registry = conn
	if o.registry != nil {
		deps.Registry = o.registry
	}
	l := &Local{conn: conn}
	fail := func(err error) (*Local, error) {
		return nil, errors.Join(err, closeAll(l.services), conn.Close(), lis.Close())
	}
	for _, f := range factories {
		d := deps
		d.Neighbours = map[string]grpc.ClientConnInterface{}
		for _, n := range f.Neighbours {
			d.Neighbours[n.Name] = conn
			if c, ok := o.neighbours[n.Name]; ok {
				d.Neighbours[n.Name] = c
			}
		}
		svc, err := f.New(d)
		if err != nil {
			return fail(fmt.Errorf("start %s: %w", f.Name, err))
		}
		l.services = append(l.services, svc)
	}
	if l.srv, err = cfg.New(); err != nil {
		return fail(err)
	}
	return l, nil
}

// LocalOption varies NewLocal.
type LocalOption func(*localOptions)

type localOptions struct {
	roots      *tlsconfig.Pool
	registry   grpc.ClientConnInterface
	neighbours map[string]grpc.ClientConnInterface
}

// DialElsewhere makes the services reach the registry, and the named
// neighbours, through the connections given instead of the listener: a
// second set of services beside a first that hosts the registry (a
// second consent shard's writer), or a neighbour reached through a
// shardrouter.Router. A nil registry keeps the listener.
func DialElsewhere(registry grpc.ClientConnInterface, neighbours map[string]grpc.ClientConnInterface) LocalOption {
	return func(o *localOptions) { o.registry, o.neighbours = registry, neighbours }
}

// DialRoots makes the services reach the listener over mutual TLS,
// presenting the server configuration's key pair and trusting roots, as
// deployed services reach each other: how a host in the production
// profile, where plaintext is refused, runs the one composition.
func DialRoots(roots *tlsconfig.Pool) LocalOption {
	return func(o *localOptions) { o.roots = roots }
}

// Run serves the services and runs their background work until ctx ends
// or one fails (Run), then closes them and the connection between them.
func (l *Local) Run(ctx context.Context) error {
	err := Run(ctx, l.srv, l.services)
	return errors.Join(err, l.conn.Close())
}

// closeAll closes services, reporting every failure.
func closeAll(services []Service) error {
	var err error
	for _, s := range services {
		err = errors.Join(err, s.Close())
	}
	return err
}
