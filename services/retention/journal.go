package retention

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/mutation"
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
// transactions of thousands. Signals are facts that merge (see
// subjectState), so applying them later, in another order, or twice, gives
// the same state as applying them once at once.
//
// The journal is a file of its own, retention-journal.db, holding with
// each signal its call's audit entry (an entry commits in its change's
// transaction, so in its file). It holds no idempotency records: a signal
// recorded twice merges into the same state, so a retry needs no record of
// the first call, and a record under a random key would cost each call a
// page of its own (mutation.ApplyFact). bbolt has one
// writer per file: in retention.db, each signal's commit would wait behind
// the applier's transactions, which rewrite thousands of subjects' pages,
// and behind sweeps. In a file of its own it waits only for other signals.
// The applier applies entries to retention.db first and deletes them from
// the journal after, so a crash in between applies them again, which
// merging makes harmless.
//
// Everything that reads subjects' state (a sweep, a rescan, ExplainSubject,
// PreviewPurges, the metrics) first applies the journal, so no reader ever
// sees a state older than an acknowledged signal.

// applyBatch bounds the signals applied in one transaction.
const applyBatch = 20_000

// applyDelay is how long the applier lets signals gather after the first
// one arrives. Applying each group commit's few signals at once would write
// as many scattered pages per signal as applying them one by one; gathered,
// one transaction applies thousands. Readers of dates do not wait for it:
// they apply the journal themselves.
const applyDelay = 500 * time.Millisecond

// openJournal opens the journal file, with the mutator and audit log of
// the calls that write it, and moves into it what an earlier version
// journaled in retention.db.
func (s *Service) openJournal() error {
	db, err := s.OpenFile(journalSchema)
	if err != nil {
		return err
	}
	s.journal = db
	s.journalMutator = mutation.New(db, s.Idempotency)
	return s.drainLegacyJournal()
}

// drainLegacyJournal moves signals that a version before the journal had a
// file of its own left unapplied in retention.db into the journal file,
// then drops the old bucket. A crash in between leaves them in both, and
// applying a signal twice is harmless.
func (s *Service) drainLegacyJournal() error {
	var (
		legacy  bool
		entries [][]byte
	)
	if err := s.DB.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketJournal)
		legacy = b != nil
		if !legacy {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			entries = append(entries, bytes.Clone(v))
			return nil
		})
	}); err != nil || !legacy {
		// A file from this version: no commit at start-up.
		return err
	}
	if len(entries) > 0 {
		if err := s.journal.Update(func(tx *bolt.Tx) error {
			for _, v := range entries {
				if err := appendJournalTx(tx, v); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
		s.Logger.Info("retention: moved journaled signals to the journal file", "signals", len(entries))
	}
	return s.DB.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketJournal) })
}

// journalTx appends a signal to the journal, in a transaction of the
// journal file, and tells the applier once the transaction commits.
func (s *Service) journalTx(tx *bolt.Tx, tenant string, sig *retentionv1.Signal) error {
	body, err := proto.Marshal(sig)
	if err != nil {
		return err
	}
	if err := appendJournalTx(tx, append(append([]byte(tenant), 0), body...)); err != nil {
		return err
	}
	tx.OnCommit(s.wakeApplier)
	return nil
}

func appendJournalTx(tx *bolt.Tx, entry []byte) error {
	b := store.AppendBucketTx(tx, bucketJournal)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	return b.Put(store.Uint64Key(seq), entry)
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

// journaled is a signal read from the journal, with its key.
type journaled struct {
	key    []byte
	tenant string
	signal *retentionv1.Signal
	// bad is why the entry cannot be applied, and raw the entry as stored
	// (set only then): such an entry is parked (parked.go), not applied.
	raw []byte
	bad error
}

// parkedKey is where the entry is parked.
func (e journaled) parkedKey() []byte {
	return parkedKey(e.tenant, e.signal.GetSubjectId(), parkedSignal, fmt.Sprintf("%020d", store.KeyUint64(e.key)))
}

// subjectError is the failure of applying signals to one subject (or,
// with no subject, to every subject of a tenant): its signals are parked,
// and the others applied.
type subjectError struct {
	tenant, subject string
	err             error
}

func (e *subjectError) Error() string {
	return fmt.Sprintf("retention: subject %q of tenant %q: %v", e.subject, e.tenant, e.err)
}

func (e *subjectError) Unwrap() error { return e.err }

// applyJournal folds every journaled signal into its subject and returns
// how many it applied.
func (s *Service) applyJournal() (int, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	applied := 0
	for {
		// Read in a transaction of its own, kept short: a long read would
		// keep the journal file from growing its memory map, and so hold
		// up the signals' commits.
		entries, err := s.readJournal(applyBatch)
		if err != nil || len(entries) == 0 {
			return applied, err
		}
		if err := s.applyOrPark(entries); err != nil {
			return applied, err
		}
		// Deleting is idempotent, so it may share the signals' group
		// commit rather than take a commit of its own.
		if err := s.journal.Batch(func(tx *bolt.Tx) error {
			b := store.BucketTx(tx, bucketJournal)
			for _, e := range entries {
				if err := b.Delete(e.key); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return applied, err
		}
		applied += len(entries)
		if len(entries) < applyBatch {
			return applied, nil
		}
	}
}

// applyOrPark applies journaled entries to retention.db in one
// transaction, and parks, in the same transaction, those that cannot be
// applied: an entry that does not decode or reports a time outside the
// sane window (readJournal marks them), and the signals of a subject whose
// update fails. Such a failure rolls the transaction back; its subject's
// signals are marked and the rest applied again, so one poisoned subject
// costs a retry, not the applier. Other errors (a failed commit) are
// returned, and the entries stay journaled for the next attempt.
func (s *Service) applyOrPark(entries []journaled) error {
	for {
		err := s.DB.Update(func(tx *bolt.Tx) error {
			for _, e := range entries {
				if e.bad != nil {
					if err := s.parkTx(tx, e.parkedKey(), parkedSignal, e.raw, e.bad); err != nil {
						return err
					}
				}
			}
			return s.applyTx(tx, entries)
		})
		var failed *subjectError
		if !errors.As(err, &failed) {
			return err
		}
		for i, e := range entries {
			if e.bad == nil && e.tenant == failed.tenant && (failed.subject == "" || e.signal.SubjectId == failed.subject) {
				body, err := proto.Marshal(e.signal)
				if err != nil {
					return err
				}
				entries[i].raw, entries[i].bad = append([]byte(e.tenant+"\x00"), body...), failed.err
			}
		}
	}
}

// readJournal returns up to limit journaled signals, oldest first. An
// entry that cannot be applied is returned with the reason, to be parked.
func (s *Service) readJournal(limit int) ([]journaled, error) {
	var entries []journaled
	err := s.journal.View(func(tx *bolt.Tx) error {
		c := store.BucketTx(tx, bucketJournal).Cursor()
		for k, v := c.First(); k != nil && len(entries) < limit; k, v = c.Next() {
			e := journaled{key: bytes.Clone(k), signal: &retentionv1.Signal{}}
			tenant, body, ok := cutTenant(v)
			switch {
			case !ok:
				e.bad = errors.New("corrupt journal entry: no tenant")
			default:
				e.tenant = tenant
				if err := proto.Unmarshal(body, e.signal); err != nil {
					e.bad = fmt.Errorf("journal entry does not decode: %w", err)
				} else if _, err := factTime(e.signal.OccurredAt); err != nil {
					// Recorded before the edge refused such times, or
					// written around it: never folded into a subject.
					e.bad = fmt.Errorf("occurred_at: %w", err)
				}
			}
			if e.bad != nil {
				e.raw = bytes.Clone(v)
			}
			entries = append(entries, e)
		}
		return nil
	})
	return entries, err
}

// applyTx applies journaled signals, one load and one save per subject,
// and skips those marked bad. The failure of a subject's update is a
// *subjectError.
func (s *Service) applyTx(tx *bolt.Tx, entries []journaled) error {
	type subject struct{ tenant, id string }
	var (
		order   []subject
		signals = map[subject][]*retentionv1.Signal{}
	)
	for _, e := range entries {
		if e.bad != nil {
			continue
		}
		sub := subject{e.tenant, e.signal.SubjectId}
		if _, seen := signals[sub]; !seen {
			order = append(order, sub)
		}
		signals[sub] = append(signals[sub], e.signal)
	}
	// In key order, as the subjects lie in the file: each lookup then
	// walks pages the last one brought into memory.
	slices.SortFunc(order, func(a, b subject) int {
		return cmp.Or(strings.Compare(a.tenant, b.tenant), strings.Compare(a.id, b.id))
	})
	for _, sub := range order {
		p, err := s.policyTx(tx, sub.tenant)
		if err != nil {
			// Every subject of the tenant would fail alike: park its
			// signals at once rather than one subject per retry.
			return &subjectError{tenant: sub.tenant, err: fmt.Errorf("the tenant's rules: %w", err)}
		}
		_, err = s.updateSubjectTx(tx, sub.tenant, sub.id, p, func(st *subjectState) {
			for _, sig := range signals[sub] {
				st.apply(sig)
			}
		})
		if err != nil {
			return &subjectError{tenant: sub.tenant, subject: sub.id, err: err}
		}
	}
	return nil
}

func cutTenant(v []byte) (tenant string, rest []byte, ok bool) {
	for i, b := range v {
		if b == 0 {
			return string(v[:i]), v[i+1:], i > 0
		}
	}
	return "", nil, false
}
