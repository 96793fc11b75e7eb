package dsar

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
)

// onCauseComplete runs in the transaction that made the last task of a
// request final: the request completes with it, or not at all.
func (s *Service) onCauseComplete(tx *bolt.Tx, tenant string, cause *commonv1.Cause, ts []tasks.Task) error {
	if cause.GetKind() != commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST {
		return nil
	}
	r, err := requestTx(tx, tenant, cause.Id)
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil || r.State != dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS {
		return err
	}
	return s.finishTx(tx, r, ts)
}

// resultOf is a request's result from its tasks, keeping the systems
// held back at fan-out.
func resultOf(ts []tasks.Task, prev *dsarv1.Result) *dsarv1.Result {
	res := &dsarv1.Result{Held: prev.GetHeld(), Complete: true}
	for _, sys := range prev.GetTasks() {
		if sys.State == commonv1.TaskState_TASK_STATE_HELD {
			res.Tasks = append(res.Tasks, sys)
		}
	}
	for _, t := range ts {
		sr := &dsarv1.Task{SystemId: t.SystemID, AnswerMode: t.Mode, EventId: t.EventID}
		switch t.State {
		case tasks.StateOpen:
			sr.State, res.Complete = commonv1.TaskState_TASK_STATE_OPEN, false
		case tasks.StateStalled:
			sr.State, res.Complete = commonv1.TaskState_TASK_STATE_STALLED, false
		default:
			sr.State = commonv1.TaskState_TASK_STATE_FINAL
			sr.AnsweredAt = timestamppb.New(t.ClosedAt)
			if o, err := t.OutcomeProto(); err == nil && o != nil {
				sr.Outcome, sr.Retained, sr.Reason = o.Kind, o.Retained, o.Reason
				res.Retained = append(res.Retained, o.Retained...)
			}
		}
		res.Tasks = append(res.Tasks, sr)
	}
	sort.Slice(res.Tasks, func(i, j int) bool { return res.Tasks[i].SystemId < res.Tasks[j].SystemId })
	return res
}

// finishTx completes a request whose systems all answered: partially when
// anything is kept (a retained outcome or a hold) or a system failed.
func (s *Service) finishTx(tx *bolt.Tx, r *dsarv1.Request, ts []tasks.Task) error {
	r.Result = resultOf(ts, r.Result)
	partial := len(r.Result.Held) > 0 || len(r.Result.Retained) > 0
	for _, sys := range r.Result.Tasks {
		if sys.Outcome == eventsv1.OutcomeKind_OUTCOME_KIND_FAILED {
			partial = true
		}
	}
	to, note := dsarv1.RequestState_REQUEST_STATE_COMPLETED, "every system answered"
	if noDataHeld(r) {
		r.Result.NoDataHeld = true
		note = "every system answered: no personal data of the subject is processed in scope (Art. 15(1))"
	}
	if partial {
		to, note = dsarv1.RequestState_REQUEST_STATE_PARTIALLY_COMPLETED, "every system answered; some data is kept or a system failed"
	}
	if r.Type == dsarv1.RequestType_REQUEST_TYPE_ACCESS || r.Type == dsarv1.RequestType_REQUEST_TYPE_PORTABILITY {
		if err := s.assembleTx(tx, r); err != nil {
			return err
		}
	}
	return s.closeTx(tx, r, to, serviceActor, note)
}

// noDataHeld reports whether a request's every system answered that it
// holds no data of the subject in scope (or none holds data in scope) and
// nothing is held: the confirmation of Art. 15(1), first part. Only
// directives whose systems search for the subject say so; a limit applied
// through the consent service does not.
func noDataHeld(r *dsarv1.Request) bool {
	switch r.Type {
	case dsarv1.RequestType_REQUEST_TYPE_ACCESS, dsarv1.RequestType_REQUEST_TYPE_PORTABILITY,
		dsarv1.RequestType_REQUEST_TYPE_ERASURE, dsarv1.RequestType_REQUEST_TYPE_RECTIFICATION:
	default:
		return false
	}
	if len(r.Result.Held) > 0 {
		return false
	}
	for _, sys := range r.Result.Tasks {
		if sys.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND {
			return false
		}
	}
	return true
}

// closeTx moves a request to a final state, appends its receipt and, once
// nothing is left to answer with them, destroys its key: at once for
// every request but an access or portability request with a package,
// whose key lives until the package is delivered or expires.
func (s *Service) closeTx(tx *bolt.Tx, r *dsarv1.Request, to dsarv1.RequestState, actor, note string) error {
	if err := s.transitionTx(tx, r, to, actor, note); err != nil {
		return err
	}
	if err := s.receiptTx(tx, r); err != nil {
		return err
	}
	if r.Package != nil && !r.Package.Destroyed {
		until := s.Clock.Now().Add(s.opts.PackageTTL)
		r.Package.AvailableUntil = timestamppb.New(until)
		if err := store.BucketTx(tx, bucketPackageExpiry).Put(append(store.TimeKey(until), r.DsarId...), []byte(r.TenantId)); err != nil {
			return err
		}
	} else if err := s.destroyKeyTx(tx, r); err != nil {
		return err
	}
	return s.putRequestTx(tx, r)
}

// destroyKeyTx deletes everything sealed under the request's key and
// overwrites the key once the transaction commits. Should the process
// stop in between, the key is destroyed at the next start (its request no
// longer names it).
func (s *Service) destroyKeyTx(tx *bolt.Tx, r *dsarv1.Request) error {
	sec, err := secretsTx(tx, r.DsarId)
	if err != nil {
		return err
	}
	ref := sec.Key
	sec.Key, sec.CodeHash, sec.CodeSalt = nil, nil, nil
	if err := putSecretsTx(tx, r.DsarId, sec); err != nil {
		return err
	}
	if err := store.BucketTx(tx, bucketSealed).Delete([]byte(r.DsarId)); err != nil {
		return err
	}
	for _, b := range []store.Bucket{bucketSubmissions, bucketPackages} {
		if err := deletePrefixTx(tx, b, store.Key(r.DsarId)); err != nil {
			return err
		}
	}
	r.KeyDestroyed = true
	if r.Package != nil {
		r.Package.Destroyed = true
	}
	if ref != nil {
		s.keys.DestroyOnCommit(tx, *ref)
	}
	return nil
}

func deletePrefixTx(tx *bolt.Tx, b store.Bucket, prefix []byte) error {
	c := store.BucketTx(tx, b).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// packageChunk is the size of a sealed package chunk.
const packageChunk = 256 << 10

// assembleTx builds the access or portability package from the systems'
// submissions and the Art. 15(1) information, and seals it under the
// request's key.
func (s *Service) assembleTx(tx *bolt.Tx, r *dsarv1.Request) error {
	sec, err := secretsTx(tx, r.DsarId)
	if err != nil {
		return err
	}
	if sec.Key == nil {
		return nil
	}
	key, ok := s.keys.Key(*sec.Key)
	if !ok {
		return fmt.Errorf("dsar: the key of %s is missing", r.DsarId)
	}
	type item struct {
		Category   string          `json:"category"`
		LegalBasis string          `json:"legal_basis"`
		PurposeID  string          `json:"purpose_id,omitempty"`
		Source     string          `json:"source,omitempty"`
		Value      json.RawMessage `json:"value"`
	}
	type systemEntry struct {
		SystemID string `json:"system_id"`
		Outcome  string `json:"outcome"`
		Records  int    `json:"records"`
	}
	data := map[string][]item{}
	prefix := store.Key(r.DsarId)
	c := store.BucketTx(tx, bucketSubmissions).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		rest := k[len(prefix):]
		system := string(rest[:bytes.IndexByte(rest, 0)])
		plain, err := open(key, v, aad(r.DsarId, "submission"))
		if err != nil {
			return fmt.Errorf("dsar: open submission: %w", err)
		}
		rec := &dsarv1.SubmittedRecord{}
		if err := proto.Unmarshal(plain, rec); err != nil {
			return err
		}
		data[system] = append(data[system], item{Category: rec.Category.GetId(), LegalBasis: rec.LegalBasis.String(),
			PurposeID: rec.PurposeId, Source: rec.Source, Value: json.RawMessage(rec.JsonValue)})
	}
	type leftOutEntry struct {
		LegalBasis  int `json:"legal_basis,omitempty"`
		NotProvided int `json:"not_provided,omitempty"`
		Unknown     int `json:"provenance_unknown,omitempty"`
	}
	manifest := struct {
		Format      string        `json:"format"`
		RequestID   string        `json:"request_id"`
		Tenant      string        `json:"tenant"`
		SubjectID   string        `json:"subject_id"`
		Type        string        `json:"type"`
		Portability bool          `json:"portability"`
		NoDataHeld  bool          `json:"no_data_held,omitempty"`
		LeftOut     int           `json:"left_out,omitempty"`
		LeftOutBy   *leftOutEntry `json:"left_out_by,omitempty"`
		GeneratedAt string        `json:"generated_at"`
		Systems     []systemEntry `json:"systems"`
	}{Format: "lethe.dsar.package/v1", RequestID: r.DsarId, Tenant: r.TenantId, SubjectID: r.SubjectId, Type: r.Type.String(),
		Portability: r.Type == dsarv1.RequestType_REQUEST_TYPE_PORTABILITY, NoDataHeld: r.Result.NoDataHeld,
		LeftOut:     sec.Dropped + sec.DroppedNotProvided + sec.DroppedUnknown,
		GeneratedAt: s.Clock.Now().Format(time.RFC3339)}
	if manifest.LeftOut > 0 {
		manifest.LeftOutBy = &leftOutEntry{LegalBasis: sec.Dropped, NotProvided: sec.DroppedNotProvided, Unknown: sec.DroppedUnknown}
	}
	for _, sys := range r.Result.Tasks {
		manifest.Systems = append(manifest.Systems, systemEntry{SystemID: sys.SystemId, Outcome: sys.Outcome.String(), Records: len(data[sys.SystemId])})
	}
	info := sec.Info
	if len(info) == 0 {
		info = json.RawMessage("null")
	}
	pkg, err := json.MarshalIndent(struct {
		Manifest    any             `json:"manifest"`
		Information json.RawMessage `json:"information"`
		Data        map[string][]item
	}{manifest, info, data}, "", "  ")
	if err != nil {
		return err
	}
	for i := 0; i*packageChunk < len(pkg); i++ {
		chunk := pkg[i*packageChunk : min((i+1)*packageChunk, len(pkg))]
		sealed, err := seal(key, chunk, aad(r.DsarId, fmt.Sprint("package/", i)))
		if err != nil {
			return err
		}
		if err := store.BucketTx(tx, bucketPackages).Put(append(store.Key(r.DsarId), binary.BigEndian.AppendUint32(nil, uint32(i))...), sealed); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(pkg)
	r.Package = &dsarv1.PackageInfo{SizeBytes: int64(len(pkg)), Sha256: sum[:], ContentType: "application/json",
		AssembledAt: timestamppb.New(s.Clock.Now())}
	return nil
}
