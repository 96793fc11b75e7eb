package shardrouter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
)

// DefaultTTL is how long a Router trusts a tenant's shard without asking
// the registry again. Assignments do not change without a migration
// (docs/scale.md), and a WRONG_SHARD answer corrects a stale one at once,
// so the TTL only bounds how long a removed tenant's entry lingers.
const DefaultTTL = 10 * time.Minute

// Config sets a Router up.
type Config struct {
	// Registry answers GetTenant. Required.
	Registry grpc.ClientConnInterface
	// Template is the shard's address with ShardPlaceholder in it
	// ("consent-{shard}:9090"). Required.
	Template string
	// Dial connects to one shard's address; a Router dials each shard
	// once and keeps the connection. Required.
	Dial func(addr string) (grpc.ClientConnInterface, error)
	// TTL is how long a tenant's shard is kept; DefaultTTL when zero.
	TTL time.Duration
	// Now is the clock of the TTL; time.Now when nil.
	Now func() time.Time
}

// Router sends a tenant's calls to its consent shard. It is a
// grpc.ClientConnInterface: consentv1.NewConsentServiceClient(router)
// routes every unary call by the request's tenant_id, and a call a writer
// refuses with WRONG_SHARD is sent once more, to the shard the refusal
// names. A stream has no request when it opens: name its tenant with
// ForTenant on the call's context.
type Router struct {
	cfg      Config
	registry registryv1.RegistryServiceClient

	mu      sync.Mutex
	tenants map[string]cached
	conns   map[string]grpc.ClientConnInterface
}

type cached struct {
	shard string
	until time.Time
}

// New returns a Router.
func New(cfg Config) (*Router, error) {
	if cfg.Registry == nil || cfg.Dial == nil || cfg.Template == "" {
		return nil, errors.New("shardrouter: the registry, the address template and a dialer are required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Router{cfg: cfg, registry: registryv1.NewRegistryServiceClient(cfg.Registry),
		tenants: map[string]cached{}, conns: map[string]grpc.ClientConnInterface{}}, nil
}

// Shard returns the tenant's consent shard, from the cache or the
// registry.
func (r *Router) Shard(ctx context.Context, tenant string) (string, error) {
	r.mu.Lock()
	c, ok := r.tenants[tenant]
	r.mu.Unlock()
	if ok && r.cfg.Now().Before(c.until) {
		return c.shard, nil
	}
	resp, err := r.registry.GetTenant(ctx, &registryv1.GetTenantRequest{TenantId: tenant})
	if err != nil {
		return "", err
	}
	shard := Of(resp.GetTenant().GetConsentShard())
	if !Valid(shard) {
		return "", fmt.Errorf("shardrouter: the registry gave tenant %q the shard %q", tenant, shard)
	}
	r.learn(tenant, shard)
	return shard, nil
}

// learn records the tenant's shard.
func (r *Router) learn(tenant, shard string) {
	r.mu.Lock()
	r.tenants[tenant] = cached{shard: shard, until: r.cfg.Now().Add(r.cfg.TTL)}
	r.mu.Unlock()
}

// Conn returns the connection to the tenant's shard.
func (r *Router) Conn(ctx context.Context, tenant string) (grpc.ClientConnInterface, error) {
	shard, err := r.Shard(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return r.shardConn(shard)
}

// shardConn returns the connection to a shard, dialling it the first time.
func (r *Router) shardConn(shard string) (grpc.ClientConnInterface, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.conns[shard]; ok {
		return c, nil
	}
	c, err := r.cfg.Dial(Address(r.cfg.Template, shard))
	if err != nil {
		return nil, fmt.Errorf("shardrouter: dial shard %s: %w", shard, err)
	}
	r.conns[shard] = c
	return c, nil
}

// tenantScoped is every Lethe request that names its tenant.
type tenantScoped interface{ GetTenantId() string }

// Invoke implements grpc.ClientConnInterface: it sends the call to the
// shard of the request's tenant, and, when that writer answers
// WRONG_SHARD, once more to the shard it names.
func (r *Router) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	req, ok := args.(tenantScoped)
	if !ok || req.GetTenantId() == "" {
		return status.Errorf(codes.InvalidArgument, "shardrouter: %s names no tenant to route by", method)
	}
	tenant := req.GetTenantId()
	conn, err := r.Conn(ctx, tenant)
	if err != nil {
		return err
	}
	err = conn.Invoke(ctx, method, args, reply, opts...)
	shard, wrong := WrongShard(err)
	if !wrong {
		return err
	}
	r.learn(tenant, shard)
	if conn, err = r.shardConn(shard); err != nil {
		return err
	}
	return conn.Invoke(ctx, method, args, reply, opts...)
}

// tenantKey carries a stream's tenant on its context.
type tenantKey struct{}

// ForTenant names the tenant whose shard a stream opened with ctx goes to.
func ForTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// NewStream implements grpc.ClientConnInterface for streams whose
// context names their tenant (ForTenant).
func (r *Router) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	tenant, _ := ctx.Value(tenantKey{}).(string)
	if tenant == "" {
		return nil, status.Errorf(codes.InvalidArgument, "shardrouter: open %s with shardrouter.ForTenant: a stream has no request to route by yet", method)
	}
	conn, err := r.Conn(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return conn.NewStream(ctx, desc, method, opts...)
}

// WrongShard reports whether err is a consent writer's WRONG_SHARD
// refusal, and the shard it names.
func WrongShard(err error) (string, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return "", false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Reason == apierror.ReasonWrongShard && Valid(info.Metadata["shard"]) {
			return info.Metadata["shard"], true
		}
	}
	return "", false
}

// Close closes the connections the Router dialled.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	for shard, c := range r.conns {
		if closer, ok := c.(interface{ Close() error }); ok {
			err = errors.Join(err, closer.Close())
		}
		delete(r.conns, shard)
	}
	return err
}
