package retention

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/store"
)

// Signals are journaled, then applied in bulk.
//
// A signal must be durable when RecordSignal answers, but folding it into
// its subject at once would rewrite one random page of a large file per
// signal, and a group commit of fifty signals would write fifty scattered
// pages and their parents before its fsync. So the RPC appends the signal
// to a journal, in arrival order, where a whole group commit fills one or
// two pages; the applier folds journaled signals into their subjects in
// transactions of thousands, each entry deleted in the transaction that
// applied it. Signals are facts that merge (see subjectState), so applying
// them later, or in another order, gives the same state as applying them at
// once.
//
// Everything that reads subjects' state (a sweep, a rescan, ExplainSubject,
// PreviewPurges, the metrics) first applies the journal, so no reader ever
// sees a state older than an acknowledged signal.

// bucketJournal maps a sequence number → tenant NUL signal: signals
// recorded and not yet applied.
var bucketJournal = store.Bucket("retention.signal_journal")

// applyBatch bounds the signals applied in one transaction.
const applyBatch = 5000

// applyDelay is how long the applier lets signals gather after the first
// one arrives. Applying each group commit's few signals at once would take
// the store's single writer from the RPCs as often as they commit, and write
// as many scattered pages per signal as applying them one by one; gathered,
// one transaction applies thousands. Readers of dates do not wait for it:
// they apply the journal themselves.
const applyDelay = 100 * time.Millisecond

// journalTx appends a signal to the journal and tells the applier once the
// transaction commits.
func (s *Service) journalTx(tx *bolt.Tx, tenant string, sig *retentionv1.Signal) error {
	b := store.BucketTx(tx, bucketJournal)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	body, err := proto.Marshal(sig)
	if err != nil {
		return err
	}
	v := append(append([]byte(tenant), 0), body...)
	if err := b.Put(store.Uint64Key(seq), v); err != nil {
		return err
	}
	tx.OnCommit(s.wakeApplier)
	return nil
}

func (s *Service) wakeApplier() {
	select {
	case s.journaled <- struct{}{}:
	default:
	}
}

// runApplier applies journaled signals as they arrive until ctx ends.
func (s *Service) runApplier(ctx context.Context) error {
	for {
		if _, err := s.applyJournal(); err != nil {
			s.Logger.Error("retention: applying journaled signals failed; retrying", "error", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.journaled:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(applyDelay):
		}
	}
}

// applyJournal folds every journaled signal into its subject and returns
// how many it applied.
func (s *Service) applyJournal() (int, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	applied := 0
	for {
		var n int
		err := s.DB.Update(func(tx *bolt.Tx) error {
			var err error
			n, err = s.applyJournalTx(tx)
			return err
		})
		applied += n
		if err != nil || n < applyBatch {
			return applied, err
		}
	}
}

// applyJournalTx applies up to applyBatch journaled signals, oldest first,
// one load and one save per subject.
func (s *Service) applyJournalTx(tx *bolt.Tx) (int, error) {
	type subject struct{ tenant, id string }
	var (
		order   []subject
		signals = map[subject][]*retentionv1.Signal{}
		keys    [][]byte
	)
	c := store.BucketTx(tx, bucketJournal).Cursor()
	for k, v := c.First(); k != nil && len(keys) < applyBatch; k, v = c.Next() {
		tenant, body, ok := cutTenant(v)
		if !ok {
			return 0, fmt.Errorf("retention: corrupt journal entry %x", k)
		}
		sig := &retentionv1.Signal{}
		if err := proto.Unmarshal(body, sig); err != nil {
			return 0, fmt.Errorf("retention: journal entry %x: %w", k, err)
		}
		sub := subject{tenant, sig.SubjectId}
		if _, seen := signals[sub]; !seen {
			order = append(order, sub)
		}
		signals[sub] = append(signals[sub], sig)
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, sub := range order {
		p, err := s.policyTx(tx, sub.tenant)
		if err != nil {
			return 0, err
		}
		_, err = s.updateSubjectTx(tx, sub.tenant, sub.id, p, func(st *subjectState) {
			for _, sig := range signals[sub] {
				st.apply(sig)
			}
		})
		if err != nil {
			return 0, err
		}
	}
	b := store.BucketTx(tx, bucketJournal)
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

func cutTenant(v []byte) (tenant string, rest []byte, ok bool) {
	for i, b := range v {
		if b == 0 {
			return string(v[:i]), v[i+1:], i > 0
		}
	}
	return "", nil, false
}
