package decision

import (
	"io"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
)

// A Cut is the state of some or all of an Index's tenants at one instant,
// written out (WriteSnapshot) while the Index goes on changing and Check
// goes on answering.
//
// Taking one costs a lock of each shard in turn and no copy: arenas are
// append-only, so a subject's state at the cut is still where it was
// until the subject changes. The first Update of a subject in a shard the
// cut has not written yet keeps the subject's blob as it was (or that it
// had none) for the cut, about 200 bytes a subject; once the shard is
// written, its updates keep nothing more. The memory a cut costs is thus
// that of the subjects changed while it is written, not a second index.
//
// What the cut holds of a tenant is its state when Cut locked the
// tenant's shards, with the revision the tenant had just before. When the
// caller keeps the Index from changing while Cut runs — the consent
// service holds its sequencer, under which it applies a change and sets
// its revision together — the cut is exact: every tenant's state holds
// every change up to its revision and none after. A read replica that
// restores it and applies the changes after each revision then rebuilds
// the writer's state change by change, which it must (a renewal's effect
// depends on the record it renews).
type Cut struct {
	tenants []*tenantCut
	// keptSubjects and keptBytes count what shards kept for the cut over
	// its life: a bound on what it held at any time.
	keptSubjects, keptBytes atomic.Int64
}

// tenantCut is a tenant as a Cut holds it. Its shards' subjects are read
// at write time, through each shard's shardCut.
type tenantCut struct {
	id              string
	t               *tenant
	revision        uint64
	country         *string
	subjects, bytes int
	purposes        map[string]*purposeEntry
	names           *nameTable
	shards          [shardCount]*shardCut
}

// shardCut is what a shard keeps for an open cut: the blob, length
// prefixed as in the arena, that each subject changed since the cut had
// then, nil for a subject it did not hold. The shard's lock guards it.
type shardCut struct {
	before map[string][]byte
	cut    *Cut
}

// keep remembers a subject's state before its first change since the cut:
// the arena's bytes at off when found, none otherwise.
func (c *shardCut) keep(sh *shardState, subject string, off uint64, found bool) {
	if _, kept := c.before[subject]; kept {
		return
	}
	var blob []byte
	if found {
		blob = slices.Clone(sh.arena[off : off+uint64(sh.size(off))])
	}
	if c.before == nil {
		c.before = map[string][]byte{}
	}
	c.before[strings.Clone(subject)] = blob
	c.cut.keptSubjects.Add(1)
	c.cut.keptBytes.Add(int64(len(subject) + len(blob)))
}

// Cut takes a cut of the named tenants, or of every tenant when none is
// named, in the order of their ids; a named tenant the Index does not
// hold is cut empty. Close it once written, written or not: until then,
// changed subjects are kept for it. Several cuts may be open at once.
func (ix *Index) Cut(tenants ...string) *Cut {
	if len(tenants) == 0 {
		tenants = slices.Sorted(maps.Keys(*ix.tenants.Load()))
	} else {
		// In order, once each: SetCountry searches them, and a snapshot
		// holds a tenant once.
		tenants = slices.Compact(slices.Sorted(slices.Values(tenants)))
	}
	c := &Cut{}
	for _, id := range tenants {
		t := ix.tenant(id)
		if t == nil {
			t = newTenant()
		}
		tc := &tenantCut{id: id, t: t, revision: t.revision.Load(), country: t.country.Load()}
		for i := range t.shards {
			sh := &t.shards[i].shardState
			sc := &shardCut{cut: c}
			sh.mu.Lock()
			sh.cuts = append(sh.cuts, sc)
			tc.subjects += len(sh.table) + len(sh.spill)
			tc.bytes += len(sh.arena) - sh.garbage
			sh.mu.Unlock()
			tc.shards[i] = sc
		}
		// After the shards: a blob the cut holds names only purposes
		// numbered before it was written, and names only grow. Purposes
		// before names, as every purpose is numbered before it is stored.
		tc.purposes = *t.purposes.Load()
		tc.names = t.names.Load()
		c.tenants = append(c.tenants, tc)
	}
	return c
}

// SetCountry makes country the tenant's country in the cut, adding the
// tenant, empty, if the cut does not hold it. A country is no change of
// a tenant's log and has no revision, so a caller that knows the country
// from its store as of the cut sets it here.
func (c *Cut) SetCountry(tenant, country string) {
	i, found := slices.BinarySearchFunc(c.tenants, tenant, func(tc *tenantCut, id string) int { return strings.Compare(tc.id, id) })
	if !found {
		t := newTenant()
		c.tenants = slices.Insert(c.tenants, i, &tenantCut{id: tenant, t: t, purposes: *t.purposes.Load(), names: t.names.Load()})
	}
	c.tenants[i].country = &country
}

// WriteSnapshot writes the cut to w in the snapshot format (snapshot.go),
// and releases each shard's kept subjects as soon as it is written.
func (c *Cut) WriteSnapshot(w io.Writer) error {
	sw := newSnapshotWriter(w)
	for _, tc := range c.tenants {
		sw.head(tc.id, tc.revision, tc.country, tc.subjects, tc.bytes)
		for i := range tc.t.shards {
			sh := &tc.t.shards[i].shardState
			if sc := tc.shards[i]; sc != nil {
				sh.mu.RLock()
				sw.e.buf = sh.appendCut(sw.e.buf, sc)
				sh.mu.RUnlock()
				sh.release(sc)
				tc.shards[i] = nil
			}
			if err := sw.flush(); err != nil {
				return err
			}
		}
		sw.tail(tc.purposes, tc.names)
	}
	return sw.close()
}

// Revisions returns the revision of each tenant the cut holds: what its
// snapshot covers of the tenant.
func (c *Cut) Revisions() map[string]uint64 {
	revs := make(map[string]uint64, len(c.tenants))
	for _, tc := range c.tenants {
		revs[tc.id] = tc.revision
	}
	return revs
}

// Kept returns how many subjects changed while the cut was open, which
// the shards kept for it, and the bytes they kept: what the cut cost in
// memory beyond the index, at most.
func (c *Cut) Kept() (subjects, bytes int64) { return c.keptSubjects.Load(), c.keptBytes.Load() }

// Close releases what the cut still keeps. It is safe to call twice.
func (c *Cut) Close() {
	for _, tc := range c.tenants {
		for i, sc := range tc.shards {
			if sc != nil {
				tc.t.shards[i].shardState.release(sc)
				tc.shards[i] = nil
			}
		}
	}
}

// appendCut appends the blobs the shard held at cut c: those of subjects
// unchanged since, then those kept of the changed ones. The caller holds
// the shard's lock.
func (sh *shardState) appendCut(dst []byte, c *shardCut) []byte {
	unchanged := func(off uint64) bool {
		if len(c.before) == 0 {
			return true
		}
		_, changed := c.before[blobSubject(sh.blob(off))]
		return !changed
	}
	for _, off := range sh.table {
		if unchanged(off) {
			dst = append(dst, sh.arena[off:off+uint64(sh.size(off))]...)
		}
	}
	for _, off := range sh.spill {
		if unchanged(off) {
			dst = append(dst, sh.arena[off:off+uint64(sh.size(off))]...)
		}
	}
	for _, blob := range c.before {
		dst = append(dst, blob...)
	}
	return dst
}

// release drops an open cut from the shard.
func (sh *shardState) release(c *shardCut) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i := slices.Index(sh.cuts, c); i >= 0 {
		sh.cuts = slices.Delete(sh.cuts, i, i+1)
	}
	if len(sh.cuts) == 0 {
		sh.cuts = nil
	}
}
