// Package storage keeps the registry's state in its bbolt file: tenants,
// tenant-defined categories, every version of every system (its history),
// and processing activities. Values are binary protobuf of the API's own
// messages, so what is stored is exactly what the API returns. Functions
// that need the caller's transaction say so with a Tx suffix.
package storage

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/store"
)

// The registry's buckets. Keys join ids (tokens without NUL bytes) with NUL.
var (
	// BucketTenants maps tenant id → Tenant.
	BucketTenants = store.Bucket("registry.tenants")
	// BucketCategories maps tenant, category id → Category (tenant-defined
	// only; built-in categories are data in the code).
	BucketCategories = store.Bucket("registry.categories")
	// BucketSystemVersions maps tenant, system id, effective time, sequence
	// → SystemVersion: a system's history in effective order.
	BucketSystemVersions = store.Bucket("registry.system_versions")
	// BucketActivities maps tenant, activity id → ProcessingActivity.
	BucketActivities = store.Bucket("registry.activities")
)

// Schema is the layout of registry.db.
var Schema = store.Schema{
	Service: "registry",
	Version: 1,
	Buckets: []store.Bucket{BucketTenants, BucketCategories, BucketSystemVersions, BucketActivities},
	// Only CreateTenant and UpdateTenant, audited mutations, write tenants:
	// a file holding one has audit entries.
	Audited: []store.Bucket{BucketTenants},
}

func get[M proto.Message](b *bolt.Bucket, key []byte, m M) (M, bool, error) {
	v := b.Get(key)
	if v == nil {
		return m, false, nil
	}
	if err := proto.Unmarshal(v, m); err != nil {
		return m, false, fmt.Errorf("storage: decode %T at %q: %w", m, key, err)
	}
	return m, true, nil
}

func put(b *bolt.Bucket, key []byte, m proto.Message) error {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

// TenantTx returns a tenant.
func TenantTx(tx *bolt.Tx, id string) (*registryv1.Tenant, bool, error) {
	return get(store.BucketTx(tx, BucketTenants), []byte(id), &registryv1.Tenant{})
}

// PutTenantTx stores a tenant.
func PutTenantTx(tx *bolt.Tx, t *registryv1.Tenant) error {
	return put(store.BucketTx(tx, BucketTenants), []byte(t.TenantId), t)
}

// CategoriesTx returns a tenant's own categories, by id.
func CategoriesTx(tx *bolt.Tx, tenant string) ([]*registryv1.Category, error) {
	var out []*registryv1.Category
	prefix := store.Key(tenant)
	c := store.BucketTx(tx, BucketCategories).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		cat := &registryv1.Category{}
		if err := proto.Unmarshal(v, cat); err != nil {
			return nil, fmt.Errorf("storage: decode category %q: %w", k, err)
		}
		out = append(out, cat)
	}
	return out, nil
}

// PutCategoryTx stores a tenant's category.
func PutCategoryTx(tx *bolt.Tx, tenant string, c *registryv1.Category) error {
	return put(store.BucketTx(tx, BucketCategories), append(store.Key(tenant), c.Id...), c)
}

// AddSystemVersionTx appends a version to a system's history. Versions are
// ordered by effective time, then by the order they were recorded.
func AddSystemVersionTx(tx *bolt.Tx, tenant string, v *registryv1.SystemVersion) error {
	b := store.BucketTx(tx, BucketSystemVersions)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	key := append(store.Key(tenant, v.System.SystemId), store.TimeKey(v.System.EffectiveAt.AsTime())...)
	return put(b, append(key, store.Uint64Key(seq)...), v)
}

// SystemHistoryTx returns a system's versions in effective order.
func SystemHistoryTx(tx *bolt.Tx, tenant, systemID string) ([]*registryv1.SystemVersion, error) {
	all, err := scanVersions(tx, store.Key(tenant, systemID))
	return all[systemID], err
}

// HistoriesTx returns the history of every system of a tenant, by system id.
func HistoriesTx(tx *bolt.Tx, tenant string) (map[string][]*registryv1.SystemVersion, error) {
	return scanVersions(tx, store.Key(tenant))
}

func scanVersions(tx *bolt.Tx, prefix []byte) (map[string][]*registryv1.SystemVersion, error) {
	out := map[string][]*registryv1.SystemVersion{}
	c := store.BucketTx(tx, BucketSystemVersions).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		sv := &registryv1.SystemVersion{}
		if err := proto.Unmarshal(v, sv); err != nil {
			return nil, fmt.Errorf("storage: decode system version %q: %w", k, err)
		}
		id := sv.GetSystem().GetSystemId()
		out[id] = append(out[id], sv)
	}
	return out, nil
}

// At returns the system as its history says it was at t: the last version
// effective at or before t, unless that version removed it.
func At(history []*registryv1.SystemVersion, t time.Time) (*registryv1.System, bool) {
	var at *registryv1.SystemVersion
	for _, v := range history {
		if v.System.EffectiveAt.AsTime().After(t) {
			break
		}
		at = v
	}
	if at == nil || at.Removed {
		return nil, false
	}
	return at.System, true
}

// Latest returns the last version of a history, nil for an empty one.
func Latest(history []*registryv1.SystemVersion) *registryv1.SystemVersion {
	if len(history) == 0 {
		return nil
	}
	return history[len(history)-1]
}

// ActivityTx returns a processing activity.
func ActivityTx(tx *bolt.Tx, tenant, id string) (*registryv1.ProcessingActivity, bool, error) {
	return get(store.BucketTx(tx, BucketActivities), append(store.Key(tenant), id...), &registryv1.ProcessingActivity{})
}

// PutActivityTx stores a processing activity.
func PutActivityTx(tx *bolt.Tx, tenant string, a *registryv1.ProcessingActivity) error {
	return put(store.BucketTx(tx, BucketActivities), append(store.Key(tenant), a.ActivityId...), a)
}

// DeleteActivityTx removes a processing activity.
func DeleteActivityTx(tx *bolt.Tx, tenant, id string) error {
	return store.BucketTx(tx, BucketActivities).Delete(append(store.Key(tenant), id...))
}

// ActivitiesTx returns every activity of a tenant, by id.
func ActivitiesTx(tx *bolt.Tx, tenant string) ([]*registryv1.ProcessingActivity, error) {
	var out []*registryv1.ProcessingActivity
	prefix := store.Key(tenant)
	c := store.BucketTx(tx, BucketActivities).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		a := &registryv1.ProcessingActivity{}
		if err := proto.Unmarshal(v, a); err != nil {
			return nil, fmt.Errorf("storage: decode activity %q: %w", k, err)
		}
		out = append(out, a)
	}
	return out, nil
}
