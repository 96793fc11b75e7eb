package routing

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	"github.com/lethe-privacy/lethe/services/registry/internal/taxonomy"
)

const (
	sdk    = commonv1.AnswerMode_ANSWER_MODE_SDK
	manual = commonv1.AnswerMode_ANSWER_MODE_MANUAL
)

// fixture is a small tenant shaped like the seed companies.
var fixture = []System{
	{ID: "crm", Mode: sdk, Categories: []string{"user.contact", "user.name"}, Purposes: []string{"sales"}},
	{ID: "newsletter", Mode: manual, Categories: []string{"user.contact.email"}, Purposes: []string{"newsletter", "marketing"}},
	{ID: "ads", Mode: manual, Categories: []string{"user.contact.email.hashed"}, Purposes: []string{"marketing"}},
	{ID: "billing", Mode: sdk, Categories: []string{"user.financial.invoice", "user.contact.address"}},
	{ID: "warehouse", Mode: sdk, Categories: []string{"user"}},
	{ID: "lms", Mode: sdk, Categories: []string{"user.education.progress", "user.education.results"}, Purposes: []string{"teaching"}},
	{ID: "contacts_db", Mode: manual, Categories: []string{"user.contacts"}}, // a tenant's own near-miss id
	{ID: "analytics", Mode: sdk, Purposes: []string{"statistics"}},
}

func TestRoute(t *testing.T) {
	ix := Build(fixture)
	tests := []struct {
		name       string
		categories []string
		all        bool
		purpose    string
		want       []string
	}{
		{name: "exact", categories: []string{"user.financial.invoice"}, want: []string{"billing", "warehouse"}},
		{name: "held above", categories: []string{"user.contact.phone_number"}, want: []string{"crm", "warehouse"}},
		{name: "held below, whole segments only", categories: []string{"user.contact"}, want: []string{"ads", "billing", "crm", "newsletter", "warehouse"}}, // not contacts_db
		{name: "held above and below", categories: []string{"user.contact.email"}, want: []string{"ads", "crm", "newsletter", "warehouse"}},
		{name: "siblings not matched", categories: []string{"user.education.enrollment"}, want: []string{"warehouse"}},
		{name: "near-miss id", categories: []string{"user.contacts"}, want: []string{"contacts_db", "warehouse"}},
		{name: "unknown below unindexed", categories: []string{"user.financial.bank_account.iban"}, want: []string{"warehouse"}},
		{name: "unknown below held", categories: []string{"user.contact.email.hashed.sha256"}, want: []string{"ads", "crm", "newsletter", "warehouse"}},
		{name: "root", categories: []string{"user"}, want: []string{"ads", "billing", "contacts_db", "crm", "lms", "newsletter", "warehouse"}},
		{name: "unrelated root", categories: []string{"employee.payroll"}, want: nil},
		{name: "purpose", purpose: "marketing", want: []string{"ads", "newsletter"}},
		{name: "purpose without categories", purpose: "statistics", want: []string{"analytics"}},
		{name: "unknown purpose", purpose: "profiling", want: nil},
		{name: "categories or purpose", categories: []string{"user.education.results"}, purpose: "statistics", want: []string{"analytics", "lms", "warehouse"}},
		{name: "several categories", categories: []string{"user.financial", "user.education"}, want: []string{"billing", "lms", "warehouse"}},
		{name: "duplicates removed", categories: []string{"user.contact.email", "user.contact.email.hashed", "user.contact"}, purpose: "marketing", want: []string{"ads", "billing", "crm", "newsletter", "warehouse"}},
		{name: "all", all: true, want: []string{"ads", "analytics", "billing", "contacts_db", "crm", "lms", "newsletter", "warehouse"}},
		{name: "all ignores the rest", all: true, categories: []string{"user.name"}, purpose: "sales", want: []string{"ads", "analytics", "billing", "contacts_db", "crm", "lms", "newsletter", "warehouse"}},
		{name: "empty query", want: nil},
		{name: "empty ids", categories: []string{""}, purpose: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ix.Route(tt.categories, tt.all, tt.purpose)
			if ids := routedIDs(got); !slices.Equal(ids, tt.want) {
				t.Errorf("Route(%q, %v, %q) = %q, want %q", tt.categories, tt.all, tt.purpose, ids, tt.want)
			}
		})
	}
}

func TestRouteCarriesMode(t *testing.T) {
	got := Build(fixture).Route([]string{"user.contact.email"}, false, "")
	want := []Routed{{"ads", manual}, {"crm", sdk}, {"newsletter", manual}, {"warehouse", sdk}}
	if !slices.Equal(got, want) {
		t.Errorf("Route() = %v, want %v", got, want)
	}
}

func TestBuild(t *testing.T) {
	t.Run("empty", func(t *testing.T) {
		ix := Build(nil)
		if ix.Len() != 0 || ix.Route([]string{"user"}, false, "p") != nil || ix.Route(nil, true, "") != nil {
			t.Error("an empty index routes somewhere")
		}
	})
	t.Run("duplicate ids merged", func(t *testing.T) {
		ix := Build([]System{
			{ID: "b", Mode: manual, Categories: []string{"user.name"}},
			{ID: "a", Mode: sdk},
			{ID: "b", Mode: sdk, Purposes: []string{"sales"}},
		})
		if ix.Len() != 2 {
			t.Errorf("Len() = %d, want 2", ix.Len())
		}
		want := []Routed{{"b", manual}}
		for _, got := range [][]Routed{ix.Route([]string{"user.name"}, false, ""), ix.Route(nil, false, "sales")} {
			if !slices.Equal(got, want) {
				t.Errorf("Route() = %v, want %v", got, want)
			}
		}
	})
	t.Run("input not retained", func(t *testing.T) {
		systems := []System{{ID: "a", Categories: []string{"user.name"}}}
		ix := Build(systems)
		systems[0].ID = "changed"
		systems[0].Categories[0] = "user.contact"
		if got := routedIDs(ix.Route([]string{"user.name"}, false, "")); !slices.Equal(got, []string{"a"}) {
			t.Errorf("Route() = %q after the input changed", got)
		}
	})
	t.Run("results are the caller's", func(t *testing.T) {
		ix := Build(fixture)
		ix.Route(nil, true, "")[0].ID = "changed"
		ix.Route([]string{"user.name"}, false, "")[0].ID = "changed"
		if got := ix.Route(nil, true, ""); got[0].ID != "ads" {
			t.Errorf("Route() = %v after a caller changed an earlier result", got)
		}
	})
}

// TestRouteMatchesNaive compares the index with the rule it implements,
// applied system by system, on random tenants spanning several bitset
// words and queries naming held, unheld and unknown categories.
func TestRouteMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 30 {
		tree := categoryTree(1+rng.IntN(4), 1+rng.IntN(4), 1+rng.IntN(5))
		systems := randomSystems(rng, 1+rng.IntN(300), tree, 1+rng.IntN(10))
		ix := Build(systems)
		for range 50 {
			var query []string
			for range rng.IntN(4) {
				c := tree[rng.IntN(len(tree))]
				if rng.IntN(5) == 0 {
					c += ".unknown" // below the tree: only ancestors match
				}
				query = append(query, c)
			}
			purpose := ""
			if rng.IntN(2) == 0 {
				purpose = fmt.Sprintf("p%d", rng.IntN(12))
			}
			got := routedIDs(ix.Route(query, false, purpose))
			if want := naiveRoute(systems, query, purpose); !slices.Equal(got, want) {
				t.Fatalf("round %d: Route(%q, %q) = %q, want %q", round, query, purpose, got, want)
			}
		}
	}
}

func naiveRoute(systems []System, categories []string, purpose string) []string {
	var ids []string
	for _, s := range systems {
		match := purpose != "" && slices.Contains(s.Purposes, purpose)
		for _, held := range s.Categories {
			for _, q := range categories {
				match = match || taxonomy.Related(held, q)
			}
		}
		if match {
			ids = append(ids, s.ID)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func TestRouteConcurrentReaders(t *testing.T) {
	ix := Build(fixture)
	want := routedIDs(ix.Route([]string{"user.contact"}, false, "teaching"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if got := routedIDs(ix.Route([]string{"user.contact"}, false, "teaching")); !slices.Equal(got, want) {
					t.Errorf("Route() = %q, want %q", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func routedIDs(rs []Routed) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return ids
}

// categoryTree returns the ids of a three-level tree with the given fan-out
// per level: roots "c0", "c0.s0", "c0.s0.l0", …
func categoryTree(roots, mid, leaves int) []string {
	var ids []string
	for r := range roots {
		root := fmt.Sprintf("c%d", r)
		ids = append(ids, root)
		for m := range mid {
			m := fmt.Sprintf("%s.s%d", root, m)
			ids = append(ids, m)
			for l := range leaves {
				ids = append(ids, fmt.Sprintf("%s.l%d", m, l))
			}
		}
	}
	return ids
}

// randomSystems returns n systems in shuffled id order, each holding 3–8
// of the categories and listing 1–3 of the purposes p0…p(purposes-1).
func randomSystems(rng *rand.Rand, n int, categories []string, purposes int) []System {
	systems := make([]System, n)
	for i := range systems {
		s := System{ID: fmt.Sprintf("sys-%04d", i), Mode: sdk}
		for range 3 + rng.IntN(6) {
			s.Categories = append(s.Categories, categories[rng.IntN(len(categories))])
		}
		for range 1 + rng.IntN(3) {
			s.Purposes = append(s.Purposes, fmt.Sprintf("p%d", rng.IntN(purposes)))
		}
		systems[i] = s
	}
	rng.Shuffle(n, func(i, j int) { systems[i], systems[j] = systems[j], systems[i] })
	return systems
}

// benchTenant is the size the routing target is set for: 1,000 systems
// and 100 categories in a three-level tree (4 roots, 16 middles, 80
// leaves).
func benchTenant() ([]System, []string) {
	tree := categoryTree(4, 4, 5)
	return randomSystems(rand.New(rand.NewPCG(7, 7)), 1000, tree, 20), tree
}

// BenchmarkRoute measures a query of three categories at mixed levels; the
// target is 50 µs per query.
func BenchmarkRoute(b *testing.B) {
	systems, _ := benchTenant()
	ix := Build(systems)
	benchmarks := []struct {
		name       string
		categories []string
		all        bool
		purpose    string
	}{
		{name: "leaf", categories: []string{"c1.s2.l3"}},
		{name: "mixed levels", categories: []string{"c0", "c1.s2", "c3.s1.l4"}},
		{name: "mixed levels and purpose", categories: []string{"c0", "c1.s2", "c3.s1.l4"}, purpose: "p7"},
		{name: "unknown below leaf", categories: []string{"c2.s3.l1.x", "c3.s0.l0.y", "c1.s1.l2.z"}},
		{name: "all", all: true},
	}
	for _, bm := range benchmarks {
		b.Run(strings.ReplaceAll(bm.name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			var routed int
			for b.Loop() {
				routed = len(ix.Route(bm.categories, bm.all, bm.purpose))
			}
			b.ReportMetric(float64(routed), "systems/op")
		})
	}
}

// BenchmarkBuild measures building the index, which happens on every
// change to a tenant's systems.
func BenchmarkBuild(b *testing.B) {
	systems, _ := benchTenant()
	b.ReportAllocs()
	for b.Loop() {
		Build(systems)
	}
}
