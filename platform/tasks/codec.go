package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// A task is stored in the protobuf wire format, written and read here
// field by field, as this message would be:
//
//	message Task {
//	  string event_id = 1;
//	  string tenant_id = 2;
//	  string system_id = 3;
//	  string kind = 4;        // contract.Kind
//	  int32 cause_kind = 5;   // lethe.common.v1.CauseKind
//	  string cause_id = 6;
//	  int32 mode = 7;         // lethe.common.v1.AnswerMode
//	  string state = 8;       // State
//	  string resolution = 9;  // Resolution
//	  bytes outcome = 10;     // lethe.events.v1.Outcome
//	  sint64 created_at = 11; // Unix nanoseconds; absent when zero
//	  sint64 sent_at = 12;
//	  int64 resends = 13;
//	  sint64 closed_at = 14;
//	}
//
// Every outcome a system reports rewrites its task, and a request's
// completion reads all of them, inside the owner's single committer: the
// JSON the tracker wrote before took half of that work. Tasks written
// before (JSON, which starts with '{', a byte no record of this message
// starts with) are still read; they are rewritten in this format when
// they next change.

// Field numbers of the stored task.
const (
	fieldEventID protowire.Number = iota + 1
	fieldTenantID
	fieldSystemID
	fieldKind
	fieldCauseKind
	fieldCauseID
	fieldMode
	fieldState
	fieldResolution
	fieldOutcome
	fieldCreatedAt
	fieldSentAt
	fieldResends
	fieldClosedAt
)

// encodeTask appends the stored form of task to b.
func encodeTask(b []byte, task Task) []byte {
	str := func(b []byte, n protowire.Number, s string) []byte {
		if s == "" {
			return b
		}
		return protowire.AppendString(protowire.AppendTag(b, n, protowire.BytesType), s)
	}
	num := func(b []byte, n protowire.Number, v uint64) []byte {
		if v == 0 {
			return b
		}
		return protowire.AppendVarint(protowire.AppendTag(b, n, protowire.VarintType), v)
	}
	at := func(b []byte, n protowire.Number, t time.Time) []byte {
		if t.IsZero() {
			return b
		}
		return num(b, n, protowire.EncodeZigZag(t.UnixNano()))
	}
	b = str(b, fieldEventID, task.EventID)
	b = str(b, fieldTenantID, task.TenantID)
	b = str(b, fieldSystemID, task.SystemID)
	b = str(b, fieldKind, string(task.Kind))
	b = num(b, fieldCauseKind, uint64(task.CauseKind))
	b = str(b, fieldCauseID, task.CauseID)
	b = num(b, fieldMode, uint64(task.Mode))
	b = str(b, fieldState, string(task.State))
	b = str(b, fieldResolution, string(task.Resolution))
	if task.Outcome != nil {
		b = protowire.AppendBytes(protowire.AppendTag(b, fieldOutcome, protowire.BytesType), task.Outcome)
	}
	b = at(b, fieldCreatedAt, task.CreatedAt)
	b = at(b, fieldSentAt, task.SentAt)
	b = num(b, fieldResends, uint64(task.Resends))
	return at(b, fieldClosedAt, task.ClosedAt)
}

// decodeTask reads a stored task, in either format.
func decodeTask(v []byte) (Task, error) {
	var task Task
	if len(v) > 0 && v[0] == '{' {
		err := json.Unmarshal(v, &task)
		return task, err
	}
	err := eachField(v, func(n protowire.Number, x uint64, s []byte) {
		switch n {
		case fieldEventID:
			task.EventID = string(s)
		case fieldTenantID:
			task.TenantID = string(s)
		case fieldSystemID:
			task.SystemID = string(s)
		case fieldKind:
			task.Kind = contract.Kind(s)
		case fieldCauseKind:
			task.CauseKind = commonv1.CauseKind(x)
		case fieldCauseID:
			task.CauseID = string(s)
		case fieldMode:
			task.Mode = commonv1.AnswerMode(x)
		case fieldState:
			task.State = State(s)
		case fieldResolution:
			task.Resolution = Resolution(s)
		case fieldOutcome:
			task.Outcome = append([]byte{}, s...)
		case fieldCreatedAt:
			task.CreatedAt = unixNano(x)
		case fieldSentAt:
			task.SentAt = unixNano(x)
		case fieldResends:
			task.Resends = int(x)
		case fieldClosedAt:
			task.ClosedAt = unixNano(x)
		}
	})
	return task, err
}

// decodeState reads only a stored task's state, in either format: what
// causeFinalTx needs of each task of a cause.
func decodeState(v []byte) (State, error) {
	if len(v) > 0 && v[0] == '{' {
		var task struct {
			State State `json:"state"`
		}
		err := json.Unmarshal(v, &task)
		return task.State, err
	}
	var state State
	err := eachField(v, func(n protowire.Number, _ uint64, s []byte) {
		if n == fieldState {
			state = State(s)
		}
	})
	return state, err
}

var errMalformed = errors.New("malformed task record")

// eachField calls fn with each field of a stored task: its number, and its
// value, a varint or the bytes of a string or bytes field (pointing into
// v). Fields of other wire types, which no version wrote, are an error.
func eachField(v []byte, fn func(n protowire.Number, x uint64, s []byte)) error {
	for len(v) > 0 {
		n, typ, l := protowire.ConsumeTag(v)
		if l < 0 {
			return fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(l))
		}
		v = v[l:]
		switch typ {
		case protowire.VarintType:
			x, l := protowire.ConsumeVarint(v)
			if l < 0 {
				return fmt.Errorf("%w: field %d: %w", errMalformed, n, protowire.ParseError(l))
			}
			fn(n, x, nil)
			v = v[l:]
		case protowire.BytesType:
			s, l := protowire.ConsumeBytes(v)
			if l < 0 {
				return fmt.Errorf("%w: field %d: %w", errMalformed, n, protowire.ParseError(l))
			}
			fn(n, 0, s)
			v = v[l:]
		default:
			return fmt.Errorf("%w: field %d has wire type %d", errMalformed, n, typ)
		}
	}
	return nil
}

func unixNano(x uint64) time.Time { return time.Unix(0, protowire.DecodeZigZag(x)).UTC() }
