package decision

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
)

func TestIndexPurposeIsCopied(t *testing.T) {
	ix := NewIndex()
	p := marketing
	p.ExcludedRoles = []string{"student"}
	ix.PutPurpose("clio", p)
	p.ExcludedRoles[0] = "teacher" // the caller's slice is not kept

	got, ok := ix.Purpose("clio", marketing.ID)
	if !ok || got.ExcludedRoles[0] != "student" {
		t.Fatalf("Purpose = %+v, %v; want student excluded", got, ok)
	}
	got.ExcludedRoles[0] = "teacher" // nor is the returned one shared

	ix.Update("clio", "s", grant(marketing, "g1", at(0)))
	if d := ix.Check("clio", "s", marketing.ID, Attributes{Role: "student"}, at(1)); d.Reason != reasonIneligible {
		t.Errorf("Check = %+v, want INELIGIBLE_ROLE", d)
	}
	if _, ok := ix.Purpose("clio", "nope"); ok {
		t.Error("Purpose(nope) found")
	}
	if _, ok := ix.Purpose("nobody", marketing.ID); ok {
		t.Error("Purpose of an unknown tenant found")
	}
}

// TestIndexPutPurposeReplaces: a material notice change published after a
// grant asks the subject again; a new grant answers.
func TestIndexPutPurposeReplaces(t *testing.T) {
	ix := NewIndex()
	ix.PutPurpose("clio", functional)
	ix.Update("clio", "s", grant(functional, "g1", at(0)))
	if d := ix.Check("clio", "s", functional.ID, Attributes{}, at(10)); !d.Allowed {
		t.Fatalf("before the change: %+v", d)
	}
	ix.PutPurpose("clio", material(functional, at(5)))
	if d := ix.Check("clio", "s", functional.ID, Attributes{}, at(10)); d.Reason != reasonReconsent {
		t.Fatalf("after the change: %+v, want RECONSENT_REQUIRED", d)
	}
	ix.Update("clio", "s", grant(functional, "g2", at(11)))
	if d := ix.Check("clio", "s", functional.ID, Attributes{}, at(12)); d != (Decision{Allowed: true, Reason: reasonGranted, BasisID: ParseID("g2")}) {
		t.Fatalf("after a new grant: %+v", d)
	}
}

// TestIndexUpdateDropsEmptySubjects: a subject whose last restriction is
// lifted leaves no entry behind, and Update before any purpose creates the
// tenant.
func TestIndexUpdateDropsEmptySubjects(t *testing.T) {
	ix := NewIndex()
	ix.Update("t", "s", restrict(Restriction{ID: "r1"}))
	if n := ix.Stats().Subjects; n != 1 {
		t.Fatalf("%d subjects after a restriction, want 1", n)
	}
	ix.Update("t", "s", lift("r1"))
	if n := ix.Stats().Subjects; n != 0 {
		t.Fatalf("%d subjects after lifting, want 0", n)
	}
	ix.Update("t", "s2", func(*Subject) {})
	if n := ix.Stats().Subjects; n != 0 {
		t.Fatal("an untouched subject was kept")
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	ix := NewIndex()
	for _, p := range []Purpose{functional, marketing, newsletter, transactional, material(statistics, at(5))} {
		ix.PutPurpose("t", p)
	}
	ix.Update("t", "s", func(s *Subject) {
		grant(functional, "g1", at(0))(s)
		grant(marketing, "g2", at(0))(s)
		grant(newsletter, "g3", at(0))(s)
		grant(statistics, "g4", at(0))(s)
		s.AddObjection(Objection{ID: "o", Scope: scopePurposes, Purposes: []string{"x"}})
		s.AddRestriction(Restriction{ID: "r", Purposes: []string{"y"}})
	})
	queries := []struct {
		purpose string
		a       Attributes
	}{
		{functional.ID, Attributes{}},
		{marketing.ID, Attributes{Role: "student"}},
		{newsletter.ID, Attributes{Age: 14, Country: "DE"}},
		{statistics.ID, Attributes{}},
		{transactional.ID, Attributes{GPC: true}},
		{"unknown", Attributes{}},
	}
	for _, q := range queries {
		if n := testing.AllocsPerRun(100, func() { ix.Check("t", "s", q.purpose, q.a, at(10)) }); n != 0 {
			t.Errorf("Check(%s) allocates %.1f times", q.purpose, n)
		}
	}
}

// TestIndexConcurrentReadersAndWriter runs readers against a writer (under
// -race in CI) and then checks the index against a model the writer kept.
func TestIndexConcurrentReadersAndWriter(t *testing.T) {
	const (
		subjects = 200
		writes   = 5000
		readers  = 4
	)
	ix := NewIndex()
	ix.PutPurpose("t", functional)
	ix.PutPurpose("t", necessary)
	ids := make([]string, subjects)
	for i := range ids {
		ids[i] = fmt.Sprintf("subject-%03d", i)
	}

	// What a decision on functional may be while the writer runs.
	possible := map[consentv1.Reason]bool{
		reasonGranted: true, reasonNotGranted: true, reasonWithdrawn: true,
		reasonRestricted: true, reasonReconsent: true,
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for r := range readers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for !stop.Load() {
				id := ids[rng.IntN(subjects)]
				d := ix.Check("t", id, functional.ID, Attributes{}, at(1))
				if !possible[d.Reason] || d.Allowed != allows(d.Reason) {
					errs <- fmt.Errorf("Check(%s) = %+v", id, d)
					return
				}
				if d := ix.Check("t", id, necessary.ID, Attributes{}, at(1)); d.Reason != reasonNecessary && d.Reason != reasonRestricted {
					errs <- fmt.Errorf("Check(%s, necessary) = %+v", id, d)
					return
				}
				ix.Purpose("t", functional.ID)
			}
		})
	}

	// The writer, and its model of each subject: the last action and
	// whether it is restricted.
	type model struct {
		action     consentv1.ConsentAction
		restricted bool
	}
	want := make(map[string]model)
	rng := rand.New(rand.NewPCG(42, 42))
	for i := range writes {
		id := ids[rng.IntN(subjects)]
		m := want[id]
		switch rng.IntN(5) {
		case 0, 1:
			ix.Update("t", id, grant(functional, fmt.Sprint("g", i), at(0)))
			m.action = actionGrant
		case 2:
			ix.Update("t", id, withdraw(functional, fmt.Sprint("w", i), at(0)))
			m.action = actionWithdraw
		case 3:
			ix.Update("t", id, restrict(Restriction{ID: "r"}))
			m.restricted = true
		case 4:
			ix.Update("t", id, lift("r"))
			m.restricted = false
		}
		want[id] = m
		if i%500 == 0 {
			// Purposes change under the readers too, and tenants appear.
			ix.PutPurpose("t", material(functional, at(-1)))
			ix.Update(fmt.Sprint("other-", i), id, grant(functional, "x", at(0)))
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	for _, id := range ids {
		m := want[id]
		var reason consentv1.Reason
		switch {
		case m.restricted:
			reason = reasonRestricted
		case m.action == actionGrant:
			reason = reasonGranted
		case m.action == actionWithdraw:
			reason = reasonWithdrawn
		default:
			reason = reasonNotGranted
		}
		if d := ix.Check("t", id, functional.ID, Attributes{}, at(1)); d.Reason != reason {
			t.Errorf("Check(%s) = %+v, want %v", id, d, reason)
		}
	}
}

// TestCheckAtTimeBoundaries: the zero time and times beyond Unix
// nanoseconds' range decide without panicking.
func TestCheckAtTimeBoundaries(t *testing.T) {
	ix := NewIndex()
	ix.PutPurpose("t", functional)
	ix.Update("t", "s", grant(functional, "g1", at(0)))
	for _, now := range []time.Time{{}, time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)} {
		d := ix.Check("t", "s", functional.ID, Attributes{}, now)
		if d.Allowed != allows(d.Reason) {
			t.Errorf("Check at %v = %+v", now, d)
		}
	}
}

func TestIndexConsent(t *testing.T) {
	ix := NewIndex()
	ix.PutPurpose("t", functional)
	if _, ok := ix.Consent("t", "s", functional.ID); ok {
		t.Error("Consent of an unknown subject found")
	}
	if _, ok := ix.Consent("nobody", "s", functional.ID); ok {
		t.Error("Consent of an unknown tenant found")
	}
	ix.Update("t", "s", grant(functional, "g1", at(0)))
	c, ok := ix.Consent("t", "s", functional.ID)
	if !ok || c.RecordID != "g1" || c.Action != actionGrant || !c.ExpiresAt.Equal(at(730)) {
		t.Errorf("Consent = %+v, %v; want g1 expiring at %v", c, ok, at(730))
	}
}

// TestIndexCovered: the purposes an objection stops are the ones Decide
// then denies as OBJECTED.
func TestIndexCovered(t *testing.T) {
	ix := NewIndex()
	all := []Purpose{necessary, functional, statistics, marketing, newsletter, transactional, analytics,
		bookkeeping, emergency, statistics2,
		{ID: "postal", Basis: basisLegitimateInterest, DirectMarketing: true},
		{ID: "necessary.li", Basis: basisLegitimateInterest, Necessary: true, DirectMarketing: true}}
	for _, p := range all {
		ix.PutPurpose("t", p)
	}
	tests := []struct {
		scope Objection
		want  []string
	}{
		{dmObjection, []string{"cookies.marketing", "marketing.email", "postal"}},
		{liObjection, []string{"postal", "product.analytics", "public.statistics"}},
		{Objection{ID: "obj-p", Scope: scopePurposes, Purposes: []string{"bookkeeping"}}, nil},
	}
	for _, tc := range tests {
		got := ix.Covered("t", tc.scope.Scope)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Covered(%v) = %v, want %v", tc.scope.Scope, got, tc.want)
		}
		if tc.scope.Scope == scopePurposes {
			continue
		}
		ix.Update("t", "s-"+tc.scope.ID, object(tc.scope))
		for _, p := range all {
			d := ix.Check("t", "s-"+tc.scope.ID, p.ID, Attributes{Age: 30}, at(1))
			if (d.Reason == reasonObjected) != slices.Contains(tc.want, p.ID) {
				t.Errorf("%v: Check(%s) = %+v, disagrees with Covered", tc.scope.Scope, p.ID, d)
			}
		}
	}
	if got := ix.Covered("nobody", scopeDirectMarketing); got != nil {
		t.Errorf("Covered of an unknown tenant = %v", got)
	}
}
