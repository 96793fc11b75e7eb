// Package shardrouter sends a tenant's consent calls to the consent writer
// of the tenant's shard. The registry assigns every tenant a consent shard
// (lethe.registry.v1.Tenant.consent_shard: "s0", "s1", ...); each consent
// writer serves the tenants of one shard and refuses the others with
// FailedPrecondition WRONG_SHARD, naming the right one. A Router asks the
// registry once per tenant, keeps the answer for a TTL, dials each
// shard's address from a template ("consent-{shard}:9090") and learns
// from a WRONG_SHARD answer at once, so a caller needs neither the
// registry's watch nor a restart to follow an assignment.
package shardrouter

import (
	"strconv"
	"strings"
)

// DefaultShard is the shard of a tenant the registry assigned none (every
// tenant registered before shards existed) and the shard a consent writer
// serves unless told otherwise.
const DefaultShard = "s0"

// MaxShards bounds the shards a registry assigns to: shard names are "s0"
// to "s999", as lethe.registry.v1.Tenant.consent_shard's rule allows.
const MaxShards = 1000

// Name is the name of the i-th shard, "s<i>".
func Name(i int) string { return "s" + strconv.Itoa(i) }

// Valid reports whether s is a shard name: "s" and a number below
// MaxShards without leading zeros.
func Valid(s string) bool {
	n, ok := strings.CutPrefix(s, "s")
	if !ok || n == "" || len(n) > 3 || (len(n) > 1 && n[0] == '0') {
		return false
	}
	_, err := strconv.Atoi(n)
	return err == nil && !strings.ContainsAny(n, "+-")
}

// Of returns shard, or DefaultShard when it is empty: the one reading of a
// tenant's consent_shard.
func Of(shard string) string {
	if shard == "" {
		return DefaultShard
	}
	return shard
}

// ShardPlaceholder is what an address template names a shard with.
const ShardPlaceholder = "{shard}"

// Address returns the address template with the shard in place of
// ShardPlaceholder.
func Address(template, shard string) string {
	return strings.ReplaceAll(template, ShardPlaceholder, shard)
}
