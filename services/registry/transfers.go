package registry

import (
	"context"

	bolt "go.etcd.io/bbolt"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/services/registry/internal/transfer"
)

// ListTransferFindings implements RegistryService.
func (s *Service) ListTransferFindings(_ context.Context, req *registryv1.ListTransferFindingsRequest) (*registryv1.ListTransferFindingsResponse, error) {
	now := s.now()
	resp := &registryv1.ListTransferFindingsResponse{}
	err := s.view(func(tx *bolt.Tx) error {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return err
		}
		systems, err := currentSystemsTx(tx, req.TenantId, now)
		if err != nil {
			return err
		}
		for _, sys := range systems {
			resp.Findings = append(resp.Findings, s.facts.Check(sys, now)...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	transfer.SortFindings(resp.Findings)
	return resp, nil
}
