package decision

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The benchmark tenant: 100,000 subjects and 20 purposes, each subject
// with records for most purposes, from a fixed seed.
const (
	benchSubjects = 100_000
	benchQueries  = 1 << 16 // a power of two, indexed with a mask
)

// benchPurposes is a realistic mix: necessary cookies, consent with and
// without lifetimes, excluded roles, digital consent age, GPC and a
// material notice change; legitimate interests, contract, legal obligation.
var benchPurposes = []Purpose{
	{ID: "cookies.necessary", Basis: basisLegitimateInterest, Necessary: true},
	{ID: "account.security", Basis: basisContract, Necessary: true},
	{ID: "cookies.functional", Basis: basisConsent, Lifetime: 730 * day},
	{ID: "cookies.statistics", Basis: basisConsent, Lifetime: 365 * day, GPCOptOut: true},
	{ID: "cookies.marketing", Basis: basisConsent, Lifetime: 730 * day, DirectMarketing: true, GPCOptOut: true, ExcludedRoles: []string{"student"}},
	{ID: "marketing.email", Basis: basisConsent, DirectMarketing: true, MinimumAge: 13, DigitalConsentAge: true, ExcludedRoles: []string{"student"}},
	{ID: "marketing.sms", Basis: basisConsent, DirectMarketing: true, DigitalConsentAge: true, Lifetime: 365 * day},
	{ID: "personalisation", Basis: basisConsent, DigitalConsentAge: true, Lifetime: 730 * day, MaterialSince: at(-200)},
	{ID: "ads.retargeting", Basis: basisConsent, DirectMarketing: true, GPCOptOut: true, Lifetime: 180 * day, ExcludedRoles: []string{"student", "minor"}},
	{ID: "research.surveys", Basis: basisConsent, MinimumAge: 16},
	{ID: "newsletter.product", Basis: basisConsent, DirectMarketing: true},
	{ID: "partners.sharing", Basis: basisConsent, GPCOptOut: true, Lifetime: 365 * day, MaterialSince: at(-30)},
	{ID: "product.analytics", Basis: basisLegitimateInterest},
	{ID: "fraud.prevention", Basis: basisLegitimateInterest},
	{ID: "marketing.postal", Basis: basisLegitimateInterest, DirectMarketing: true},
	{ID: "service.improvement", Basis: basisLegitimateInterest, GPCOptOut: true},
	{ID: "course.messages", Basis: basisContract},
	{ID: "billing", Basis: basisContract},
	{ID: "support", Basis: basisContract},
	{ID: "bookkeeping", Basis: basisLegalObligation},
}

// benchQuery is one Check.
type benchQuery struct {
	subject, purpose string
	a                Attributes
}

var (
	benchOnce    sync.Once
	benchIndex   *Index
	benchAsked   []benchQuery
	benchHot     []benchQuery
	benchNow     = at(400)
	benchHeapMiB float64
)

// benchSetup builds the index once for every benchmark.
func benchSetup(b *testing.B) {
	benchOnce.Do(func() {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)

		rng := rand.New(rand.NewPCG(2025, 3))
		ix := NewIndex()
		for _, p := range benchPurposes {
			ix.PutPurpose("clio", p)
		}
		ids := make([]string, benchSubjects)
		for i := range ids {
			// Pseudonymous ids as the platform issues them.
			ids[i] = fmt.Sprintf("sub_%016x", rng.Uint64())
			ix.Update("clio", ids[i], func(s *Subject) {
				for _, p := range benchPurposes {
					if rng.IntN(10) == 0 { // most, not all, purposes have a record
						continue
					}
					when := at(rng.IntN(400))
					c := Consent{RecordID: fmt.Sprintf("01J%023X", rng.Uint64()), RecordedAt: when}
					switch n := rng.IntN(100); {
					case n < 75:
						c.Action = actionGrant
					case n < 85:
						c.Action = actionDeny
					case n < 93:
						c.Action = actionWithdraw
					default:
						c.Action = actionRenew
					}
					if (c.Action == actionGrant || c.Action == actionRenew) && p.Lifetime > 0 {
						c.ExpiresAt = when.Add(p.Lifetime)
					}
					s.SetConsent(p.ID, c)
				}
				switch n := rng.IntN(1000); {
				case n < 20:
					s.AddObjection(Objection{ID: "obj_" + ids[i], Scope: scopeDirectMarketing})
				case n < 25:
					s.AddObjection(Objection{ID: "obj_" + ids[i], Scope: scopePurposes, Purposes: []string{"product.analytics", "research.surveys"}})
				case n < 30:
					s.AddRestriction(Restriction{ID: "res_" + ids[i]})
				}
			})
		}

		roles := []string{"", "teacher", "student", "student", "parent"}
		countries := []string{"", "DK", "DE", "SE", "FR", "US", "NL", "ES"}
		benchAsked = make([]benchQuery, benchQueries)
		for i := range benchAsked {
			q := benchQuery{
				// A copy of its own, as a decoded request holds: the
				// caller's id is in cache, the index's state is not.
				subject: strings.Clone(ids[rng.IntN(len(ids))]),
				purpose: benchPurposes[rng.IntN(len(benchPurposes))].ID,
				a:       Attributes{Role: roles[rng.IntN(len(roles))], Country: countries[rng.IntN(len(countries))], GPC: rng.IntN(10) == 0},
			}
			if rng.IntN(2) == 0 {
				q.a.Age = int32(11 + rng.IntN(40))
			}
			if i%50 == 0 {
				q.subject = fmt.Sprintf("unknown_%d", i) // a subject with no state
			}
			benchAsked[i] = q
		}
		// The same questions about 256 subjects, whose state stays in
		// cache: what a Check costs apart from memory latency.
		benchHot = make([]benchQuery, benchQueries)
		for i := range benchHot {
			benchHot[i] = benchAsked[i]
			benchHot[i].subject = ids[i%256]
		}
		benchIndex = ix

		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		benchHeapMiB = float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
		b.Logf("index of %d subjects: %.0f MiB", benchSubjects, benchHeapMiB)
	})
}

// BenchmarkCheck is the hot path: one decision among 100,000 subjects with
// 20 purposes each. It must report 0 allocs/op.
func BenchmarkCheck(b *testing.B) {
	benchSetup(b)
	ix, qs, now := benchIndex, benchAsked, benchNow
	allowed := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		q := &qs[i&(benchQueries-1)]
		if ix.Check("clio", q.subject, q.purpose, q.a, now).Allowed {
			allowed++
		}
	}
	b.ReportMetric(float64(allowed)/float64(b.N), "allowed/op")
}

// BenchmarkCheckHot is BenchmarkCheck over 256 subjects, whose state stays
// in cache. The difference to BenchmarkCheck is memory latency: a random
// subject among 100,000 (about 200 MiB) costs a few dependent cache and
// TLB misses.
func BenchmarkCheckHot(b *testing.B) {
	benchSetup(b)
	ix, qs, now := benchIndex, benchHot, benchNow
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		q := &qs[i&(benchQueries-1)]
		ix.Check("clio", q.subject, q.purpose, q.a, now)
	}
}

// BenchmarkCheckParallel runs Check from every P at once: readers of
// different subjects should not slow each other.
func BenchmarkCheckParallel(b *testing.B) {
	benchSetup(b)
	ix, qs, now := benchIndex, benchAsked, benchNow
	var seed uint64
	var mu sync.Mutex
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		seed++
		i := int(seed * 7919)
		mu.Unlock()
		for pb.Next() {
			q := &qs[i&(benchQueries-1)]
			ix.Check("clio", q.subject, q.purpose, q.a, now)
			i++
		}
	})
}

// paced calls fn with 0, 1, 2, ... every interval from a goroutine of wg,
// until stop is closed: a writer at a steady rate beside what is measured.
func paced(wg *sync.WaitGroup, stop <-chan struct{}, every time.Duration, fn func(i int)) {
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				fn(i)
			}
		}
	})
}

// BenchmarkCheckWhileWriting measures readers while one writer records a
// grant every 10µs, a busy service's write rate.
func BenchmarkCheckWhileWriting(b *testing.B) {
	benchSetup(b)
	ix, qs, now := benchIndex, benchAsked, benchNow
	stop := make(chan struct{})
	var wg sync.WaitGroup
	paced(&wg, stop, 10*time.Microsecond, func(i int) {
		q := &qs[i&(benchQueries-1)]
		ix.Update("clio", q.subject, func(s *Subject) {
			s.SetConsent(q.purpose, Consent{Action: actionGrant, RecordID: "rec_bench", RecordedAt: benchNow})
		})
	})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(time.Now().UnixNano())
		for pb.Next() {
			q := &qs[i&(benchQueries-1)]
			ix.Check("clio", q.subject, q.purpose, q.a, now)
			i++
		}
	})
	b.StopTimer()
	close(stop)
	wg.Wait()
}

// BenchmarkDecide is the evaluation alone, without finding the subject.
func BenchmarkDecide(b *testing.B) {
	benchSetup(b)
	p, _ := benchIndex.Purpose("clio", "marketing.email")
	var s *Subject
	benchIndex.Update("clio", benchAsked[1].subject, func(x *Subject) { s = x })
	a := Attributes{Role: "teacher", Age: 30, Country: "DE"}
	b.ReportAllocs()
	for b.Loop() {
		Decide(&p, s, a, benchNow)
	}
}
