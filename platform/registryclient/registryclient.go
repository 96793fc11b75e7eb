// Package registryclient is how the consent, retention and DSAR services
// learn from the registry which systems must answer an event they publish:
// the registry's routing becomes the task tracker's expectations.
package registryclient

import (
	"context"

	"google.golang.org/grpc"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/tasks"
)

// Client asks the registry.
type Client struct {
	rpc registryv1.RegistryServiceClient
}

// New returns a client over a connection to the registry.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{rpc: registryv1.NewRegistryServiceClient(conn)}
}

// Scope says what an event concerns: named categories (matched
// hierarchically), all of a subject's data, or processing for a purpose.
type Scope struct {
	Categories []string
	All        bool
	Purpose    string
}

// Expect returns the systems of tenant that must answer an event of scope,
// as the task tracker expects them.
func (c *Client) Expect(ctx context.Context, tenant string, scope Scope) ([]tasks.Expect, error) {
	req := &registryv1.RouteRequest{TenantId: tenant, AllCategories: scope.All, PurposeId: scope.Purpose}
	for _, id := range scope.Categories {
		req.Categories = append(req.Categories, &commonv1.DataCategory{Id: id})
	}
	resp, err := c.rpc.Route(ctx, req)
	if err != nil {
		return nil, err
	}
	out := make([]tasks.Expect, 0, len(resp.Systems))
	for _, s := range resp.Systems {
		out = append(out, tasks.Expect{SystemID: s.SystemId, Mode: s.AnswerMode})
	}
	return out, nil
}
