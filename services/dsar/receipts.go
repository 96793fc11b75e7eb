package dsar

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/hashchain"
	"github.com/lethe-privacy/lethe/platform/store"
)

// receipts is the hash chain of completion receipts.
var receipts = hashchain.New(bucketReceipts)

// receiptTx appends the request's receipt to the receipt chain.
func (s *Service) receiptTx(tx *bolt.Tx, r *dsarv1.Request) error {
	rc := &dsarv1.Receipt{DsarId: r.DsarId, TenantId: r.TenantId, SubjectId: r.SubjectId, Type: r.Type, State: r.State,
		ReceivedAt: r.Deadline.ReceivedAt, ClosedAt: r.ClosedAt}
	for _, sys := range r.GetResult().GetTasks() {
		rc.Entries = append(rc.Entries, &dsarv1.ReceiptEntry{SystemId: sys.SystemId, Outcome: sys.Outcome, AnsweredAt: sys.AnsweredAt,
			Retained: sys.Retained, Held: sys.State == commonv1.TaskState_TASK_STATE_HELD})
	}
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(rc)
	if err != nil {
		return err
	}
	e, err := receipts.AppendTx(tx, s.Clock.Now(), payload)
	if err != nil {
		return err
	}
	return store.BucketTx(tx, bucketReceiptIndex).Put([]byte(r.DsarId), store.Uint64Key(e.Seq))
}

// GetReceipt implements DsarService.
func (s *Service) GetReceipt(_ context.Context, req *dsarv1.GetReceiptRequest) (*dsarv1.GetReceiptResponse, error) {
	resp := &dsarv1.GetReceiptResponse{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		if _, err := s.loadTx(tx, req.TenantId, req.DsarId); err != nil {
			return err
		}
		v := store.BucketTx(tx, bucketReceiptIndex).Get([]byte(req.DsarId))
		if v == nil {
			return apierror.FailedPrecondition(apierror.ReasonIllegalTransition, "the request is not closed: it has no receipt yet")
		}
		seq := store.KeyUint64(v)
		errFound := errors.New("found")
		err := receipts.RangeTx(tx, seq, func(e hashchain.Entry) error {
			rc := &dsarv1.Receipt{}
			if err := proto.Unmarshal(e.Payload, rc); err != nil {
				return err
			}
			rc.Sequence, rc.Hash, rc.PreviousHash = e.Seq, e.Hash[:], e.Prev[:]
			resp.Receipt = rc
			return errFound
		})
		if errors.Is(err, errFound) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("dsar: receipt %d of %s missing from the chain", seq, req.DsarId)
		}
		return err
	})
	return resp, err
}

// VerifyReceipts checks the whole receipt chain and returns how many
// receipts it holds.
func (s *Service) VerifyReceipts() (uint64, error) {
	var n uint64
	err := s.DB.View(func(tx *bolt.Tx) error {
		var err error
		n, err = receipts.VerifyTx(tx)
		return err
	})
	return n, err
}
