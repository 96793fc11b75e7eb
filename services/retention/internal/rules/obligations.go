package rules

import (
	"time"

	"github.com/lethe-privacy/lethe/sdk/contract"
)

// Obligation is what one minimum rule keeps of one category of a subject's
// data, as of now.
type Obligation struct {
	// Rule is the minimum rule.
	Rule Rule
	// Category is the subject's category the rule keeps.
	Category string
	// Until is when the obligation ends; zero when it is not known yet
	// (the trigger has not fired, or its fact was never reported).
	Until time.Time
}

// Item is one category of a subject's data with the facts known of it.
type Item struct {
	Category string
	Facts    Facts
}

// Obligations lists what the minimum rules keep of items at now: the
// obligations that have not run out, one per rule and covered item, in the
// order of rules and then items. An item whose minimum trigger has not
// fired (or whose fact was never reported: zero Facts) is kept without a
// date, because an unknown fact never lets data go.
func Obligations(rules []Rule, items []Item, now time.Time) []Obligation {
	var out []Obligation
	for _, r := range rules {
		if !r.Minimum || len(r.Triggers) == 0 {
			continue
		}
		for _, it := range items {
			if !contract.CategoryCovers(r.Category, it.Category) {
				continue
			}
			until, fired, _ := minimumLimit(r, it.Facts)
			switch {
			case !fired:
				out = append(out, Obligation{Rule: r, Category: it.Category})
			case until.After(now):
				out = append(out, Obligation{Rule: r, Category: it.Category, Until: until})
			}
		}
	}
	return out
}
