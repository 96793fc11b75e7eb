// Package mutation runs a state change the way every Lethe mutation must
// run: idempotent under the caller's request id, with a validate-only (dry
// run) mode that exercises the same code without committing, and with its
// audit entry committed in the same bbolt transaction as the change.
//
// A handler looks like
//
//	func (s *Service) CreatePurpose(ctx context.Context, req *pb.CreatePurposeRequest) (*pb.CreatePurposeResponse, error) {
//		return mutation.Apply(ctx, s.mutator, req, func(tx *bolt.Tx) (*pb.CreatePurposeResponse, error) {
//			// validate against current state, write, build the response
//		})
//	}
//
// The request id scopes to (tenant, request message type), so one id may be
// used once per kind of mutation and tenant.
//
// ApplyFact runs a change that is idempotent by its content, such as a
// retention signal, which merges: it keeps no record under the request id,
// since running the call again changes nothing.
package mutation

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/idempotency"
	"github.com/lethe-privacy/lethe/platform/store"
)

// Request is a mutation request: every one carries a request id and, when
// it is tenant-scoped, a tenant id (protoc-gen-go generates the getters).
type Request interface {
	proto.Message
	GetRequestId() string
}

// validateOnly is implemented by configuration requests that offer a dry
// run (a validate_only field).
type validateOnly interface{ GetValidateOnly() bool }

type tenantScoped interface{ GetTenantId() string }

// MaxRequestIDLength bounds request ids so they cannot bloat the store.
// A request id is 1 to MaxRequestIDLength printable ASCII characters
// without spaces ('!' to '~'): it is written to the audit chain and to log
// lines, where a NUL, an escape sequence or a newline could forge or hide
// a line.
const MaxRequestIDLength = 128

// Mutator applies mutations to one service's database.
type Mutator struct {
	db   *store.DB
	idem *idempotency.Store
}

// New returns a Mutator over db, remembering results in idem.
func New(db *store.DB, idem *idempotency.Store) *Mutator {
	return &Mutator{db: db, idem: idem}
}

// errDryRun rolls back a validate-only transaction after it succeeded.
var errDryRun = errors.New("validate only: roll back")

// Apply runs fn in a write transaction and returns its response:
//   - a request id seen before with the same request returns the first
//     response without running fn; with a different request it is rejected
//     with InvalidArgument naming request_id;
//   - a request with validate_only set runs fn and rolls back, so a dry run
//     fails exactly where the real call would and changes nothing;
//   - otherwise the response is stored under the request id and the audit
//     entry of the call in flight (if the server's audit slot started one)
//     commits with the change, in the audit chain of m's file.
//
// fn may run more than once (bbolt batches concurrent writers and re-runs a
// batch member alone when another fails), each time in a fresh transaction:
// it must not have effects outside tx.
func Apply[Resp proto.Message](ctx context.Context, m *Mutator, req Request, fn func(tx *bolt.Tx) (Resp, error)) (Resp, error) {
	var zero Resp
	if err := checkRequestID(req); err != nil {
		return zero, err
	}
	requestID := req.GetRequestId()

	if v, ok := req.(validateOnly); ok && v.GetValidateOnly() {
		var resp Resp
		err := m.db.Update(func(tx *bolt.Tx) error {
			var err error
			if resp, err = fn(tx); err != nil {
				return err
			}
			return errDryRun
		})
		if !errors.Is(err, errDryRun) {
			return zero, err
		}
		if _, call, audited := audit.FromContext(ctx); audited {
			call.MarkRecorded()
		}
		return resp, nil
	}

	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return zero, fmt.Errorf("encode request: %w", err)
	}
	hash := sha256.Sum256(body)
	tenantID := ""
	if t, ok := req.(tenantScoped); ok {
		tenantID = t.GetTenantId()
	}
	key := idempotency.Key(tenantID, string(req.ProtoReflect().Descriptor().FullName()), requestID)

	var resp Resp
	err = m.batchAudited(ctx, func(tx *bolt.Tx) (bool, error) {
		rec, found, err := m.idem.LookupTx(tx, key)
		if err != nil {
			return false, err
		}
		if found {
			if rec.RequestHash != hash {
				return false, apierror.Invalid("request_id", "already used with a different request; choose a new request id for a new mutation")
			}
			replay := zero.ProtoReflect().Type().New().Interface().(Resp)
			if err := proto.Unmarshal(rec.Response, replay); err != nil {
				return false, fmt.Errorf("decode stored response: %w", err)
			}
			resp = replay
			return false, nil
		}
		if resp, err = fn(tx); err != nil {
			return false, err
		}
		out, err := proto.MarshalOptions{Deterministic: true}.Marshal(resp)
		if err != nil {
			return false, fmt.Errorf("encode response: %w", err)
		}
		_, err = m.idem.PutTx(tx, key, hash, out)
		return true, err
	})
	if err != nil {
		return zero, err
	}
	return resp, nil
}

// ApplyFact runs fn, which records facts that merge, in a write transaction
// shared with concurrent mutations, with the call's audit entry, and keeps
// no record under the request id. Recording a fact again leaves the state
// as recording it once did, so a retry is harmless without one: it runs
// again and gets the same answer. The request id is still required, and is
// kept in the audit entry; a request id used again, with the same request
// or another, is not refused, since every fact it carries is recorded
// either way.
//
// A record and its expiry entry cost each call a leaf and a path of
// branches in two B-trees; for the retention service's signals, that was
// 12 of the 21 pages each group commit wrote (docs/benchmarks.md §
// Retention). fn may run more than once, as under Apply.
func ApplyFact[Resp proto.Message](ctx context.Context, m *Mutator, req Request, fn func(tx *bolt.Tx) (Resp, error)) (Resp, error) {
	var zero Resp
	if err := checkRequestID(req); err != nil {
		return zero, err
	}
	var resp Resp
	err := m.batchAudited(ctx, func(tx *bolt.Tx) (bool, error) {
		var err error
		resp, err = fn(tx)
		return true, err
	})
	if err != nil {
		return zero, err
	}
	return resp, nil
}

// batchAudited runs change in a write transaction shared with concurrent
// mutations. When change reports that it changed something and the
// server's audit slot started an entry for the call, the entry is appended
// in the same transaction, in the chain of m's file. Once the transaction
// commits the call counts as recorded: now, or as a replay that changed
// nothing.
func (m *Mutator) batchAudited(ctx context.Context, change func(tx *bolt.Tx) (changed bool, err error)) error {
	log, call, audited := audit.FromContext(ctx)
	err := m.db.Batch(func(tx *bolt.Tx) error {
		changed, err := change(tx)
		if err != nil || !changed || !audited {
			return err
		}
		return log.AppendTx(tx, call.Entry)
	})
	if err == nil && audited {
		call.MarkRecorded()
	}
	return err
}

// checkRequestID refuses a request without a request id or with one too
// long to keep.
func checkRequestID(req Request) error {
	id := req.GetRequestId()
	switch {
	case id == "":
		return apierror.Invalid("request_id", "required: every mutation is idempotent under a request id the caller chooses")
	case len(id) > MaxRequestIDLength:
		return apierror.Invalid("request_id", fmt.Sprintf("at most %d bytes", MaxRequestIDLength))
	}
	for i := range len(id) {
		if c := id[i]; c < '!' || c > '~' {
			return apierror.Invalid("request_id", fmt.Sprintf("byte %d is not printable ASCII: a request id is made of the characters '!' to '~', without spaces", i))
		}
	}
	return nil
}
