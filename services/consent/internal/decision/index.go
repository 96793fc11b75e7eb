package decision

import (
	"hash/maphash"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// Index is the in-memory decision state of every tenant: its purposes and
// its subjects. It is safe for concurrent use; Check neither allocates nor
// waits for a writer of another subject, unless the two subjects share one
// of the tenant's 64 shards. Make one with NewIndex; the zero Index has no
// hash seed and is not usable.
type Index struct {
	// mu serialises the writers that swap tenants and purposes.
	mu sync.Mutex
	// tenants maps tenant id to tenant. The map is never changed once
	// stored; a new tenant swaps in a copy, so readers need no lock.
	tenants atomic.Pointer[map[string]*tenant]
	// seed spreads subjects over shards.
	seed maphash.Seed
}

// shardCount is a power of two, so a shard is picked with a mask. 64 makes
// collisions between concurrent readers and a writer rare on any machine
// Lethe runs on, at 4 KiB a tenant.
const shardCount = 64

// tenant is one tenant's state.
type tenant struct {
	// purposes maps purpose id to purpose; immutable once stored, replaced
	// whole on change, like Index.tenants.
	purposes atomic.Pointer[map[string]*Purpose]
	// country is the tenant's country (the registry's
	// TenantSettings.country), for subjects whose caller names none; nil
	// or empty when unknown.
	country atomic.Pointer[string]
	shards  [shardCount]shard
}

// shardState is one shard's subjects and their lock.
type shardState struct {
	mu       sync.RWMutex
	subjects map[string]*Subject
}

// shard pads a shardState to a cache line, so that readers locking
// neighbouring shards do not contend on one line (false sharing).
type shard struct {
	shardState
	_ [(64 - unsafe.Sizeof(shardState{})%64) % 64]byte
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	ix := &Index{seed: maphash.MakeSeed()}
	ix.tenants.Store(&map[string]*tenant{})
	return ix
}

// tenant returns the tenant with the given id, or nil.
func (ix *Index) tenant(id string) *tenant {
	if m := ix.tenants.Load(); m != nil {
		return (*m)[id]
	}
	return nil
}

// tenantLocked returns the tenant with the given id, creating it if absent.
// The caller holds ix.mu.
func (ix *Index) tenantLocked(id string) *tenant {
	if t := ix.tenant(id); t != nil {
		return t
	}
	t := &tenant{}
	t.purposes.Store(&map[string]*Purpose{})
	var next map[string]*tenant
	if m := ix.tenants.Load(); m != nil {
		next = maps.Clone(*m)
	}
	if next == nil {
		next = make(map[string]*tenant, 1)
	}
	next[strings.Clone(id)] = t
	ix.tenants.Store(&next)
	return t
}

// purpose returns the tenant's purpose with the given id, or nil.
func (t *tenant) purpose(id string) *Purpose {
	if m := t.purposes.Load(); m != nil {
		return (*m)[id]
	}
	return nil
}

// shard returns the shard holding the subject.
func (ix *Index) shard(t *tenant, subject string) *shardState {
	return &t.shards[maphash.String(ix.seed, subject)&(shardCount-1)].shardState
}

// PutPurpose creates or replaces a purpose of a tenant. Decisions made
// after it returns use the new purpose; consent records already held are
// kept and judged by it (a new MaterialSince asks for consent again).
func (ix *Index) PutPurpose(tenant string, p Purpose) {
	p = clonePurpose(p)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	t := ix.tenantLocked(tenant)
	next := maps.Clone(*t.purposes.Load())
	next[p.ID] = &p
	t.purposes.Store(&next)
}

// SetCountry records a tenant's country, ISO 3166-1 alpha-2, empty when
// it has none: Check judges the age of digital consent of a subject whose
// caller names no country by it.
func (ix *Index) SetCountry(tenant, country string) {
	ix.mu.Lock()
	t := ix.tenantLocked(tenant)
	ix.mu.Unlock()
	country = strings.Clone(country)
	t.country.Store(&country)
}

// Country returns a tenant's country as SetCountry recorded it, and
// whether it was recorded at all.
func (ix *Index) Country(tenant string) (string, bool) {
	t := ix.tenant(tenant)
	if t == nil {
		return "", false
	}
	if c := t.country.Load(); c != nil {
		return *c, true
	}
	return "", false
}

// Purpose returns a tenant's purpose.
func (ix *Index) Purpose(tenant, id string) (Purpose, bool) {
	t := ix.tenant(tenant)
	if t == nil {
		return Purpose{}, false
	}
	p := t.purpose(id)
	if p == nil {
		return Purpose{}, false
	}
	// A copy, so the caller cannot change what readers see.
	return clonePurpose(*p), true
}

// Purposes returns a tenant's purposes, by id.
func (ix *Index) Purposes(tenant string) []Purpose {
	t := ix.tenant(tenant)
	if t == nil {
		return nil
	}
	m := *t.purposes.Load()
	out := make([]Purpose, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, clonePurpose(*m[id]))
	}
	return out
}

// clonePurpose copies p so that it shares no slice with its source, and its
// strings no larger buffer.
func clonePurpose(p Purpose) Purpose {
	p.ID = strings.Clone(p.ID)
	p.CurrentNotice = strings.Clone(p.CurrentNotice)
	p.ExcludedRoles = slices.Clone(p.ExcludedRoles)
	return p
}

// Update applies fn to a subject of a tenant, creating both if absent, and
// makes the change visible to Check when fn returns. The service calls it
// after committing a change to storage. fn runs under the subject's shard
// lock: it must be quick, must not keep the *Subject, and must not call the
// Index. A subject left with no state is dropped.
func (ix *Index) Update(tenant, subject string, fn func(*Subject)) {
	t := ix.tenant(tenant)
	if t == nil {
		ix.mu.Lock()
		t = ix.tenantLocked(tenant)
		ix.mu.Unlock()
	}
	sh := ix.shard(t, subject)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s, ok := sh.subjects[subject]
	if !ok {
		s = &Subject{tenant: t}
	}
	fn(s)
	switch {
	case s.empty():
		delete(sh.subjects, subject)
	case !ok:
		if sh.subjects == nil {
			sh.subjects = make(map[string]*Subject)
		}
		sh.subjects[strings.Clone(subject)] = s
	}
}

// Check decides whether a subject's data may be processed for a tenant's
// purpose at now. A purpose the tenant has not declared is
// REASON_UNKNOWN_PURPOSE, never allowed. A subject whose caller names no
// country is taken to be in the tenant's (the only fallback: the age of
// digital consent fails closed without one). Check does not allocate.
func (ix *Index) Check(tenant, subject, purpose string, a Attributes, now time.Time) Decision {
	t := ix.tenant(tenant)
	if t == nil {
		return deny(consentv1.Reason_REASON_UNKNOWN_PURPOSE, "")
	}
	p := t.purpose(purpose)
	if p == nil {
		return deny(consentv1.Reason_REASON_UNKNOWN_PURPOSE, "")
	}
	a = t.withCountry(a)
	sh := ix.shard(t, subject)
	sh.mu.RLock()
	d := Decide(p, sh.subjects[subject], a, now)
	sh.mu.RUnlock()
	return d
}

// withCountry puts the tenant's country into attributes that name none.
func (t *tenant) withCountry(a Attributes) Attributes {
	if a.Country == "" {
		if c := t.country.Load(); c != nil {
			a.Country = *c
		}
	}
	return a
}

// Decide decides as Check does, on a subject and a purpose the caller
// built (from history, for a decision at a past time) rather than the
// index's: the tenant's country fills in a missing one as for Check.
func (ix *Index) Decide(tenant string, p *Purpose, s *Subject, a Attributes, at time.Time) Decision {
	if t := ix.tenant(tenant); t != nil {
		a = t.withCountry(a)
	}
	return Decide(p, s, a, at)
}

// Consent returns a subject's latest consent record for a purpose, as
// Subject.Consent does, for a service deciding what a new record ends.
func (ix *Index) Consent(tenant, subject, purpose string) (Consent, bool) {
	t := ix.tenant(tenant)
	if t == nil {
		return Consent{}, false
	}
	sh := ix.shard(t, subject)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	s := sh.subjects[subject]
	if s == nil {
		return Consent{}, false
	}
	return s.Consent(purpose)
}

// Covered returns, sorted, the ids of a tenant's purposes that an objection
// of the given scope stops now: the direct-marketing purposes, or those
// based on legitimate interests or a public task. Necessary purposes are
// left out, as Decide lets them go on. An objection to listed purposes
// covers its list, so for OBJECTION_SCOPE_PURPOSES Covered returns nil.
func (ix *Index) Covered(tenant string, scope eventsv1.ObjectionScope) []string {
	t := ix.tenant(tenant)
	if t == nil {
		return nil
	}
	var ids []string
	for id, p := range *t.purposes.Load() {
		if !p.Necessary && scopeCovers(scope, p) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}
