package retention

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/registryclient"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/services/retention/internal/rules"
	"github.com/lethe-privacy/lethe/services/retention/internal/schedule"
)

// sweepLimit bounds the subjects fired in one transaction.
const sweepLimit = schedule.DefaultSweepLimit

// directive is one erasure.requested the sweep issues for a subject: the
// categories one purge rule (or one deferred erasure) makes due, with one
// action.
type directive struct {
	cause      *commonv1.Cause
	action     eventsv1.ErasureAction
	categories []string
	// system, when set, is the only system told (a deferred erasure of what
	// it kept); otherwise every system the registry routes.
	system string
	// purgeAt is the purge date per category, for the purge record.
	purgeAt map[string]time.Time
	// deferred is the index in the state's Deferred list it comes from, or
	// -1.
	deferred int
}

// routeKey names a routing question: a tenant and a set of categories.
func routeKey(tenant string, categories []string) string {
	return tenant + "\x00" + strings.Join(categories, "\x00")
}

// dueDirectives lists what is due for the subject at now, grouped by rule
// and action, in a stable order.
func (st *subjectState) dueDirectives(verdicts map[string]rules.Verdict, now time.Time) []directive {
	groups := map[string]*directive{}
	var order []string
	for _, c := range slices.Sorted(maps.Keys(verdicts)) {
		v := verdicts[c]
		if !st.pending(c, v) || v.PurgeAt.After(now) {
			continue
		}
		k := v.RuleID + "\x00" + v.Action.String()
		d, ok := groups[k]
		if !ok {
			d = &directive{
				cause:  &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_RETENTION_RULE, Id: v.RuleID},
				action: v.Action, purgeAt: map[string]time.Time{}, deferred: -1,
			}
			groups[k] = d
			order = append(order, k)
		}
		d.categories = append(d.categories, c)
		d.purgeAt[c] = v.PurgeAt
	}
	out := make([]directive, 0, len(order))
	for _, k := range order {
		out = append(out, *groups[k])
	}
	for i, d := range st.Deferred {
		if d.Until.After(now) {
			continue
		}
		action := actionOf(d.Action)
		if action == eventsv1.ErasureAction_ERASURE_ACTION_UNSPECIFIED {
			action = eventsv1.ErasureAction_ERASURE_ACTION_ERASE
		}
		out = append(out, directive{
			cause:  &commonv1.Cause{Kind: d.CauseKind, Id: d.CauseID},
			action: action, categories: slices.Sorted(slices.Values(d.Categories)), system: d.System, deferred: i,
		})
	}
	return out
}

// plan is what a sweep learned before its write transaction: the routes of
// the directives it expects to issue.
type plan struct {
	routes map[string][]tasks.Expect
}

// Sweep issues the directives due now, in transactions of at most
// sweepLimit subjects, after re-evaluating tenants whose policy changed. It
// returns how many subjects fired.
//
// Routing is a call to the registry, which must not hold the store's single
// writer, so each round first reads the due subjects, asks the registry for
// the routes their directives need, and only then fires them in one write
// transaction. A subject whose due work changed in between so that a route
// is missing is put back for the next sweep, not fired without its systems.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	if _, err := s.applyJournal(); err != nil {
		return 0, err
	}
	if err := s.rescan(ctx); err != nil {
		return 0, err
	}
	fired := 0
	for ctx.Err() == nil {
		now := s.Clock.Now()
		p, err := s.planSweep(ctx, now)
		if err != nil {
			return fired, err
		}
		var n int
		var more bool
		err = s.DB.Update(func(tx *bolt.Tx) error {
			var err error
			n, more, err = s.scheduler.SweepTx(tx, now, sweepLimit, func(tx *bolt.Tx, key []byte, _ time.Time, payload []byte) error {
				return s.fireTx(ctx, tx, key, payload, p, now)
			})
			return err
		})
		if err != nil {
			// A subject whose firing fails is parked and the round swept
			// again without it; a full outbox or a stop is not the
			// subject's fault, and ends the sweep until the next tick.
			var failed *schedule.FireError
			if !errors.As(err, &failed) || ctx.Err() != nil || status.Code(failed.Err) == codes.Unavailable {
				return fired, err
			}
			if err := s.DB.Update(func(tx *bolt.Tx) error { return s.parkSubjectTx(tx, failed.Key, failed.Err) }); err != nil {
				return fired, err
			}
			continue
		}
		fired += n
		if s.afterSweepTx != nil {
			s.afterSweepTx()
		}
		if !more {
			break
		}
	}
	return fired, nil
}

// errEnough stops a walk.
var errEnough = errors.New("enough")

// planSweep routes the directives of the first sweepLimit due subjects.
func (s *Service) planSweep(ctx context.Context, now time.Time) (plan, error) {
	type question struct {
		tenant     string
		categories []string
	}
	questions := map[string]question{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		n := 0
		err := s.scheduler.Between(tx, time.Time{}, now, func(key []byte, _ time.Time, payload []byte) error {
			if n++; n > sweepLimit {
				return errEnough
			}
			tenant, subject, st, err := decodeItem(key, payload)
			if err != nil {
				// Left to fireTx, which fails on it, so that the sweep
				// parks it.
				return nil
			}
			pol, err := s.policyTx(tx, tenant)
			if err != nil {
				return nil
			}
			for _, d := range st.dueDirectives(st.verdicts(pol, subject, now), now) {
				questions[routeKey(tenant, d.categories)] = question{tenant, d.categories}
			}
			return nil
		})
		if errors.Is(err, errEnough) {
			return nil
		}
		return err
	})
	p := plan{routes: map[string][]tasks.Expect{}}
	if err != nil || len(questions) == 0 {
		return p, err
	}
	if s.registry == nil {
		return p, errors.New("retention: no registry connection to route directives")
	}
	for k, q := range questions {
		expect, err := s.registry.Expect(ctx, q.tenant, registryclient.Scope{Categories: q.categories})
		if err != nil {
			// This tenant's subjects wait for the next sweep; others go on.
			s.Logger.Warn("retention: routing failed; the subjects wait for the next sweep", "tenant", q.tenant, "error", err)
			continue
		}
		p.routes[k] = expect
	}
	return p, nil
}

// fireTx issues a due subject's directives and reschedules it, in the
// sweep's transaction.
func (s *Service) fireTx(ctx context.Context, tx *bolt.Tx, key, payload []byte, p plan, now time.Time) error {
	tenant, subject, st, err := decodeItem(key, payload)
	if err != nil {
		return err
	}
	pol, err := s.policyTx(tx, tenant)
	if err != nil {
		return err
	}
	due := st.dueDirectives(st.verdicts(pol, subject, now), now)
	for _, d := range due {
		if _, ok := p.routes[routeKey(tenant, d.categories)]; !ok {
			// Not routed yet: try again at the next sweep.
			return s.scheduler.SetTx(tx, key, now.Add(s.opts.SweepEvery), payload)
		}
	}
	var done []int
	for _, d := range due {
		expect := p.routes[routeKey(tenant, d.categories)]
		if d.system != "" {
			expect = only(expect, d.system)
		}
		if d.deferred >= 0 {
			done = append(done, d.deferred)
			if len(expect) == 0 {
				// The system that kept the data no longer holds these
				// categories for the tenant: nothing is left to erase.
				continue
			}
		}
		ev := &eventsv1.Event{
			TenantId: tenant, SubjectId: subject, Cause: d.cause,
			Body: &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
				Scope: &eventsv1.Scope{Categories: categories(d.categories)}, Action: d.action,
			}},
		}
		if err := s.tracker.PublishTx(ctx, tx, ev, expect); err != nil {
			return err
		}
		s.directiveIssued(tx, d.action.String())
		for c, at := range d.purgeAt {
			if st.Purged == nil {
				st.Purged = map[string]purge{}
			}
			st.Purged[c] = purge{For: at, At: now, Rule: d.cause.Id}
		}
		if d.cause.Kind == commonv1.CauseKind_CAUSE_KIND_RETENTION_RULE {
			if err := countTx(tx, tenant, d.cause.Id, func(c *ruleCounts) {
				c.Directives++
				c.Tasks += int64(len(expect))
			}); err != nil {
				return err
			}
		}
	}
	for i := len(done) - 1; i >= 0; i-- {
		st.Deferred = slices.Delete(st.Deferred, done[i], done[i]+1)
	}
	_, err = s.saveTx(tx, tenant, subject, st, pol, now)
	return err
}

// only keeps the named system of a route.
func only(expect []tasks.Expect, system string) []tasks.Expect {
	for _, e := range expect {
		if e.SystemID == system {
			return []tasks.Expect{e}
		}
	}
	return nil
}

func categories(ids []string) []*commonv1.DataCategory {
	out := make([]*commonv1.DataCategory, 0, len(ids))
	for _, id := range ids {
		out = append(out, category(id))
	}
	return out
}

// rescanBatch bounds the subjects re-evaluated in one transaction.
const rescanBatch = 1000

// rescan re-evaluates the subjects of every tenant whose rules or holds
// changed, a batch per transaction, so that a shorter period or a released
// hold reschedules data at once. It resumes where it stopped after a
// restart.
func (s *Service) rescan(ctx context.Context) error {
	for ctx.Err() == nil {
		var pending bool
		err := s.DB.Update(func(tx *bolt.Tx) error {
			k, after := store.BucketTx(tx, bucketRescan).Cursor().First()
			if k == nil {
				return nil
			}
			pending = true
			tenant, err := splitTenantKey(k)
			if err != nil {
				return err
			}
			pol, err := s.policyTx(tx, tenant)
			if err != nil {
				return err
			}
			now := s.Clock.Now()
			type item struct {
				subject string
				st      *subjectState
			}
			var batch []item
			var undecodable []parkedErr
			last := []byte(nil)
			err = s.scheduler.RangeTx(tx, store.Key(tenant), after, func(key []byte, _ time.Time, payload []byte) error {
				if len(batch)+len(undecodable) == rescanBatch {
					return errEnough
				}
				last = append(last[:0], key...)
				_, subject, st, err := decodeItem(key, payload)
				if err != nil {
					undecodable = append(undecodable, parkedErr{bytes.Clone(key), err})
					return nil
				}
				batch = append(batch, item{subject, st})
				return nil
			})
			if err != nil && !errors.Is(err, errEnough) {
				return err
			}
			// After the walk: parking deletes from the bucket it walks.
			for _, u := range undecodable {
				if err := s.parkSubjectTx(tx, u.key, u.err); err != nil {
					return err
				}
			}
			for _, it := range batch {
				if _, err := s.saveTx(tx, tenant, it.subject, it.st, pol, now); err != nil {
					return err
				}
			}
			if len(batch)+len(undecodable) < rescanBatch {
				return store.BucketTx(tx, bucketRescan).Delete(k)
			}
			return store.BucketTx(tx, bucketRescan).Put(k, last)
		})
		if err != nil || !pending {
			return err
		}
	}
	return nil
}

// parkedErr is an item to park, and why.
type parkedErr struct {
	key []byte
	err error
}

// splitTenantKey returns the tenant of a store.Key(tenant).
func splitTenantKey(k []byte) (string, error) {
	if len(k) < 2 || k[len(k)-1] != 0 {
		return "", fmt.Errorf("retention: corrupt tenant key %q", k)
	}
	return string(k[:len(k)-1]), nil
}

// wakeSweeper asks for a sweep soon, without waiting for it.
func (s *Service) wakeSweeper() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Service) sweepLogged(ctx context.Context) {
	if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
		s.metrics.failures.Add(ctx, 1)
		s.Logger.Error("retention: sweep failed; it is retried at the next tick", "error", err)
	}
}
