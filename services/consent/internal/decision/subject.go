package decision

import (
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"time"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// Subject is the decision state of one subject of one tenant: the latest
// consent record per purpose, the subject's objections and its active
// restrictions. The zero value is an empty subject. A Subject is not safe
// for concurrent use by itself; Index guards the ones it holds.
type Subject struct {
	// tenant interns purpose ids to the tenant's own strings, so that a
	// subject's records share them rather than each holding a copy; nil for
	// a Subject built outside an Index.
	tenant *tenant
	// tags[i] is purposeTag(records[i].purpose). Finding a purpose scans
	// these one or two cache lines and then reads one record, where a
	// search of the records themselves (a cache line each) would miss the
	// cache at every probe; with 100,000 subjects the records are rarely
	// cached.
	tags []uint32
	// records, in the order their purposes were first recorded.
	records      []record
	objections   []Objection
	restrictions []Restriction
}

// record is a Consent as the engine keeps it: times as Unix nanoseconds
// rather than time.Time (8 bytes instead of 24, and comparisons without
// method calls), which halves a subject's memory. A zero given time is kept
// as beforeAll and a zero ExpiresAt as never.
type record struct {
	purpose string
	id      ID
	action  consentv1.ConsentAction
	// givenAt is when the subject gave this record (Consent.GivenAt, or
	// RecordedAt when that is zero).
	givenAt int64
	// grantedAt is when the consent this record continues was granted: its
	// own givenAt for a GRANT, the extended grant's for a RENEW of a live
	// one.
	grantedAt int64
	// expiresAt is when a grant stops counting.
	expiresAt int64
}

const (
	// beforeAll stands for the zero time and for every time before 1678.
	beforeAll int64 = math.MinInt64
	// never stands for no expiry and every time after 2262. Finite times
	// stay strictly between the two, so now >= never is never true.
	never int64 = math.MaxInt64
	// maxUnixSeconds bounds the seconds whose nanoseconds fit in an int64.
	maxUnixSeconds = math.MaxInt64 / int64(time.Second)
)

// unixNano returns t in Unix nanoseconds, zero for the zero time, clamped
// to the range between beforeAll and never; time.Time.UnixNano is undefined
// outside it.
func unixNano(t time.Time, zero int64) int64 {
	if t.IsZero() {
		return zero
	}
	switch sec := t.Unix(); {
	case sec >= maxUnixSeconds:
		return never - 1
	case sec <= -maxUnixSeconds:
		return beforeAll + 1
	}
	return t.UnixNano()
}

// timeOf inverts unixNano, in UTC.
func timeOf(n int64) time.Time {
	if n == beforeAll || n == never {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// live reports whether r is a grant or renewal that has not expired at
// time n.
func (r *record) live(n int64) bool {
	return (r.action == actionGrant || r.action == actionRenew) && n < r.expiresAt
}

// tagSeed keys purposeTag. Tags live only in memory, so a per-process
// seed is enough.
var tagSeed = maphash.MakeSeed()

// purposeTag is a 32-bit hash of a purpose id. Equal tags are confirmed by
// comparing the ids, so a collision costs a comparison, never a wrong
// record.
func purposeTag(purposeID string) uint32 {
	return uint32(maphash.String(tagSeed, purposeID))
}

// find returns the index of the record for purposeID, or -1.
func (s *Subject) find(purposeID string) int {
	tag := purposeTag(purposeID)
	for i, t := range s.tags {
		// Interned ids share their bytes, so the comparison is a pointer
		// check.
		if t == tag && s.records[i].purpose == purposeID {
			return i
		}
	}
	return -1
}

// record returns the subject's record for purposeID, or nil.
func (s *Subject) record(purposeID string) *record {
	if i := s.find(purposeID); i >= 0 {
		return &s.records[i]
	}
	return nil
}

// SetConsent makes c the subject's latest consent record for purposeID.
// Records must come in the order the service committed them; a RENEW of a
// grant live when the renewal was given keeps that grant's time, and any
// other RENEW counts as a new grant (see the package documentation).
func (s *Subject) SetConsent(purposeID string, c Consent) {
	r := record{
		purpose:   s.intern(purposeID),
		id:        ParseID(strings.Clone(c.RecordID)),
		action:    c.Action,
		givenAt:   unixNano(c.given(), beforeAll),
		expiresAt: unixNano(c.ExpiresAt, never),
	}
	r.grantedAt = r.givenAt
	i := s.find(purposeID)
	if i < 0 {
		s.tags = grow(s.tags)
		s.records = grow(s.records)
		s.tags = append(s.tags, purposeTag(purposeID))
		s.records = append(s.records, r)
		return
	}
	if prev := &s.records[i]; r.action == actionRenew && prev.live(r.givenAt) {
		r.grantedAt = prev.grantedAt
	}
	s.records[i] = r
}

// grow makes room for one more element in steps of a quarter, at least 4,
// rather than append's doubling: a subject's purposes grow by a few at a
// time and never shrink, and doubling would leave a third of 100,000
// subjects' records unused.
func grow[E any](s []E) []E {
	if len(s) < cap(s) {
		return s
	}
	// Not slices.Grow, which appends and so doubles too.
	return append(make([]E, 0, len(s)+max(4, len(s)/4)), s...)
}

// Consent returns the subject's latest consent record for purposeID. Its
// times come back in UTC; RecordedAt is not kept and comes back zero.
func (s *Subject) Consent(purposeID string) (Consent, bool) {
	r := s.record(purposeID)
	if r == nil {
		return Consent{}, false
	}
	return r.consent(), true
}

// consent returns r as a Consent.
func (r *record) consent() Consent {
	return Consent{
		Action:    r.action,
		RecordID:  r.id.String(),
		GivenAt:   timeOf(r.givenAt),
		ExpiresAt: timeOf(r.expiresAt),
	}
}

// Continues reports whether the subject's latest record for purposeID is
// a renewal that extends an earlier grant, rather than one that stands on
// its own: the records a decision rests on are then that grant and its
// renewals.
func (s *Subject) Continues(purposeID string) bool {
	r := s.record(purposeID)
	return r != nil && r.action == actionRenew && r.grantedAt < r.givenAt
}

// AddObjection records an objection. Adding one with the id of an
// objection already held replaces it, so replaying history is harmless.
func (s *Subject) AddObjection(o Objection) {
	o.Purposes = s.internAll(o.Purposes)
	o.ID = strings.Clone(o.ID)
	o.id = ParseID(o.ID)
	for i := range s.objections {
		if s.objections[i].ID == o.ID {
			s.objections[i] = o
			return
		}
	}
	s.objections = append(s.objections, o)
}

// AddRestriction records an active restriction. Adding one with the id of
// a restriction already held replaces it.
func (s *Subject) AddRestriction(r Restriction) {
	r.Purposes = s.internAll(r.Purposes)
	r.ID = strings.Clone(r.ID)
	r.id = ParseID(r.ID)
	for i := range s.restrictions {
		if s.restrictions[i].ID == r.ID {
			s.restrictions[i] = r
			return
		}
	}
	s.restrictions = append(s.restrictions, r)
}

// LiftRestriction ends the restriction with the given id and reports
// whether the subject had it.
func (s *Subject) LiftRestriction(id string) bool {
	for i := range s.restrictions {
		if s.restrictions[i].ID == id {
			s.restrictions = slices.Delete(s.restrictions, i, i+1)
			return true
		}
	}
	return false
}

// Reset drops everything the subject holds, for a caller about to rebuild
// it from its history.
func (s *Subject) Reset() {
	*s = Subject{tenant: s.tenant}
}

// empty reports whether the subject holds nothing a decision reads.
func (s *Subject) empty() bool {
	return len(s.records) == 0 && len(s.objections) == 0 && len(s.restrictions) == 0
}

// factsFor reads what a decision on p needs of s into f; a nil s has
// nothing.
func (s *Subject) factsFor(p *Purpose, f *facts) {
	if s == nil {
		return
	}
	if r := s.record(p.ID); r != nil {
		f.rec, f.hasRecord = *r, true
	}
	f.restrictedBy, f.restricted = s.restriction(p.ID)
	f.objectedBy, f.objected = s.objection(p)
}

// restriction returns the id of the first active restriction covering
// purposeID.
func (s *Subject) restriction(purposeID string) (ID, bool) {
	for i := range s.restrictions {
		r := &s.restrictions[i]
		if len(r.Purposes) == 0 || slices.Contains(r.Purposes, purposeID) {
			return r.id, true
		}
	}
	return ID{}, false
}

// objection returns the id of the first objection covering p.
func (s *Subject) objection(p *Purpose) (ID, bool) {
	for i := range s.objections {
		o := &s.objections[i]
		covers := scopeCovers(o.Scope, p)
		if o.Scope == scopePurposes {
			// The purposes the service resolved when it recorded the
			// objection; weighing compelling legitimate grounds (Art. 21(1))
			// is a decision made before recording, not here.
			covers = slices.Contains(o.Purposes, p.ID)
		}
		if covers {
			return o.id, true
		}
	}
	return ID{}, false
}

// scopeCovers reports whether an objection of a scope that names no
// purposes covers p; false for OBJECTION_SCOPE_PURPOSES, whose purposes are
// listed.
func scopeCovers(scope eventsv1.ObjectionScope, p *Purpose) bool {
	switch scope {
	case scopeDirectMarketing:
		// Art. 21(2)-(3): absolute, whatever the purpose's basis.
		return p.DirectMarketing
	case scopeLegitimateInterests:
		// Art. 21(1) covers processing under Art. 6(1)(e) or (f).
		return p.Basis == basisLegitimateInterest || p.Basis == basisPublicTask
	}
	return false
}

// intern returns the tenant's own string for a purpose id it declares, and
// otherwise a copy, so a record never pins a larger buffer (a decoded
// request) the id may be a slice of.
func (s *Subject) intern(purposeID string) string {
	if s.tenant != nil {
		if id, _, ok := s.tenant.name(purposeID); ok {
			return id
		}
	}
	return strings.Clone(purposeID)
}

// internAll interns a list of purpose ids into a new slice, so the caller
// keeps its own.
func (s *Subject) internAll(ids []string) []string {
	if len(ids) == 0 {
		return nil
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = s.intern(id)
	}
	return out
}
