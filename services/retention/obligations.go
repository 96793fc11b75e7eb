package retention

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/services/retention/internal/rules"
)

// ListObligations says what the tenant's minimum rules keep of the
// subject's data in the categories asked for: before an erasure fans out,
// the DSAR service tells every system up front which categories are kept,
// on which ground (a legal obligation, GDPR Art. 17(3)(b)) and until when.
//
// A tracked category is evaluated with its facts, as ExplainSubject does. A
// category in scope that a minimum rule covers but of which Lethe tracks
// nothing for the subject is listed without a date: systems may hold such
// data all the same (an invoice no system reported), and an unknown fact
// never lets data go.
func (s *Service) ListObligations(ctx context.Context, req *retentionv1.ListObligationsRequest) (*retentionv1.ListObligationsResponse, error) {
	if _, err := s.applyJournal(); err != nil {
		return nil, err
	}
	scope := make([]string, 0, len(req.Categories))
	for _, c := range req.Categories {
		scope = append(scope, c.GetId())
	}
	now := s.Clock.Now()
	resp := &retentionv1.ListObligationsResponse{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return err
		}
		st, _, err := s.loadTx(tx, req.TenantId, req.SubjectId)
		if err != nil {
			return err
		}
		p, err := s.policyTx(tx, req.TenantId)
		if err != nil {
			return err
		}
		tracked := slices.Sorted(maps.Keys(st.Collected))
		var items []rules.Item
		for _, c := range tracked {
			for _, in := range contract.CategoriesInScope([]string{c}, scope) {
				items = append(items, rules.Item{Category: in, Facts: st.facts(c)})
			}
		}
		for _, r := range p.rules {
			if !r.Minimum {
				continue
			}
			for _, target := range contract.CategoriesInScope([]string{r.Category}, scope) {
				if !slices.ContainsFunc(tracked, func(c string) bool { return overlaps(c, target) }) {
					items = append(items, rules.Item{Category: target})
				}
			}
		}
		resp.Obligations = groupObligations(rules.Obligations(p.rules, items, now))
		return nil
	})
	return resp, err
}

// overlaps reports whether one category covers the other.
func overlaps(a, b string) bool {
	return contract.CategoryCovers(a, b) || contract.CategoryCovers(b, a)
}

// groupObligations merges the engine's obligations into one per rule and
// until-date, its categories sorted, ordered by rule and date.
func groupObligations(obs []rules.Obligation) []*eventsv1.Obligation {
	type key struct {
		rule  string
		until time.Time
	}
	groups := map[key]*eventsv1.Obligation{}
	cats := map[key]map[string]bool{}
	for _, o := range obs {
		k := key{o.Rule.ID, o.Until.UTC()}
		if _, ok := groups[k]; !ok {
			groups[k] = &eventsv1.Obligation{LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION,
				BasisDetail: o.Rule.Basis, Until: ts(o.Until), RuleId: o.Rule.ID}
			cats[k] = map[string]bool{}
		}
		cats[k][o.Category] = true
	}
	keys := slices.SortedFunc(maps.Keys(groups), func(a, b key) int {
		if a.rule != b.rule {
			return strings.Compare(a.rule, b.rule)
		}
		return a.until.Compare(b.until)
	})
	out := make([]*eventsv1.Obligation, 0, len(keys))
	for _, k := range keys {
		g := groups[k]
		for _, c := range slices.Sorted(maps.Keys(cats[k])) {
			g.Categories = append(g.Categories, category(c))
		}
		out = append(out, g)
	}
	return out
}
