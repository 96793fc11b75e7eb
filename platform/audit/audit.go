// Package audit records who changed what in a Lethe service, in a
// hash-chained log that detects any altered, removed or reordered entry.
//
// Entries hold ids — the caller's identity, the method, the tenant, the
// request id and the affected object's id — and never personal data, so the
// audit log never has to be erased. The server's audit slot records every
// successful mutation; when the handler uses package mutation the entry
// commits in the same bbolt transaction as the change it records.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/hashchain"
	"github.com/lethe-privacy/lethe/platform/store"
)

// Entry is one audited action.
type Entry struct {
	// Time is when the action was recorded; set by the log.
	Time time.Time `json:"-"`
	// Actor is the authenticated identity's name.
	Actor string `json:"actor"`
	// Method is the full gRPC method.
	Method string `json:"method"`
	// TenantID is the tenant acted for, if the method is tenant-scoped.
	TenantID string `json:"tenant,omitempty"`
	// RequestID is the caller's idempotency key.
	RequestID string `json:"request_id,omitempty"`
	// Target is the id of the object the action created or changed, when the
	// handler names one (never a data subject's contact data).
	Target string `json:"target,omitempty"`
	// Code is the gRPC code of the outcome: OK, or PermissionDenied for a
	// refused call.
	Code string `json:"code"`
}

// Log is a service's audit log, kept in its own bbolt file.
type Log struct {
	db    *store.DB
	chain *hashchain.Chain
	clock clock.Clock
}

// New returns the audit log kept in db.
func New(db *store.DB, clk clock.Clock) *Log {
	return &Log{db: db, chain: hashchain.New(store.BucketAudit), clock: clk}
}

// AppendTx records e within the caller's transaction, in the chain of the
// transaction's file: a service with several files keeps a chain in each
// that takes changes, because an entry commits with the change it records.
func (l *Log) AppendTx(tx *bolt.Tx, e Entry) error {
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode audit entry: %w", err)
	}
	ce, err := l.chain.AppendTx(tx, l.clock.Now(), payload)
	if err != nil {
		return err
	}
	return putHeadCopyTx(tx, ce.Seq, ce.Hash)
}

// Append records e in a transaction of its own.
func (l *Log) Append(e Entry) error {
	return l.db.Update(func(tx *bolt.Tx) error { return l.AppendTx(tx, e) })
}

// Verify checks the whole chain and returns how many entries it holds. A
// *hashchain.VerifyError names the first entry that was tampered with.
func (l *Log) Verify() (uint64, error) {
	var n uint64
	err := l.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = l.chain.VerifyTx(tx)
		return err
	})
	return n, err
}

// Range calls fn for each entry from sequence number from on, in order.
func (l *Log) Range(from uint64, fn func(seq uint64, e Entry) error) error {
	return l.db.View(func(tx *bolt.Tx) error {
		return l.chain.RangeTx(tx, from, func(ce hashchain.Entry) error {
			var e Entry
			if err := json.Unmarshal(ce.Payload, &e); err != nil {
				return fmt.Errorf("decode audit entry %d: %w", ce.Seq, err)
			}
			e.Time = ce.Time
			return fn(ce.Seq, e)
		})
	})
}

// Call is the audit slot's record of one mutation in flight. The handler
// may name its target; the mutation helper records the entry in the
// mutation's transaction and marks the call recorded, so the slot does not
// record it twice.
type Call struct {
	Entry
	recorded atomic.Bool
}

// Recorded reports whether the call's entry was already written, or needs
// none (a replay or a dry run changed nothing).
func (c *Call) Recorded() bool { return c.recorded.Load() }

// MarkRecorded tells the audit slot that nothing is left to record.
func (c *Call) MarkRecorded() { c.recorded.Store(true) }

type callKey struct{}

type callValue struct {
	log  *Log
	call *Call
}

// NewContext returns ctx carrying the call in flight and the log it belongs
// in.
func NewContext(ctx context.Context, log *Log, call *Call) context.Context {
	return context.WithValue(ctx, callKey{}, callValue{log: log, call: call})
}

// FromContext returns the call in flight and its log, if the audit slot
// started one.
func FromContext(ctx context.Context) (*Log, *Call, bool) {
	v, ok := ctx.Value(callKey{}).(callValue)
	return v.log, v.call, ok
}
