package subscriber

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
)

// DSARIdentifiers is the IdentifierFetcher for events caused by data-subject
// requests: it asks the DSAR service over conn (GetIdentifiers, the claim
// check) for the subject's identifiers, as the subscribing system. conn
// must authenticate as that system (its client certificate or token); the
// DSAR service answers only while the system's task for the request is
// open.
func DSARIdentifiers(conn grpc.ClientConnInterface) IdentifierFetcher {
	return dsarIdentifiers{rpc: dsarv1.NewDsarServiceClient(conn)}
}

type dsarIdentifiers struct{ rpc dsarv1.DsarServiceClient }

func (d dsarIdentifiers) FetchIdentifiers(ctx context.Context, ev *Event) ([]*commonv1.Identifier, error) {
	cause := ev.Cause()
	if cause.GetKind() != commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST {
		return nil, fmt.Errorf("subscriber: event %s was caused by %s, not a data-subject request: it has no identifiers to fetch", ev.ID(), cause.GetKind())
	}
	resp, err := d.rpc.GetIdentifiers(ctx, &dsarv1.GetIdentifiersRequest{
		TenantId: ev.Proto().GetTenantId(), DsarId: cause.GetId(), SystemId: ev.sub.cfg.SystemID,
	})
	if err != nil {
		return nil, err
	}
	return resp.GetIdentifiers(), nil
}
