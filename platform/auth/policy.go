package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lethe-privacy/lethe/platform/apierror"
)

// FilePolicy authorizes requests by a policy file: rules that allow
// identities to call methods for tenants. Whatever no rule allows is
// denied. The file is JSON:
//
//	{"rules": [
//	  {"identities": ["spiffe://lethe.example/newsletter"],
//	   "methods":    ["/lethe.consent.v1.ConsentService/Check"],
//	   "tenants":    ["clio"]},
//	  {"identities": ["spiffe://lethe.example/dsar-operator"],
//	   "methods":    ["/lethe.dsar.v1.DsarService/*"],
//	   "tenants":    ["*"]}
//	]}
//
// A method is a full gRPC method, a service's methods ("/svc/*"), or "*".
// A tenant is a tenant id or "*". A method that is not scoped to a tenant
// (creating or listing tenants) is allowed only by a rule for tenant "*":
// it is an operator's permission. An identity is a name the authenticator
// gives, or "*" for every authenticated caller.
//
// Watch reloads the file when it changes; a file that does not parse keeps
// the policy in force and is logged, so a bad edit never opens or closes
// everything at once.
type FilePolicy struct {
	path   string
	logger *slog.Logger
	rules  atomic.Pointer[[]policyRule]
	sum    atomic.Pointer[[sha256.Size]byte]
}

type policyFile struct {
	Rules []policyRule `json:"rules"`
}

type policyRule struct {
	Identities []string `json:"identities"`
	Methods    []string `json:"methods"`
	Tenants    []string `json:"tenants"`
}

var (
	policyMethod = regexp.MustCompile(`^(\*|/[A-Za-z0-9_.]+/(\*|[A-Za-z0-9_]+))$`)
	policyTenant = regexp.MustCompile(`^(\*|[a-z0-9][a-z0-9_-]{0,62})$`)
)

// LoadPolicy reads the policy file at path.
func LoadPolicy(path string, logger *slog.Logger) (*FilePolicy, error) {
	if logger == nil {
		logger = slog.Default()
	}
	p := &FilePolicy{path: path, logger: logger}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Reload reads the file again. When it does not parse, the policy in force
// stays and the error says why.
func (p *FilePolicy) Reload() error {
	data, err := os.ReadFile(p.path)
	if err != nil {
		return fmt.Errorf("policy %s: %w", p.path, err)
	}
	sum := sha256.Sum256(data)
	if old := p.sum.Load(); old != nil && *old == sum {
		return nil
	}
	rules, err := parsePolicy(data)
	if err != nil {
		return fmt.Errorf("policy %s: %w", p.path, err)
	}
	p.rules.Store(&rules)
	p.sum.Store(&sum)
	return nil
}

func parsePolicy(data []byte) ([]policyRule, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f policyFile
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	var errs []error
	for i, r := range f.Rules {
		if len(r.Identities) == 0 || len(r.Methods) == 0 || len(r.Tenants) == 0 {
			errs = append(errs, fmt.Errorf("rules[%d]: needs identities, methods and tenants", i))
		}
		for _, m := range r.Methods {
			if !policyMethod.MatchString(m) {
				errs = append(errs, fmt.Errorf("rules[%d]: method %q is not /package.Service/Method, /package.Service/* or *", i, m))
			}
		}
		for _, t := range r.Tenants {
			if !policyTenant.MatchString(t) {
				errs = append(errs, fmt.Errorf("rules[%d]: tenant %q is not a tenant id or *", i, t))
			}
		}
		for _, id := range r.Identities {
			if strings.TrimSpace(id) == "" {
				errs = append(errs, fmt.Errorf("rules[%d]: an identity is empty", i))
			}
		}
	}
	return f.Rules, errors.Join(errs...)
}

// Authorize implements Policy.
func (p *FilePolicy) Authorize(_ context.Context, r Request) error {
	for _, rule := range *p.rules.Load() {
		if rule.allows(r) {
			return nil
		}
	}
	tenant := apierror.Echo(r.TenantID)
	if tenant == "" {
		tenant = "(not tenant-scoped)"
	}
	return apierror.PermissionDenied(fmt.Sprintf("%s may not call %s for tenant %s", r.Identity.Name, r.FullMethod, tenant))
}

func (r policyRule) allows(req Request) bool {
	if req.Identity.Name == "" {
		return false
	}
	if !slices.Contains(r.Identities, req.Identity.Name) && !slices.Contains(r.Identities, "*") {
		return false
	}
	methodOK := slices.ContainsFunc(r.Methods, func(m string) bool {
		if m == "*" || m == req.FullMethod {
			return true
		}
		service, ok := strings.CutSuffix(m, "*")
		return ok && strings.HasPrefix(req.FullMethod, service)
	})
	if !methodOK {
		return false
	}
	if req.TenantID == "" {
		return slices.Contains(r.Tenants, "*")
	}
	return slices.Contains(r.Tenants, req.TenantID) || slices.Contains(r.Tenants, "*")
}

// Watch reloads the file every interval until ctx ends, so that a changed
// policy takes effect without a restart.
func (p *FilePolicy) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.Reload(); err != nil {
				p.logger.Error("authorization policy not reloaded; the previous one stays in force", "error", err)
			}
		}
	}
}
