package rules

import (
	"testing"
	"time"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// FuzzEvaluate builds rules, facts and holds from fuzzed bytes and period
// texts, and checks what must hold whatever the input: no panic, an
// explanation, a verdict independent of order, and a purge date never
// before a fired minimum, never under a covering hold, never while an
// unfired minimum keeps the data.
func FuzzEvaluate(f *testing.F) {
	f.Add([]byte{3, 0, 2, 1, 0, 1, 3, 5, 9, 2, 1, 4, 4}, "P1Y", "P7Y", int64(0))
	f.Add([]byte{5, 7, 3, 2, 2, 3, 1, 0, 0, 6, 2, 1, 200, 90, 30, 2, 1, 1, 10, 40}, "P0D", "P3Y", int64(1_700_000_000))
	f.Add([]byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, "P1M", "P1M", int64(-86_400))
	f.Add([]byte{}, "", "PT12H", int64(0))
	f.Fuzz(func(t *testing.T, data []byte, p1, p2 string, baseUnix int64) {
		g := &gen{data: data, base: time.Unix(baseUnix%(400*365*86_400), 0).UTC(), periods: fuzzPeriods(p1, p2)}
		rules := g.rules()
		facts := g.facts()
		holds := g.holds()
		category, subject, now := g.pick(categories), g.pick(subjects), g.time()

		v := Evaluate(rules, category, subject, facts, holds, now)
		if len(v.Explanation) == 0 {
			t.Fatal("empty explanation")
		}
		if v.Due == v.PurgeAt.IsZero() {
			t.Fatalf("Due %v with PurgeAt %v", v.Due, v.PurgeAt)
		}
		if r := Evaluate(reverse(rules), category, subject, facts, reverse(holds), now); decision(r) != decision(v) {
			t.Fatalf("order changes the verdict: %+v then %+v", decision(v), decision(r))
		}
		if !v.Due {
			return
		}
		for _, r := range rules {
			if !r.Minimum || !contract.CategoryCovers(r.Category, category) || len(r.Triggers) == 0 {
				continue
			}
			for _, tr := range r.Triggers {
				start, fired := oracleStart(tr, facts)
				if !fired {
					t.Fatalf("due on %v although minimum %s has not fired", v.PurgeAt, r.ID)
				}
				if until := tr.Period.AddTo(start); v.PurgeAt.Before(until) {
					t.Fatalf("due on %v, before minimum %s ends on %v", v.PurgeAt, r.ID, until)
				}
			}
		}
		at := v.PurgeAt
		if now.After(at) {
			at = now
		}
		for _, h := range holds {
			if h.covers(subject, category) && h.activeAt(at) {
				t.Fatalf("due on %v under hold %+v", v.PurgeAt, h)
			}
		}
	})
}

// oracleStart is when a trigger fired, written apart from Trigger.start so
// that the fuzz target checks the engine against a second reading.
func oracleStart(t Trigger, f Facts) (time.Time, bool) {
	var at time.Time
	switch t.Kind {
	case SinceCollection:
		at = f.Collected
	case SinceLastActivity:
		at = f.LastActivity
		if f.Collected.After(at) {
			at = f.Collected
		}
	case SinceRelationshipEnded:
		at = f.RelationshipEnded[t.Name]
	case SinceSuspension:
		if f.Reactivated.IsZero() || f.Reactivated.Before(f.Suspended) {
			at = f.Suspended
		}
	case SinceConsentWithdrawal:
		if t.Name != "" {
			at = f.ConsentWithdrawn[t.Name]
			break
		}
		for _, w := range f.ConsentWithdrawn {
			if !w.IsZero() && (at.IsZero() || w.Before(at)) {
				at = w
			}
		}
	case SinceEvent:
		at = f.Events[t.Name]
	}
	return at, !at.IsZero()
}

var (
	categories = []string{"user", "user.financial", "user.financial.invoice", "user.financials", ""}
	subjects   = []string{"s1", "s2", ""}
	names      = []string{"", "contract", "newsletter", "membership_revoked"}
)

// fuzzPeriods parses the fuzzed texts, keeping those the platform accepts,
// alongside fixed ones so that every input has some.
func fuzzPeriods(texts ...string) []period.Period {
	ps := []period.Period{{}, {Years: 1}, {Days: 30}}
	for _, s := range texts {
		if p, err := period.Parse(s); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// gen turns fuzzed bytes into inputs; once the bytes run out it reads
// zeros, so every input is usable.
type gen struct {
	data    []byte
	base    time.Time
	periods []period.Period
}

func (g *gen) next() int {
	if len(g.data) == 0 {
		return 0
	}
	b := g.data[0]
	g.data = g.data[1:]
	return int(b)
}

func (g *gen) pick(from []string) string { return from[g.next()%len(from)] }

// time is zero (unknown) for a zero byte, else a day within about eight
// months either side of the base, at hours that cross midnight.
func (g *gen) time() time.Time {
	n := g.next()
	if n == 0 {
		return time.Time{}
	}
	return g.base.AddDate(0, 0, n-128).Add(time.Duration(g.next()%24) * time.Hour)
}

func (g *gen) rules() []Rule {
	rules := make([]Rule, g.next()%6)
	for i := range rules {
		r := Rule{
			ID:       string(rune('a' + g.next()%4)), // few ids, so ties and duplicates happen
			Category: g.pick(categories),
			Minimum:  g.next()%3 == 0,
			Action:   eventsv1.ErasureAction(g.next() % 4),
		}
		r.Triggers = make([]Trigger, g.next()%4)
		for j := range r.Triggers {
			r.Triggers[j] = Trigger{Kind: TriggerKind(g.next() % 8), Name: g.pick(names), Period: g.periods[g.next()%len(g.periods)]}
		}
		rules[i] = r
	}
	return rules
}

func (g *gen) facts() Facts {
	f := Facts{Collected: g.time(), LastActivity: g.time(), Suspended: g.time(), Reactivated: g.time()}
	f.RelationshipEnded = map[string]time.Time{g.pick(names): g.time()}
	f.ConsentWithdrawn = map[string]time.Time{g.pick(names): g.time(), g.pick(names): g.time()}
	f.Events = map[string]time.Time{g.pick(names): g.time()}
	return f
}

func (g *gen) holds() []Hold {
	holds := make([]Hold, g.next()%4)
	for i := range holds {
		holds[i] = Hold{
			ID: string(rune('h' + g.next()%3)), Reason: "fuzz",
			Subject: g.pick(subjects), Category: g.pick(categories),
			Start: g.time(), End: g.time(),
		}
	}
	return holds
}
