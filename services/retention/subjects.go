package retention

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/retention/internal/rules"
)

// subjectState is what Lethe knows of one subject of a tenant: the facts
// its signals established, what was purged, and data kept by a system until
// a date. It is the payload of the subject's scheduler item, so a signal
// reads and writes one record. It holds no personal data beyond the
// tenant's pseudonymous subject id in its key: categories, times and names
// of relationships and events.
//
// Every fact is merged so that a signal applied twice, or signals applied
// in any order, leave the same state: collection keeps the earliest time,
// activity the latest, an end counts only if later than a resumption.
type subjectState struct {
	// Collected maps a category to when its data was first collected.
	Collected map[string]time.Time `json:"col,omitempty"`
	// Active is the latest activity.
	Active time.Time `json:"act,omitzero"`
	// Ended and Resumed map a relationship to its latest end and resumption.
	Ended   map[string]time.Time `json:"end,omitempty"`
	Resumed map[string]time.Time `json:"res,omitempty"`
	// Suspended and Reactivated are the latest suspension and re-activation.
	Suspended   time.Time `json:"sus,omitzero"`
	Reactivated time.Time `json:"rea,omitzero"`
	// Withdrawn maps a consent purpose to its first withdrawal.
	Withdrawn map[string]time.Time `json:"wd,omitempty"`
	// Events maps a named event to its first occurrence.
	Events map[string]time.Time `json:"ev,omitempty"`
	// Purged maps a category to the directive last issued for it.
	Purged map[string]purge `json:"pur,omitempty"`
	// Held maps a category to the purge rule a hold keeps from purging it.
	Held map[string]string `json:"held,omitempty"`
	// Deferred is data systems keep until a date ("retained until"), to be
	// erased then.
	Deferred []deferred `json:"def,omitempty"`

	// stored is what loadTx read, so that saveTx, in the same transaction,
	// can tell an unchanged subject without reading it again.
	stored *storedItem
}

// storedItem is a subject's record as it is in the file.
type storedItem struct {
	due     time.Time
	payload []byte
}

// purge records a directive issued for a category.
type purge struct {
	// For is the purge date the directive was issued for: the category is
	// purged again only for a later date (new activity after the purge).
	For  time.Time `json:"for"`
	At   time.Time `json:"at"`
	Rule string    `json:"rule"`
}

// deferred is data one system keeps until a date, under the cause of the
// directive it answered.
type deferred struct {
	Until      time.Time          `json:"until"`
	System     string             `json:"system"`
	Categories []string           `json:"cats"`
	CauseKind  commonv1.CauseKind `json:"ck"`
	CauseID    string             `json:"cid"`
	Action     int32              `json:"act"`
	// Basis is the legal basis the system stated, for explanations.
	Basis string `json:"basis,omitempty"`
}

func decodeState(payload []byte) (*subjectState, error) {
	st := &subjectState{}
	if len(payload) == 0 {
		return st, nil
	}
	if err := json.Unmarshal(payload, st); err != nil {
		return nil, fmt.Errorf("retention: subject state: %w", err)
	}
	return st, nil
}

func subjectKey(tenant, subject string) []byte { return store.Key(tenant, subject) }

// decodeItem reads a scheduler item: its tenant and subject, from the key,
// and the subject's state, from the payload.
func decodeItem(key, payload []byte) (tenant, subject string, st *subjectState, err error) {
	if tenant, subject, err = splitSubjectKey(key); err != nil {
		return "", "", nil, err
	}
	st, err = decodeState(payload)
	return tenant, subject, st, err
}

// splitSubjectKey returns the tenant and subject of a scheduler item key.
func splitSubjectKey(k []byte) (tenant, subject string, err error) {
	for i, b := range k {
		if b == 0 {
			rest := k[i+1:]
			if len(rest) == 0 || rest[len(rest)-1] != 0 {
				break
			}
			return string(k[:i]), string(rest[:len(rest)-1]), nil
		}
	}
	return "", "", fmt.Errorf("retention: corrupt subject key %q", k)
}

// setEarliest and setLatest merge a time into a map entry.
func setEarliest(m *map[string]time.Time, k string, at time.Time) {
	if *m == nil {
		*m = map[string]time.Time{}
	}
	if cur, ok := (*m)[k]; !ok || at.Before(cur) {
		(*m)[k] = at
	}
}

func setLatest(m *map[string]time.Time, k string, at time.Time) {
	if *m == nil {
		*m = map[string]time.Time{}
	}
	if cur, ok := (*m)[k]; !ok || at.After(cur) {
		(*m)[k] = at
	}
}

func latest(cur *time.Time, at time.Time) {
	if at.After(*cur) {
		*cur = at
	}
}

// apply merges a signal into the state.
func (st *subjectState) apply(sig *retentionv1.Signal) {
	at := sig.OccurredAt.AsTime()
	switch sig.Kind {
	case retentionv1.SignalKind_SIGNAL_KIND_COLLECTED:
		for _, c := range sig.Categories {
			// Data collected again after it was purged starts a new clock.
			if p, ok := st.Purged[c.Id]; ok && at.After(p.At) {
				delete(st.Purged, c.Id)
				delete(st.Collected, c.Id)
			}
			setEarliest(&st.Collected, c.Id, at)
		}
	case retentionv1.SignalKind_SIGNAL_KIND_ACTIVE:
		latest(&st.Active, at)
	case retentionv1.SignalKind_SIGNAL_KIND_RELATIONSHIP_ENDED:
		setLatest(&st.Ended, sig.Name, at)
	case retentionv1.SignalKind_SIGNAL_KIND_RELATIONSHIP_RESUMED:
		setLatest(&st.Resumed, sig.Name, at)
	case retentionv1.SignalKind_SIGNAL_KIND_SUSPENDED:
		latest(&st.Suspended, at)
	case retentionv1.SignalKind_SIGNAL_KIND_REACTIVATED:
		latest(&st.Reactivated, at)
	case retentionv1.SignalKind_SIGNAL_KIND_EVENT:
		setEarliest(&st.Events, sig.Name, at)
	}
}

// facts are the engine's facts about one category of the subject's data.
func (st *subjectState) facts(category string) rules.Facts {
	f := rules.Facts{
		Collected: st.Collected[category], LastActivity: st.Active,
		Suspended: st.Suspended, Reactivated: st.Reactivated,
		ConsentWithdrawn: st.Withdrawn, Events: st.Events,
	}
	for name, end := range st.Ended {
		if end.After(st.Resumed[name]) {
			if f.RelationshipEnded == nil {
				f.RelationshipEnded = map[string]time.Time{}
			}
			f.RelationshipEnded[name] = end
		}
	}
	return f
}

// verdicts evaluates every tracked category of the subject.
func (st *subjectState) verdicts(p *policy, subject string, now time.Time) map[string]rules.Verdict {
	out := make(map[string]rules.Verdict, len(st.Collected))
	for c := range st.Collected {
		out[c] = rules.Evaluate(p.rules, c, subject, st.facts(c), p.holds, now)
	}
	return out
}

// pending reports whether a verdict's purge is still to be issued.
func (st *subjectState) pending(category string, v rules.Verdict) bool {
	if !v.Due {
		return false
	}
	done, ok := st.Purged[category]
	return !ok || v.PurgeAt.After(done.For)
}

// nextDue is when the subject next needs the sweep: the earliest pending
// purge or deferred erasure; zero for never.
func (st *subjectState) nextDue(verdicts map[string]rules.Verdict) time.Time {
	var next time.Time
	earlier := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for c, v := range verdicts {
		if st.pending(c, v) {
			earlier(v.PurgeAt)
		}
	}
	for _, d := range st.Deferred {
		earlier(d.Until)
	}
	return next
}

// heldBy lists the categories a hold keeps from a purge rule that set a
// date, with that rule.
func heldBy(verdicts map[string]rules.Verdict) map[string]string {
	var out map[string]string
	for c, v := range verdicts {
		if !v.Due && v.HeldBy != "" && v.RuleID != "" {
			if out == nil {
				out = map[string]string{}
			}
			out[c] = v.RuleID
		}
	}
	return out
}

// loadTx returns the subject's state and whether Lethe tracks the subject.
func (s *Service) loadTx(tx *bolt.Tx, tenant, subject string) (*subjectState, bool, error) {
	due, payload, ok, err := s.scheduler.GetTx(tx, subjectKey(tenant, subject))
	if err != nil || !ok {
		return &subjectState{}, false, err
	}
	st, err := decodeState(payload)
	if err == nil {
		st.stored = &storedItem{due: due, payload: payload}
	}
	return st, true, err
}

// saveTx evaluates the subject at now, keeps its held categories and the
// rules' held counts current, and schedules it for its next due date. It
// returns that date.
func (s *Service) saveTx(tx *bolt.Tx, tenant, subject string, st *subjectState, p *policy, now time.Time) (time.Time, error) {
	verdicts := st.verdicts(p, subject, now)
	held := heldBy(verdicts)
	for c, rule := range st.Held {
		if held[c] != rule {
			if err := countTx(tx, tenant, rule, func(r *ruleCounts) { r.Held-- }); err != nil {
				return time.Time{}, err
			}
		}
	}
	for c, rule := range held {
		if st.Held[c] != rule {
			if err := countTx(tx, tenant, rule, func(r *ruleCounts) { r.Held++ }); err != nil {
				return time.Time{}, err
			}
		}
	}
	st.Held = held
	payload, err := json.Marshal(st)
	if err != nil {
		return time.Time{}, err
	}
	next := st.nextDue(verdicts)
	key := subjectKey(tenant, subject)
	stored := st.stored
	if stored == nil {
		due, old, ok, err := s.scheduler.GetTx(tx, key)
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			stored = &storedItem{due: due, payload: old}
		}
	}
	if stored != nil && stored.due.Equal(next) && bytes.Equal(stored.payload, payload) {
		// Nothing changed (a repeated signal, a rescan that moves nothing):
		// write nothing.
		return next, nil
	}
	if err := s.scheduler.SetTx(tx, key, next, payload); err != nil {
		return time.Time{}, err
	}
	st.stored = &storedItem{due: next, payload: payload}
	return next, nil
}

// actionOf converts a stored action.
func actionOf(a int32) eventsv1.ErasureAction { return eventsv1.ErasureAction(a) }

// updateSubjectTx changes a subject's state and reschedules it.
func (s *Service) updateSubjectTx(tx *bolt.Tx, tenant, subject string, p *policy, change func(*subjectState)) (time.Time, error) {
	st, _, err := s.loadTx(tx, tenant, subject)
	if err != nil {
		return time.Time{}, err
	}
	change(st)
	now := s.Clock.Now()
	next, err := s.saveTx(tx, tenant, subject, st, p, now)
	if err == nil && !next.IsZero() && !next.After(now) {
		tx.OnCommit(s.wakeSweeper)
	}
	return next, err
}
