package registry

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/registry/internal/storage"
)

// A tenant's consent shard names the consent writer that holds its
// consent state (docs/scale.md, "Consent writers"). The assignment is the
// registry's: explicit when the tenant file or the CreateTenant call
// names a shard (a large tenant placed on a shard of its own), otherwise
// the shard with the fewest tenants among Options.ConsentShards, the
// lowest-numbered on a tie. Fewest tenants, not a hash of the tenant id:
// a hash spreads tenants evenly only in expectation, and a new shard
// added to a hash would claim existing tenants, which is a migration;
// counting keeps every existing assignment and fills a new shard first.
// Tenants differ in size by orders of magnitude, so the count is a weak
// proxy for load; the explicit assignment is there for the large ones.

// maxConsentShards bounds Options.ConsentShards by the names the proto
// allows.
const maxConsentShards = shardrouter.MaxShards

// assignShardTx returns the shard a new tenant is put on: the one it
// names, or the least-loaded of the configured shards.
func (s *Service) assignShardTx(tx *bolt.Tx, named string) (string, error) {
	if named != "" {
		return named, nil
	}
	if s.opts.ConsentShards == 1 {
		return shardrouter.DefaultShard, nil
	}
	counts := make([]int, s.opts.ConsentShards)
	err := store.BucketTx(tx, storage.BucketTenants).ForEach(func(k, v []byte) error {
		t := &registryv1.Tenant{}
		if err := proto.Unmarshal(v, t); err != nil {
			return fmt.Errorf("registry: decode tenant %q: %w", k, err)
		}
		for i := range counts {
			if shardrouter.Name(i) == shardrouter.Of(t.ConsentShard) {
				counts[i]++
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	least := 0
	for i, n := range counts {
		if n < counts[least] {
			least = i
		}
	}
	return shardrouter.Name(least), nil
}

// keepShard refuses an update that moves the tenant to another consent
// shard and returns the shard the tenant keeps. The tenant's consent
// records, evidence and revisions live in the old shard's store; a new
// name alone would send its calls to a writer that has none of them.
func keepShard(old *registryv1.Tenant, named string) (string, error) {
	have := shardrouter.Of(old.ConsentShard)
	if named != "" && named != have {
		return "", apierror.FailedPrecondition(apierror.ReasonConsentShardMove, fmt.Sprintf(
			"tenant %q is on consent shard %s; moving it to %s is a migration (docs/scale.md, \"Moving a tenant\"), not an update",
			old.TenantId, have, named)).WithMetadata(map[string]string{"shard": have})
	}
	return have, nil
}

// withShard returns t as callers see it: a tenant registered before shards
// existed is on the default shard.
func withShard(t *registryv1.Tenant) *registryv1.Tenant {
	if t != nil && t.ConsentShard == "" {
		t.ConsentShard = shardrouter.DefaultShard
	}
	return t
}
