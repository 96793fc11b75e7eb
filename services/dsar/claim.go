package dsar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// ConnectServiceAccount is the last path segment of lethe-connect's
// identity: the runner's SPIFFE id ends in "sa/lethe-connect", as
// spiffe://lethe.internal/ns/lethe/sa/lethe-connect does (the service
// account form every Lethe deployable has), which no system's identity,
// ending in "system/<system id>", can.
const ConnectServiceAccount = "lethe-connect"

// mayActFor checks that the authenticated caller may act for system of
// tenant, whose task, when there is one, is answered in mode:
//   - a system's identity, a name whose last two path segments are
//     "system/<system id>" (spiffe://lethe.example/system/newsletter),
//     acts only for itself, and one that names its tenant
//     (.../tenant/clio/system/newsletter) only in that tenant;
//   - lethe-connect's identity (ConnectServiceAccount) acts for exactly
//     the systems it answers: those the registry lists now with answer
//     mode WEBHOOK or CONNECTOR. The registry, not the task, decides,
//     because the runner answers a system's consumers from the moment it
//     is registered so; a system the registry no longer knows is refused;
//   - for a system answered by hand, whoever the policy lets call (an
//     operator), lethe-connect excepted.
//
// In the development profile every local caller is auth.DevIdentityName
// and may act as any system, as the development policy lets it call
// anything; production authenticators never give that name.
func (s *Service) mayActFor(ctx context.Context, tenant, system string, mode commonv1.AnswerMode) error {
	id, ok := auth.FromContext(ctx)
	if !ok || id.Name == "" {
		return apierror.Unauthenticated("the caller is not authenticated")
	}
	if id.Name == auth.DevIdentityName {
		return nil
	}
	segs := strings.Split(id.Name, "/")
	n := len(segs)
	switch {
	case n >= 2 && segs[n-2] == "sa" && segs[n-1] == ConnectServiceAccount:
		return s.connectAnswers(ctx, id.Name, tenant, system)
	case mode == commonv1.AnswerMode_ANSWER_MODE_MANUAL:
		return nil
	case n >= 2 && segs[n-2] == "system" && segs[n-1] == system:
		// An identity that names its tenant (".../tenant/<id>/system/<id>")
		// acts in that tenant only, whatever tenants the policy grants it.
		if n >= 4 && segs[n-4] == "tenant" && segs[n-3] != tenant {
			return apierror.PermissionDenied(fmt.Sprintf("the caller %q is a system of tenant %q, not of %q", id.Name, segs[n-3], tenant))
		}
		return nil
	}
	return apierror.PermissionDenied(fmt.Sprintf("the caller %q is not system %q", id.Name, system))
}

// connectAnswers checks that lethe-connect, calling as caller, answers
// system: its registration's answer mode is WEBHOOK or CONNECTOR.
func (s *Service) connectAnswers(ctx context.Context, caller, tenant, system string) error {
	sys, err := s.registeredSystem(ctx, tenant, system)
	if status.Code(err) == codes.NotFound {
		return apierror.PermissionDenied(fmt.Sprintf("the caller %q answers only registered systems, and %q is not one", caller, system))
	}
	if err != nil {
		return err
	}
	switch m := sys.GetAnswerMode(); m {
	case commonv1.AnswerMode_ANSWER_MODE_WEBHOOK, commonv1.AnswerMode_ANSWER_MODE_CONNECTOR:
		return nil
	default:
		return apierror.PermissionDenied(fmt.Sprintf("the caller %q answers only WEBHOOK and CONNECTOR systems; system %q answers by %s", caller, system, m))
	}
}

// findTask returns a request and the system's task for it, whatever the
// task's state, and checks that the caller may act for the system
// (mayActFor).
func (s *Service) findTask(ctx context.Context, tenant, id, system string) (*dsarv1.Request, tasks.Task, error) {
	var r *dsarv1.Request
	err := s.DB.View(func(tx *bolt.Tx) error {
		var err error
		r, err = s.loadTx(tx, tenant, id)
		return err
	})
	if err != nil {
		return nil, tasks.Task{}, err
	}
	ts, err := s.tracker.CauseTasks(tenant, causeOf(id))
	if err != nil {
		return nil, tasks.Task{}, err
	}
	for _, t := range ts {
		if t.SystemID != system {
			continue
		}
		if err := s.mayActFor(ctx, tenant, system, t.Mode); err != nil {
			return nil, tasks.Task{}, err
		}
		return r, t, nil
	}
	if err := s.mayActFor(ctx, tenant, system, commonv1.AnswerMode_ANSWER_MODE_UNSPECIFIED); err != nil {
		return nil, tasks.Task{}, err
	}
	return nil, tasks.Task{}, apierror.FailedPrecondition(apierror.ReasonTaskNotOpen, fmt.Sprintf("system %q has no task for request %s", system, id))
}

// openTask is findTask for a task still open, of one of kinds when given.
func (s *Service) openTask(ctx context.Context, tenant, id, system string, kinds ...contract.Kind) (*dsarv1.Request, tasks.Task, error) {
	r, t, err := s.findTask(ctx, tenant, id, system)
	switch {
	case err != nil:
		return nil, t, err
	case t.State == tasks.StateFinal || r.State != dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS:
		return nil, t, apierror.FailedPrecondition(apierror.ReasonTaskNotOpen, fmt.Sprintf("system %q has no open task for request %s", system, id))
	case len(kinds) > 0 && !slices.Contains(kinds, t.Kind):
		return nil, t, apierror.FailedPrecondition(apierror.ReasonWrongRequestType, fmt.Sprintf("the task of system %q is a %s", system, t.Kind))
	}
	return r, t, nil
}

// GetIdentifiers implements DsarService: the claim check. A system is
// given only the identifiers its registration says it holds, in the forms
// it holds them (see minimise); a system that holds no identifier in
// plain form is given no corrected values either, which are plain.
func (s *Service) GetIdentifiers(ctx context.Context, req *dsarv1.GetIdentifiersRequest) (*dsarv1.GetIdentifiersResponse, error) {
	if _, _, err := s.openTask(ctx, req.TenantId, req.DsarId, req.SystemId); err != nil {
		return nil, err
	}
	held, err := s.systemIdentifiers(ctx, req.TenantId, req.SystemId)
	if err != nil {
		return nil, err
	}
	var out *dsarv1.GetIdentifiersResponse
	err = s.DB.View(func(tx *bolt.Tx) error {
		sec, err := secretsTx(tx, req.DsarId)
		if err != nil {
			return err
		}
		out, err = s.identifiersTx(tx, req.DsarId, sec)
		return err
	})
	if err != nil {
		return nil, err
	}
	out.Identifiers = minimise(out.Identifiers, held)
	if !holdsPlain(held) {
		out.Corrections = nil
	}
	return out, nil
}

// leftOut counts the records a portable copy leaves out, by reason.
type leftOut struct{ basis, notProvided, unknown int }

// SubmitBatch bounds the bytes of records SubmitData writes per
// transaction: a larger submission is written in several transactions.
const SubmitBatch = 1 << 20

// SubmitData implements DsarService. A new submission replaces an earlier
// one that did not finish. The system's task closes with DATA_SUBMITTED
// in the transaction that writes the last records.
func (s *Service) SubmitData(stream grpc.ClientStreamingServer[dsarv1.SubmitDataRequest, dsarv1.SubmitDataResponse]) error {
	sub, err := s.startSubmission(stream)
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := sub.add(msg.GetRecord()); err != nil {
			return err
		}
	}
	if err := sub.write(true); err != nil {
		return err
	}
	return stream.SendAndClose(&dsarv1.SubmitDataResponse{Records: sub.records, Bytes: sub.size})
}

// submission is one system's SubmitData stream: the request and task it
// answers, the key its records are sealed with, and the records received
// but not yet written.
type submission struct {
	s      *Service
	r      *dsarv1.Request
	system string
	task   tasks.Task
	key    []byte
	// portable is set for a portability request, whose records are
	// filtered by legal basis and by the provenance of their category.
	portable   bool
	provenance map[string]registryv1.DataProvenance
	seq        uint64 // the last record's number
	records    int64  // records kept
	size       int64  // bytes of JSON kept
	dropped    leftOut
	batch      [][2][]byte // sealed records to write, keyed
	batchBytes int
}

// startSubmission receives the header, checks that the system has an open
// access task for the request, and clears what an earlier, unfinished
// submission of the system wrote.
func (s *Service) startSubmission(stream grpc.ClientStreamingServer[dsarv1.SubmitDataRequest, dsarv1.SubmitDataResponse]) (*submission, error) {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	h := first.GetHeader()
	if h == nil {
		return nil, apierror.Invalid("header", "the first message of a submission is its header")
	}
	r, task, err := s.openTask(ctx, h.TenantId, h.DsarId, h.SystemId, contract.KindAccessRequested)
	if err != nil {
		return nil, err
	}
	sub := &submission{s: s, r: r, system: h.SystemId, task: task,
		portable: r.Type == dsarv1.RequestType_REQUEST_TYPE_PORTABILITY}
	if sub.portable {
		if sub.provenance, err = s.provenances(ctx, h.TenantId); err != nil {
			return nil, err
		}
	}
	if sub.key, err = s.restartSubmission(r.DsarId, h.SystemId); err != nil {
		return nil, err
	}
	return sub, nil
}

// restartSubmission deletes the records system submitted earlier for
// request id and returns the request's key, which must not be destroyed.
func (s *Service) restartSubmission(id, system string) ([]byte, error) {
	var key []byte
	err := s.DB.Update(func(tx *bolt.Tx) error {
		sec, err := secretsTx(tx, id)
		if err != nil {
			return err
		}
		if sec.Key == nil {
			return apierror.FailedPrecondition(apierror.ReasonKeyDestroyed, "the request's key is destroyed")
		}
		var ok bool
		if key, ok = s.keys.Key(*sec.Key); !ok {
			return apierror.FailedPrecondition(apierror.ReasonKeyDestroyed, "the request's key is destroyed")
		}
		return deletePrefixTx(tx, bucketSubmissions, store.Key(id, system))
	})
	return key, err
}

// add validates a record, keeps it unless a portable copy leaves it out,
// and seals it into the batch, writing the batch once it is large.
func (sub *submission) add(rec *dsarv1.SubmittedRecord) error {
	if rec == nil {
		return apierror.Invalid("record", "only the first message of a submission is a header")
	}
	if !json.Valid(rec.JsonValue) {
		return apierror.Invalid("record.json_value", "not a JSON value")
	}
	if !sub.keep(rec) {
		return nil
	}
	plain, err := proto.Marshal(rec)
	if err != nil {
		return err
	}
	sealed, err := seal(sub.key, plain, aad(sub.r.DsarId, "submission"))
	if err != nil {
		return err
	}
	sub.seq++
	sub.batch = append(sub.batch, [2][]byte{append(store.Key(sub.r.DsarId, sub.system), binary.BigEndian.AppendUint64(nil, sub.seq)...), sealed})
	sub.batchBytes += len(sealed)
	sub.records++
	sub.size += int64(len(rec.JsonValue))
	if sub.batchBytes < SubmitBatch {
		return nil
	}
	if err := sub.write(false); err != nil {
		return err
	}
	sub.batch, sub.batchBytes = nil, 0
	return nil
}

// keep reports whether rec belongs in the answer, counting what a portable
// copy leaves out and why.
func (sub *submission) keep(rec *dsarv1.SubmittedRecord) bool {
	if !sub.portable {
		return true
	}
	if !slices.Contains(portableBases, rec.LegalBasis) {
		// Art. 20(1)(a): only data processed on consent or contract.
		sub.dropped.basis++
		return false
	}
	// Art. 20(1): only data the subject provided, observed data
	// included; a category of unknown provenance is left out.
	switch p := provenanceOf(sub.provenance, rec.Category.GetId()); {
	case p == registryv1.DataProvenance_DATA_PROVENANCE_UNSPECIFIED:
		sub.dropped.unknown++
		return false
	case !portableProvenance(p):
		sub.dropped.notProvided++
		return false
	}
	return true
}

// write stores the batch; the last write also records the counts and
// closes the system's task, in the same transaction.
func (sub *submission) write(last bool) error {
	return sub.s.DB.Batch(func(tx *bolt.Tx) error {
		b := store.BucketTx(tx, bucketSubmissions)
		for _, kv := range sub.batch {
			if err := b.Put(kv[0], kv[1]); err != nil {
				return err
			}
		}
		if !last {
			return nil
		}
		return sub.finishTx(tx)
	})
}

// finishTx records how many records the system submitted and how many a
// portable copy left out, and closes its task with DATA_SUBMITTED.
func (sub *submission) finishTx(tx *bolt.Tx) error {
	r := sub.r
	sec, err := secretsTx(tx, r.DsarId)
	if err != nil {
		return err
	}
	if sec.Submitted == nil {
		sec.Submitted = map[string]int{}
	}
	sec.Submitted[sub.system] = int(sub.records)
	sec.Dropped += sub.dropped.basis
	sec.DroppedNotProvided += sub.dropped.notProvided
	sec.DroppedUnknown += sub.dropped.unknown
	if err := putSecretsTx(tx, r.DsarId, sec); err != nil {
		return err
	}
	_, err = sub.s.tracker.RecordOutcomeTx(tx, &eventsv1.Outcome{EventId: sub.task.EventID, TenantId: r.TenantId, SystemId: sub.system,
		SubjectId: r.SubjectId, Cause: causeOf(r.DsarId), Kind: eventsv1.OutcomeKind_OUTCOME_KIND_DATA_SUBMITTED,
		ReportedAt: timestamppb.New(sub.s.Clock.Now())})
	return err
}

// DownloadPackage implements DsarService.
func (s *Service) DownloadPackage(req *dsarv1.DownloadPackageRequest, stream grpc.ServerStreamingServer[dsarv1.DownloadPackageResponse]) error {
	var r *dsarv1.Request
	var sealed [][]byte
	var key []byte
	err := s.DB.View(func(tx *bolt.Tx) error {
		var err error
		if r, err = s.loadTx(tx, req.TenantId, req.DsarId); err != nil {
			return err
		}
		switch {
		case r.Type != dsarv1.RequestType_REQUEST_TYPE_ACCESS && r.Type != dsarv1.RequestType_REQUEST_TYPE_PORTABILITY:
			return apierror.FailedPrecondition(apierror.ReasonWrongRequestType, fmt.Sprintf("a %s request has no package", r.Type))
		case r.Package == nil:
			return apierror.FailedPrecondition(apierror.ReasonIllegalTransition, "the package is not assembled yet: systems are still answering")
		case r.Package.Destroyed:
			return apierror.FailedPrecondition(apierror.ReasonKeyDestroyed, "the package was delivered or expired and is destroyed")
		}
		sec, err := secretsTx(tx, r.DsarId)
		if err != nil {
			return err
		}
		var ok bool
		if sec.Key == nil {
			return apierror.FailedPrecondition(apierror.ReasonKeyDestroyed, "the package is destroyed")
		}
		if key, ok = s.keys.Key(*sec.Key); !ok {
			return apierror.FailedPrecondition(apierror.ReasonKeyDestroyed, "the package is destroyed")
		}
		prefix := store.Key(r.DsarId)
		c := store.BucketTx(tx, bucketPackages).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			sealed = append(sealed, append([]byte(nil), v...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	h := sha256.New()
	for i, sc := range sealed {
		chunk, err := open(key, sc, aad(r.DsarId, fmt.Sprint("package/", i)))
		if err != nil {
			return fmt.Errorf("dsar: open package chunk %d: %w", i, err)
		}
		h.Write(chunk)
		msg := &dsarv1.DownloadPackageResponse{Chunk: chunk}
		if i == 0 {
			msg.Info = r.Package
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	if !bytes.Equal(h.Sum(nil), r.Package.Sha256) {
		return fmt.Errorf("dsar: package of %s does not match its hash", r.DsarId)
	}
	return nil
}

// ConfirmDelivery implements DsarService.
func (s *Service) ConfirmDelivery(ctx context.Context, req *dsarv1.ConfirmDeliveryRequest) (*dsarv1.ConfirmDeliveryResponse, error) {
	return mutate(ctx, s, req, func(tx *bolt.Tx) (*dsarv1.ConfirmDeliveryResponse, error) {
		r, err := s.loadTx(tx, req.TenantId, req.DsarId)
		if err != nil {
			return nil, err
		}
		if r.Package == nil || !isFinal(r.State) {
			return nil, apierror.FailedPrecondition(apierror.ReasonIllegalTransition, "the request has no package to deliver")
		}
		if r.Package.Destroyed {
			return nil, apierror.FailedPrecondition(apierror.ReasonKeyDestroyed, "the package is destroyed already")
		}
		if until := r.Package.AvailableUntil; until != nil {
			if err := store.BucketTx(tx, bucketPackageExpiry).Delete(append(store.TimeKey(until.AsTime()), r.DsarId...)); err != nil {
				return nil, err
			}
		}
		r.Package.Delivered = true
		if err := s.destroyKeyTx(tx, r); err != nil {
			return nil, err
		}
		r.History = append(r.History, &dsarv1.Transition{From: r.State, To: r.State, At: timestamppb.New(s.Clock.Now()), Actor: actorOf(ctx),
			Note: "package delivered; the request's key is destroyed"})
		if err := s.putRequestTx(tx, r); err != nil {
			return nil, err
		}
		return &dsarv1.ConfirmDeliveryResponse{Request: s.viewAt(r, s.Clock.Now())}, nil
	})
}

// answers lists the outcomes an operator may record for each directive.
var answers = map[contract.Kind][]eventsv1.OutcomeKind{
	contract.KindErasureRequested: {eventsv1.OutcomeKind_OUTCOME_KIND_ERASED, eventsv1.OutcomeKind_OUTCOME_KIND_ANONYMISED,
		eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND, eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, eventsv1.OutcomeKind_OUTCOME_KIND_FAILED},
	contract.KindRectificationRequested: {eventsv1.OutcomeKind_OUTCOME_KIND_RECTIFIED, eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND,
		eventsv1.OutcomeKind_OUTCOME_KIND_FAILED},
	contract.KindAccessRequested: {eventsv1.OutcomeKind_OUTCOME_KIND_DATA_SUBMITTED, eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND,
		eventsv1.OutcomeKind_OUTCOME_KIND_FAILED},
}

// CompleteTask implements DsarService: an operator's answer for a system
// answered by hand.
func (s *Service) CompleteTask(ctx context.Context, req *dsarv1.CompleteTaskRequest) (*dsarv1.CompleteTaskResponse, error) {
	switch {
	case req.Outcome == eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED && len(req.Retained) == 0:
		return nil, apierror.Invalid("retained", "a RETAINED outcome lists what is kept, on which basis, until when")
	case req.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED && len(req.Retained) > 0:
		return nil, apierror.Invalid("retained", "only a RETAINED outcome lists what is kept")
	case req.Outcome == eventsv1.OutcomeKind_OUTCOME_KIND_FAILED && req.Reason == "":
		return nil, apierror.Invalid("reason", "a FAILED outcome gives its reason")
	}
	if v := retainedViolations("retained", req.Retained); len(v) > 0 {
		return nil, apierror.InvalidArgument(v...)
	}
	r, task, err := s.findTask(ctx, req.TenantId, req.DsarId, req.SystemId)
	if err != nil {
		return nil, err
	}
	if task.Mode != commonv1.AnswerMode_ANSWER_MODE_MANUAL {
		return nil, apierror.FailedPrecondition(apierror.ReasonAnswersItself, fmt.Sprintf("system %q answers itself (%s), not by hand", req.SystemId, task.Mode))
	}
	if !slices.Contains(answers[task.Kind], req.Outcome) {
		return nil, apierror.Invalid("outcome", fmt.Sprintf("%s does not answer a %s", req.Outcome, task.Kind))
	}
	resp, err := mutate(ctx, s, req, func(tx *bolt.Tx) (*dsarv1.CompleteTaskResponse, error) {
		closed, err := s.tracker.RecordOutcomeTx(tx, &eventsv1.Outcome{EventId: task.EventID, TenantId: r.TenantId, SystemId: req.SystemId,
			SubjectId: r.SubjectId, Cause: causeOf(r.DsarId), Kind: req.Outcome, Retained: req.Retained, Reason: req.Reason,
			ReportedAt: timestamppb.New(s.Clock.Now())})
		if err != nil {
			return nil, err
		}
		if !closed {
			return nil, apierror.FailedPrecondition(apierror.ReasonTaskNotOpen, fmt.Sprintf("system %q has no open task for request %s", req.SystemId, req.DsarId))
		}
		return &dsarv1.CompleteTaskResponse{}, nil
	})
	if err != nil {
		return nil, err
	}
	resp.Request = s.reload(r)
	return resp, nil
}

// RecordReview implements DsarService.
func (s *Service) RecordReview(ctx context.Context, req *dsarv1.RecordReviewRequest) (*dsarv1.RecordReviewResponse, error) {
	return mutate(ctx, s, req, func(tx *bolt.Tx) (*dsarv1.RecordReviewResponse, error) {
		r, err := s.loadTx(tx, req.TenantId, req.DsarId)
		if err != nil {
			return nil, err
		}
		if r.Type != dsarv1.RequestType_REQUEST_TYPE_AUTOMATED_DECISION_REVIEW {
			return nil, apierror.FailedPrecondition(apierror.ReasonWrongRequestType, fmt.Sprintf("a %s request has no human review", r.Type))
		}
		if r.State != dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS {
			if isFinal(r.State) {
				return nil, illegal(r.State, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
			}
			return nil, apierror.FailedPrecondition(apierror.ReasonIdentityNotVerified, "the subject's identity is not verified yet")
		}
		r.Review = &dsarv1.Review{Reviewer: actorOf(ctx), DecisionUpheld: req.DecisionUpheld, Explanation: req.Explanation,
			ReviewedAt: timestamppb.New(s.Clock.Now())}
		if err := s.closeTx(tx, r, dsarv1.RequestState_REQUEST_STATE_COMPLETED, actorOf(ctx), "human review recorded (Art. 22(3))"); err != nil {
			return nil, err
		}
		return &dsarv1.RecordReviewResponse{Request: s.viewAt(r, s.Clock.Now())}, nil
	})
}
