package decision

import (
	"encoding/binary"
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
	// seed spreads subjects over shards and keys their tables.
	seed maphash.Seed
}

// shardCount is a power of two, so a shard is picked with a mask. 64 makes
// collisions between concurrent readers and a writer rare on any machine
// Lethe runs on, at 8 KiB a tenant.
const shardCount = 64

// tenant is one tenant's state.
type tenant struct {
	// purposes maps purpose id to purpose; immutable once stored, replaced
	// whole on change, like Index.tenants.
	purposes atomic.Pointer[map[string]*purposeEntry]
	// names numbers every purpose id the tenant's subjects name, declared
	// or not, so that their state holds a small index rather than a
	// string. Append-only, swapped whole like purposes; namesMu serialises
	// the writers that add to it.
	names   atomic.Pointer[nameTable]
	namesMu sync.Mutex
	// country is the tenant's country (the registry's
	// TenantSettings.country), for subjects whose caller names none; nil
	// or empty when unknown.
	country atomic.Pointer[string]
	// revision is the latest change of the tenant applied (SetRevision).
	revision atomic.Uint64
	shards   [shardCount]shard
}

// purposeEntry is a declared purpose and its index in the tenant's names.
type purposeEntry struct {
	Purpose
	idx uint64
}

// nameTable is a tenant's purpose ids by index and the reverse.
type nameTable struct {
	ids []string
	idx map[string]uint64
}

// shardState is one shard's subjects and their lock. Each subject's state
// is one blob (codec.go) in arena, prefixed with its length; table finds
// it by the subject id's 64-bit hash. The arena is append-only: a changed
// subject's new blob is appended and the old one becomes garbage, which a
// compaction into a new arena drops once it is half the arena. Neither the
// arena nor the tables hold pointers, so the garbage collector does not
// scan millions of subjects, and a subject costs its blob and a table slot
// rather than a dozen allocations.
type shardState struct {
	mu sync.RWMutex
	// table maps a subject id's hash to its blob's offset.
	table map[uint64]uint64
	// spill holds the rare subjects whose hash another subject of the
	// shard already has in table.
	spill   map[string]uint64
	arena   []byte
	garbage int
	// cuts are the open cuts (cut.go) that have not written the shard
	// yet; each keeps the subjects changed since it was taken.
	cuts []*shardCut
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

// newTenant returns an empty tenant.
func newTenant() *tenant {
	t := &tenant{}
	t.purposes.Store(&map[string]*purposeEntry{})
	t.names.Store(&nameTable{idx: map[string]uint64{}})
	return t
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
	t := newTenant()
	ix.installLocked(id, t)
	return t
}

// installLocked makes t the tenant id, replacing any before it. The
// caller holds ix.mu.
func (ix *Index) installLocked(id string, t *tenant) {
	var next map[string]*tenant
	if m := ix.tenants.Load(); m != nil {
		next = maps.Clone(*m)
	}
	if next == nil {
		next = make(map[string]*tenant, 1)
	}
	next[strings.Clone(id)] = t
	ix.tenants.Store(&next)
}

// tenantOrNew returns the tenant with the given id, creating it if absent.
func (ix *Index) tenantOrNew(id string) *tenant {
	if t := ix.tenant(id); t != nil {
		return t
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.tenantLocked(id)
}

// purpose returns the tenant's purpose with the given id, or nil.
func (t *tenant) purpose(id string) *purposeEntry {
	if m := t.purposes.Load(); m != nil {
		return (*m)[id]
	}
	return nil
}

// name returns the interned purpose id and its index, if the tenant has
// numbered it.
func (t *tenant) name(id string) (string, uint64, bool) {
	names := t.names.Load()
	i, ok := names.idx[id]
	if !ok {
		return "", 0, false
	}
	return names.ids[i], i, true
}

// nameIndex returns a purpose id's index, numbering it if new.
func (t *tenant) nameIndex(id string) uint64 {
	if _, i, ok := t.name(id); ok {
		return i
	}
	t.namesMu.Lock()
	defer t.namesMu.Unlock()
	old := t.names.Load()
	if i, ok := old.idx[id]; ok {
		return i
	}
	id = strings.Clone(id)
	next := &nameTable{ids: append(slices.Clip(old.ids), id), idx: maps.Clone(old.idx)}
	i := uint64(len(old.ids))
	next.idx[id] = i
	t.names.Store(next)
	return i
}

// shard returns the shard holding a subject of the given hash.
func (t *tenant) shard(h uint64) *shardState {
	return &t.shards[h&(shardCount-1)].shardState
}

// hash returns a subject id's hash, which picks its shard and keys it there.
func (ix *Index) hash(subject string) uint64 {
	return maphash.String(ix.seed, subject)
}

// blob returns the blob at offset off of the arena.
func (sh *shardState) blob(off uint64) []byte {
	n, k := binary.Uvarint(sh.arena[off:])
	start := off + uint64(k)
	return sh.arena[start : start+n : start+n]
}

// size returns the bytes the blob at off takes in the arena.
func (sh *shardState) size(off uint64) int {
	n, k := binary.Uvarint(sh.arena[off:])
	return k + int(n)
}

// find returns the offset of a subject's blob.
func (sh *shardState) find(h uint64, subject string) (uint64, bool) {
	if off, ok := sh.table[h]; ok && blobSubject(sh.blob(off)) == subject {
		return off, true
	}
	if len(sh.spill) > 0 {
		off, ok := sh.spill[subject]
		return off, ok
	}
	return 0, false
}

// appendBlob appends a blob to the arena and returns its offset.
func (sh *shardState) appendBlob(blob []byte) uint64 {
	off := uint64(len(sh.arena))
	sh.arena = binary.AppendUvarint(sh.arena, uint64(len(blob)))
	sh.arena = append(sh.arena, blob...)
	return off
}

// put stores a subject's new blob, replacing its old one.
func (sh *shardState) put(h uint64, subject string, blob []byte) {
	off := sh.appendBlob(blob)
	if sh.table == nil {
		sh.table = make(map[uint64]uint64)
	}
	if old, ok := sh.table[h]; !ok {
		sh.table[h] = off
	} else if blobSubject(sh.blob(old)) == subject {
		sh.garbage += sh.size(old)
		sh.table[h] = off
	} else {
		if old, ok := sh.spill[subject]; ok {
			sh.garbage += sh.size(old)
		}
		if sh.spill == nil {
			sh.spill = make(map[string]uint64)
		}
		sh.spill[strings.Clone(subject)] = off
	}
	sh.compact()
}

// insert adds a subject the shard does not hold yet, with one look-up of
// its hash; it reports false, and adds nothing, when the shard holds it.
func (sh *shardState) insert(h uint64, subject string, blob []byte) bool {
	if sh.table == nil {
		sh.table = make(map[uint64]uint64)
	}
	old, taken := sh.table[h]
	if taken && blobSubject(sh.blob(old)) == subject {
		return false
	}
	if _, ok := sh.spill[subject]; ok {
		return false
	}
	off := sh.appendBlob(blob)
	if !taken {
		sh.table[h] = off
		return true
	}
	if sh.spill == nil {
		sh.spill = make(map[string]uint64)
	}
	sh.spill[strings.Clone(subject)] = off
	return true
}

// remove drops a subject. A spilled subject of the same hash moves into
// table in its place, so that find's first probe stays the only one for
// all but colliding subjects.
func (sh *shardState) remove(ix *Index, h uint64, subject string) {
	if off, ok := sh.table[h]; ok && blobSubject(sh.blob(off)) == subject {
		sh.garbage += sh.size(off)
		delete(sh.table, h)
		for other, off := range sh.spill {
			if ix.hash(other) == h {
				sh.table[h] = off
				delete(sh.spill, other)
				break
			}
		}
	} else if off, ok := sh.spill[subject]; ok {
		sh.garbage += sh.size(off)
		delete(sh.spill, subject)
	}
	sh.compact()
}

// compact copies the live blobs into a new arena once garbage is half of
// it. The old arena is left as it was: decisions and ids read from it
// (codec.go's text) stay valid until they are dropped.
func (sh *shardState) compact() {
	if sh.garbage < 1<<16 || sh.garbage < len(sh.arena)/2 {
		return
	}
	old := sh.arena
	sh.arena = make([]byte, 0, len(old)-sh.garbage)
	for h, off := range sh.table {
		sh.table[h] = sh.appendBlob(blobAt(old, off))
	}
	for s, off := range sh.spill {
		sh.spill[s] = sh.appendBlob(blobAt(old, off))
	}
	sh.garbage = 0
}

// blobAt returns the blob at offset off of an arena.
func blobAt(arena []byte, off uint64) []byte {
	n, k := binary.Uvarint(arena[off:])
	return arena[off+uint64(k) : off+uint64(k)+n]
}

// PutPurpose creates or replaces a purpose of a tenant. Decisions made
// after it returns use the new purpose; consent records already held are
// kept and judged by it (a new MaterialSince asks for consent again).
func (ix *Index) PutPurpose(tenant string, p Purpose) {
	p = clonePurpose(p)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	t := ix.tenantLocked(tenant)
	t.putPurpose(p)
}

// putPurpose stores p, numbering its id; the caller serialises it with
// other writers of purposes.
func (t *tenant) putPurpose(p Purpose) {
	e := &purposeEntry{Purpose: p, idx: t.nameIndex(p.ID)}
	e.ID, _, _ = t.name(p.ID)
	next := maps.Clone(*t.purposes.Load())
	next[e.ID] = e
	t.purposes.Store(&next)
}

// SetCountry records a tenant's country, ISO 3166-1 alpha-2, empty when
// it has none: Check judges the age of digital consent of a subject whose
// caller names no country by it.
func (ix *Index) SetCountry(tenant, country string) {
	t := ix.tenantOrNew(tenant)
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

// SetRevision records that the tenant's state includes every change up to
// revision rev (the service's per-tenant change revision): a snapshot
// says which revision it covers by it. Revisions only grow; a lower one
// is ignored.
func (ix *Index) SetRevision(tenant string, rev uint64) {
	t := ix.tenantOrNew(tenant)
	for {
		cur := t.revision.Load()
		if rev <= cur || t.revision.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// Revision returns the revision SetRevision last recorded for a tenant,
// or what the snapshot it was read from covered; 0 for none.
func (ix *Index) Revision(tenant string) uint64 {
	if t := ix.tenant(tenant); t != nil {
		return t.revision.Load()
	}
	return 0
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
	return clonePurpose(p.Purpose), true
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
		out = append(out, clonePurpose(m[id].Purpose))
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
	t := ix.tenantOrNew(tenant)
	h := ix.hash(subject)
	sh := t.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := &Subject{tenant: t}
	off, found := sh.find(h, subject)
	for _, c := range sh.cuts {
		c.keep(sh, subject, off, found)
	}
	if found {
		if _, err := decodeSubject(sh.blob(off), t.names.Load().ids, s); err != nil {
			// The Index wrote the blob itself; a failure is a bug, not
			// bad input, and answering from part of a subject would be
			// wrong.
			panic(err)
		}
	}
	fn(s)
	if s.empty() {
		if found {
			sh.remove(ix, h, subject)
		}
		return
	}
	sh.put(h, subject, encodeSubject(nil, subject, s, t.nameIndex))
}

// Check decides whether a subject's data may be processed for a tenant's
// purpose at now. A purpose the tenant has not declared is
// REASON_UNKNOWN_PURPOSE, never allowed. A subject whose caller names no
// country is taken to be in the tenant's (the only fallback: the age of
// digital consent fails closed without one). Check does not allocate.
func (ix *Index) Check(tenant, subject, purpose string, a Attributes, now time.Time) Decision {
	t := ix.tenant(tenant)
	if t == nil {
		return deny(consentv1.Reason_REASON_UNKNOWN_PURPOSE, ID{})
	}
	p := t.purpose(purpose)
	if p == nil {
		return deny(consentv1.Reason_REASON_UNKNOWN_PURPOSE, ID{})
	}
	a = t.withCountry(a)
	h := ix.hash(subject)
	sh := t.shard(h)
	var f facts
	sh.mu.RLock()
	if off, ok := sh.find(h, subject); ok {
		factsOf(sh.blob(off), &p.Purpose, p.idx, &f)
	}
	sh.mu.RUnlock()
	return decide(&p.Purpose, &f, a, now)
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
	_, idx, ok := t.name(purpose)
	if !ok {
		return Consent{}, false
	}
	h := ix.hash(subject)
	sh := t.shard(h)
	var f facts
	sh.mu.RLock()
	if off, ok := sh.find(h, subject); ok {
		factsOf(sh.blob(off), &Purpose{ID: purpose}, idx, &f)
	}
	sh.mu.RUnlock()
	if !f.hasRecord {
		return Consent{}, false
	}
	return f.rec.consent(), true
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
		if !p.Necessary && scopeCovers(scope, &p.Purpose) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Stats describe what an Index holds, for metrics and benchmarks.
type Stats struct {
	// Tenants and Subjects count the tenants and the subjects with state.
	Tenants, Subjects int
	// StateBytes is the memory subjects' state takes in the shards'
	// arenas, GarbageBytes the part of it that replaced state still takes
	// until the shard compacts.
	StateBytes, GarbageBytes int64
}

// Stats returns what the Index holds now. It takes each shard's read lock
// in turn.
func (ix *Index) Stats() Stats {
	var st Stats
	for _, t := range *ix.tenants.Load() {
		st.Tenants++
		for i := range t.shards {
			sh := &t.shards[i].shardState
			sh.mu.RLock()
			st.Subjects += len(sh.table) + len(sh.spill)
			st.StateBytes += int64(cap(sh.arena))
			st.GarbageBytes += int64(sh.garbage)
			sh.mu.RUnlock()
		}
	}
	return st
}
