package tasks

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

func TestTaskRecordsRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 7, 9, 30, 0, 123456789, time.UTC)
	for name, task := range map[string]Task{
		"open": {EventID: "019af0e2-0000-7000-8000-000000000001", TenantID: "cleura", SystemID: "crm",
			Kind: contract.KindErasureRequested, CauseKind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, CauseID: "dsar-1",
			Mode: commonv1.AnswerMode_ANSWER_MODE_SDK, State: StateOpen, CreatedAt: at, SentAt: at},
		"final": {EventID: "e", TenantID: "t", SystemID: "s", Kind: contract.KindConsentWithdrawn,
			CauseKind: commonv1.CauseKind_CAUSE_KIND_RETENTION_RULE, CauseID: "c", Mode: commonv1.AnswerMode_ANSWER_MODE_MANUAL,
			State: StateFinal, Resolution: ResolutionDeadLettered, Outcome: []byte{0x0a, 0x01, 'e'},
			CreatedAt: at, SentAt: at.Add(time.Hour), Resends: 3, ClosedAt: at.Add(2 * time.Hour)},
		"before 1970":   {EventID: "e", State: StateStalled, CreatedAt: time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC)},
		"empty outcome": {EventID: "e", State: StateFinal, Outcome: []byte{}},
	} {
		v := encodeTask(nil, task)
		got, err := decodeTask(v)
		if err != nil || !reflect.DeepEqual(got, task) {
			t.Errorf("%s: decodeTask(encodeTask(%+v)) = %+v, %v", name, task, got, err)
		}
		if state, err := decodeState(v); err != nil || state != task.State {
			t.Errorf("%s: decodeState = %q, %v; want %q", name, state, err, task.State)
		}
		if v[0] == '{' {
			t.Errorf("%s: a binary record starts with '{', which marks JSON", name)
		}
	}
}

// TestJSONTaskRecordsAreStillRead: tasks written before version 3 are
// JSON, and stay so until they change.
func TestJSONTaskRecordsAreStillRead(t *testing.T) {
	at := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	task := Task{EventID: "e", TenantID: "clio", SystemID: "crm", Kind: contract.KindErasureRequested, CauseID: "dsar-1",
		Mode: commonv1.AnswerMode_ANSWER_MODE_SDK, State: StateStalled, Resends: 1, CreatedAt: at, SentAt: at}
	v, err := json.Marshal(task)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeTask(v); err != nil || !reflect.DeepEqual(got, task) {
		t.Fatalf("decodeTask(JSON) = %+v, %v; want %+v", got, err, task)
	}
	if state, err := decodeState(v); err != nil || state != StateStalled {
		t.Fatalf("decodeState(JSON) = %q, %v", state, err)
	}
}

func TestMalformedTaskRecordsAreErrors(t *testing.T) {
	good := encodeTask(nil, Task{EventID: "e", State: StateOpen})
	for name, v := range map[string][]byte{
		"cut short":         good[:len(good)-2],
		"unknown wire type": {0x0d, 1, 2, 3, 4}, // field 1, fixed32
		"bad varint":        {0x28, 0xff},       // field 5, varint never ending
	} {
		if _, err := decodeTask(v); !errors.Is(err, errMalformed) {
			t.Errorf("%s: decodeTask = %v, want errMalformed", name, err)
		}
		if _, err := decodeState(v); !errors.Is(err, errMalformed) {
			t.Errorf("%s: decodeState = %v, want errMalformed", name, err)
		}
	}
}
