package decision

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
)

// restored reads a snapshot into a new index.
func restored(t *testing.T, snap []byte) (*Index, map[string]uint64) {
	t.Helper()
	ix := NewIndex()
	revs, err := ix.ReadSnapshot(bytes.NewReader(snap), int64(len(snap)))
	if err != nil {
		t.Fatal(err)
	}
	return ix, revs
}

// churn changes the index the way a writer does after a cut: it gives
// subjects new histories (many times over, so that shards compact),
// drops some, adds new ones, numbers a new purpose id, declares a new
// purpose, and moves the revisions and a country on. It returns the new
// subjects.
func churn(ix *Index, seed uint64, subjects []string) []string {
	rng := rand.New(rand.NewPCG(seed, 7))
	for range 8 {
		for _, tenant := range []string{"clio", "clevio"} {
			for _, sub := range subjects[:len(subjects)/2] {
				ix.Update(tenant, sub, func(s *Subject) { genSubject(rng, s) })
			}
		}
	}
	for _, sub := range subjects[len(subjects)/2 : len(subjects)/2+50] {
		ix.Update("clio", sub, func(s *Subject) { s.Reset() })
	}
	var added []string
	for i := range 200 {
		sub := fmt.Sprintf("new_%d_%d", seed, i)
		added = append(added, sub)
		ix.Update("clio", sub, func(s *Subject) {
			genSubject(rng, s)
			s.SetConsent(fmt.Sprintf("later_%d", seed), Consent{Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, RecordID: uuidV7(rng, at(3)), RecordedAt: at(3)})
		})
	}
	ix.PutPurpose("clevio", Purpose{ID: fmt.Sprintf("declared_later_%d", seed), Basis: basisConsent})
	ix.SetRevision("clio", 1_000_000*seed)
	ix.SetCountry("clio", "SE")
	ix.Update("newcomer", "someone", func(s *Subject) { genSubject(rng, s) })
	return added
}

// TestCutIsExact changes an index after a cut, both before and while the
// cut is written, and reads back the state at the cut and nothing after
// it: the same decisions, records, revisions, country, purposes and
// subjects as a snapshot written before any change. Two cuts are open at
// once, each exact at its own instant, and neither leaves anything kept
// in the shards once written.
func TestCutIsExact(t *testing.T) {
	ix, subjects := genIndex(t, 600)
	var first bytes.Buffer
	if err := ix.WriteSnapshot(&first); err != nil {
		t.Fatal(err)
	}
	cut1 := ix.Cut()
	defer cut1.Close()
	added := churn(ix, 1, subjects)
	var second bytes.Buffer
	if err := ix.WriteSnapshot(&second); err != nil {
		t.Fatal(err)
	}
	cut2 := ix.Cut()
	defer cut2.Close()

	var wg sync.WaitGroup
	wg.Go(func() { added = append(added, churn(ix, 2, subjects)...) })
	var got1, got2 bytes.Buffer
	if err := cut1.WriteSnapshot(&got1); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := cut2.WriteSnapshot(&got2); err != nil {
		t.Fatal(err)
	}

	all := append(append([]string{}, subjects...), added...)
	for i, c := range []struct{ want, got []byte }{{first.Bytes(), got1.Bytes()}, {second.Bytes(), got2.Bytes()}} {
		want, wantRevs := restored(t, c.want)
		got, gotRevs := restored(t, c.got)
		if fmt.Sprint(gotRevs) != fmt.Sprint(wantRevs) {
			t.Errorf("cut %d: revisions %v, want %v", i+1, gotRevs, wantRevs)
		}
		if g, w := got.Stats(), want.Stats(); g.Subjects != w.Subjects || g.Tenants != w.Tenants {
			t.Errorf("cut %d: %d tenants, %d subjects, want %d, %d", i+1, g.Tenants, g.Subjects, w.Tenants, w.Subjects)
		}
		for _, tenant := range []string{"clio", "clevio"} {
			wc, _ := want.Country(tenant)
			gc, _ := got.Country(tenant)
			if fmt.Sprint(got.Purposes(tenant)) != fmt.Sprint(want.Purposes(tenant)) || gc != wc {
				t.Errorf("cut %d: %s's purposes or country differ: %v %q, want %v %q", i+1, tenant, got.Purposes(tenant), gc, want.Purposes(tenant), wc)
			}
		}
		sameDecisions(t, want, got, all)
	}
	for _, tenant := range *ix.tenants.Load() {
		for i := range tenant.shards {
			if n := len(tenant.shards[i].cuts); n != 0 {
				t.Fatalf("a shard still keeps subjects for %d cuts after both were written", n)
			}
		}
	}
}

// TestCutCloseReleases closes a cut that was never written: updates keep
// nothing for it afterwards.
func TestCutCloseReleases(t *testing.T) {
	ix, subjects := genIndex(t, 100)
	c := ix.Cut("clio")
	ix.Update("clio", subjects[0], func(s *Subject) { s.AddRestriction(Restriction{ID: "r"}) })
	kept := 0
	for _, tenant := range *ix.tenants.Load() {
		for i := range tenant.shards {
			for _, sc := range tenant.shards[i].cuts {
				kept += len(sc.before)
			}
		}
	}
	if n, bytes := c.Kept(); kept != 1 || n != 1 || bytes <= int64(len(subjects[0])) {
		t.Fatalf("an open cut kept %d subjects after one update (Kept: %d, %d bytes), want 1", kept, n, bytes)
	}
	c.Close()
	c.Close()
	for _, tenant := range *ix.tenants.Load() {
		for i := range tenant.shards {
			if tenant.shards[i].cuts != nil {
				t.Fatal("a closed cut is still open in a shard")
			}
		}
	}
}

// TestCutNamedTenantsAndCountry cuts tenants named out of order and twice,
// and sets a country in the cut, of a tenant it holds and of one it does
// not: each tenant is written once, with the country set.
func TestCutNamedTenantsAndCountry(t *testing.T) {
	ix, _ := genIndex(t, 50)
	c := ix.Cut("clio", "clevio", "clio")
	defer c.Close()
	c.SetCountry("clevio", "SE")
	c.SetCountry("newcomer", "FI")
	var buf bytes.Buffer
	if err := c.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	got, revs := restored(t, buf.Bytes())
	if len(revs) != 3 {
		t.Fatalf("tenants %v, want clevio, clio and newcomer once each", revs)
	}
	for tenant, want := range map[string]string{"clio": "DK", "clevio": "SE", "newcomer": "FI"} {
		if c, _ := got.Country(tenant); c != want {
			t.Errorf("%s's country %q, want %q", tenant, c, want)
		}
	}
}
