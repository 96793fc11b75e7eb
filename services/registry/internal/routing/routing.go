// Package routing answers which of a tenant's systems must answer an event:
// those holding data of the event's categories, matched up and down the
// taxonomy, and those processing data for the event's purpose. Every DSAR,
// retention purge and consent limit asks, so the answer comes from an index
// built once per registry change and read without locks.
//
// The index keeps the systems sorted by id and gives each a bit. Per
// category it precomputes the set of systems a query about that category
// reaches; a query is then a few map look-ups, ORs over words and a walk of
// the set bits, which come out in id order with no sorting or
// de-duplication.
package routing

import (
	"cmp"
	"math/bits"
	"slices"
	"strings"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	"github.com/lethe-privacy/lethe/services/registry/internal/taxonomy"
)

// System is what routing needs to know of a registered system.
type System struct {
	// ID is the system's id within its tenant.
	ID string
	// Mode is how the system answers.
	Mode commonv1.AnswerMode
	// Categories are the ids of the data categories it holds.
	Categories []string
	// Purposes are the ids of the purposes it processes data for.
	Purposes []string
}

// Routed is a system that must answer, and how.
type Routed struct {
	// ID is the system's id.
	ID string
	// Mode is how it answers.
	Mode commonv1.AnswerMode
}

// Index routes events to one tenant's systems. It is immutable once built
// and safe for concurrent use.
type Index struct {
	// systems, sorted by id; a system's position is its bit.
	systems []Routed
	// words is the length of every bitset, in uint64s.
	words int

	// nodes numbers every category some system holds, and each of its
	// ancestors, so that a query's nearest indexed ancestor can be found.
	nodes map[string]int
	// related holds, per node, the systems a query about that category
	// reaches: those holding it, anything below it or anything above it.
	related []uint64
	// covering holds, per node, the systems holding it or anything above
	// it: what a query about an unindexed category below it reaches.
	covering []uint64

	// purposes numbers every purpose some system lists.
	purposes map[string]int
	// byPurpose holds, per purpose, the systems listing it.
	byPurpose []uint64
}

// Build indexes the systems. A system's id should appear once; entries that
// share one are merged into one system holding everything any of them
// holds, with the first entry's mode, because routing to a system too many
// times is harmless and missing one is not. Empty category and purpose ids
// are ignored. Build keeps none of the caller's slices.
func Build(systems []System) *Index {
	ix := &Index{nodes: map[string]int{}, purposes: map[string]int{}}
	bit := ix.numberSystems(systems)
	parent := ix.numberCategories(systems)
	ix.categorySets(systems, bit, parent)
	ix.purposeSets(systems, bit)
	return ix
}

// numberSystems gives each distinct id the next bit, in id order, and
// returns the bit of each entry: bit[i] is the bit of systems[i], shared
// by entries with the same id, whose first has the Routed.
func (ix *Index) numberSystems(systems []System) []int {
	// Order the entries by id, earlier entries first among equal ids.
	// Sorting indices rather than the systems themselves keeps the sort
	// from moving large structs.
	order := make([]int, len(systems))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		return cmp.Or(strings.Compare(systems[i].ID, systems[j].ID), cmp.Compare(i, j))
	})
	bit := make([]int, len(systems))
	for k, i := range order {
		if k == 0 || systems[i].ID != systems[order[k-1]].ID {
			ix.systems = append(ix.systems, Routed{ID: systems[i].ID, Mode: systems[i].Mode})
		}
		bit[i] = len(ix.systems) - 1
	}
	ix.words = (len(ix.systems) + 63) / 64
	return bit
}

// numberCategories numbers the categories held and their ancestors in id
// order, which puts every parent before its children, and returns each
// node's parent (-1 for a root).
func (ix *Index) numberCategories(systems []System) []int {
	var ids []string
	for _, s := range systems {
		for _, c := range s.Categories {
			for ; c != ""; c = taxonomy.Parent(c) {
				if _, seen := ix.nodes[c]; seen {
					break // and so are its ancestors
				}
				ix.nodes[c] = 0
				ids = append(ids, c)
			}
		}
	}
	slices.Sort(ids)
	parent := make([]int, len(ids))
	for n, id := range ids {
		ix.nodes[id] = n
		parent[n] = -1
		if p := taxonomy.Parent(id); p != "" {
			parent[n] = ix.nodes[p]
		}
	}
	return parent
}

// categorySets fills, per category node, the systems covering it (holding
// it or an ancestor) and the systems related to it (holding it, a
// descendant or an ancestor).
func (ix *Index) categorySets(systems []System, bit, parent []int) {
	// related starts as the systems holding exactly each node.
	ix.related = make([]uint64, len(parent)*ix.words)
	for i, s := range systems {
		for _, c := range s.Categories {
			if c != "" {
				setBit(ix.row(ix.related, ix.nodes[c]), bit[i])
			}
		}
	}
	// covering: holding the node or an ancestor. Parents come first.
	ix.covering = slices.Clone(ix.related)
	for n, p := range parent {
		if p >= 0 {
			or(ix.row(ix.covering, n), ix.row(ix.covering, p))
		}
	}
	// related: first the node or a descendant, children folded into their
	// parents last to first; then anything above, which is the parent's
	// covering set.
	for n := len(parent) - 1; n >= 0; n-- {
		if p := parent[n]; p >= 0 {
			or(ix.row(ix.related, p), ix.row(ix.related, n))
		}
	}
	for n, p := range parent {
		if p >= 0 {
			or(ix.row(ix.related, n), ix.row(ix.covering, p))
		}
	}
}

// purposeSets numbers the purposes the systems list and fills, per
// purpose, the systems listing it.
func (ix *Index) purposeSets(systems []System, bit []int) {
	for i, s := range systems {
		for _, p := range s.Purposes {
			if p == "" {
				continue
			}
			n, ok := ix.purposes[p]
			if !ok {
				n = len(ix.purposes)
				ix.purposes[p] = n
				ix.byPurpose = append(ix.byPurpose, make([]uint64, ix.words)...)
			}
			setBit(ix.row(ix.byPurpose, n), bit[i])
		}
	}
}

// Len returns the number of systems indexed.
func (ix *Index) Len() int { return len(ix.systems) }

// Route returns the systems that must answer an event about the given
// categories or purpose, sorted by id, each once. With all, that is every
// system. Otherwise a system answers when it holds a category related to
// one of the given ones (equal, above or below it in the taxonomy), or
// lists the purpose; an empty purpose matches nothing. Categories no
// system holds still reach the systems holding their ancestors. Ids are
// expected to be valid; the caller checks them.
func (ix *Index) Route(categories []string, all bool, purpose string) []Routed {
	if all {
		return slices.Clone(ix.systems)
	}
	// The accumulator lives on the stack for tenants of up to 2,048
	// systems, leaving the result as the only allocation.
	var buf [32]uint64
	var acc []uint64
	if ix.words <= len(buf) {
		acc = buf[:ix.words]
	} else {
		acc = make([]uint64, ix.words)
	}
	for _, c := range categories {
		if n, ok := ix.nodes[c]; ok {
			or(acc, ix.row(ix.related, n))
			continue
		}
		// Nothing at or below c is held, or c would be indexed as an
		// ancestor; what remains is the systems holding an ancestor, all
		// of which the nearest indexed one's covering set has.
		for a := taxonomy.Parent(c); a != ""; a = taxonomy.Parent(a) {
			if n, ok := ix.nodes[a]; ok {
				or(acc, ix.row(ix.covering, n))
				break
			}
		}
	}
	if purpose != "" {
		if n, ok := ix.purposes[purpose]; ok {
			or(acc, ix.row(ix.byPurpose, n))
		}
	}

	count := 0
	for _, w := range acc {
		count += bits.OnesCount64(w)
	}
	if count == 0 {
		return nil
	}
	out := make([]Routed, 0, count)
	for i, w := range acc {
		for w != 0 {
			out = append(out, ix.systems[i*64+bits.TrailingZeros64(w)])
			w &= w - 1
		}
	}
	return out
}

// row returns bitset n of a flat table of bitsets. Keeping each table in
// one slice keeps a query's reads close together and Build's allocations
// few.
func (ix *Index) row(table []uint64, n int) []uint64 {
	return table[n*ix.words : (n+1)*ix.words : (n+1)*ix.words]
}

func setBit(set []uint64, i int) { set[i/64] |= 1 << (i % 64) }

// or sets dst to dst | src; the two have the same length.
func or(dst, src []uint64) {
	for i := range dst {
		dst[i] |= src[i]
	}
}
