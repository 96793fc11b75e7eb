package ledger

import (
	"encoding/binary"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// recordVersion is the first byte of every record, so that the layout can
// change without misreading older records.
const recordVersion = 1

// recordHeader is the version byte and the recording time.
const recordHeader = 1 + 8

// encodeRecord encodes the outcome recorded at t:
//
//	version (1 byte) | recorded at, Unix nanoseconds (8 bytes, big-endian) | Outcome (binary protobuf)
//
// The time is kept beside the outcome, not only in the index key, so that
// a record can be traced to its index entry.
func encodeRecord(at time.Time, o *eventsv1.Outcome) ([]byte, error) {
	payload, err := contract.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode outcome: %w", err)
	}
	rec := make([]byte, 0, recordHeader+len(payload))
	rec = append(rec, recordVersion)
	rec = binary.BigEndian.AppendUint64(rec, uint64(at.UnixNano()))
	return append(rec, payload...), nil
}

// decodeRecord decodes what encodeRecord encoded.
func decodeRecord(rec []byte) (time.Time, *eventsv1.Outcome, error) {
	if len(rec) < recordHeader {
		return time.Time{}, nil, fmt.Errorf("record has %d bytes, want at least %d", len(rec), recordHeader)
	}
	if rec[0] != recordVersion {
		return time.Time{}, nil, fmt.Errorf("record has version %d, want %d", rec[0], recordVersion)
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(rec[1:recordHeader])))
	o := &eventsv1.Outcome{}
	if err := proto.Unmarshal(rec[recordHeader:], o); err != nil {
		return time.Time{}, nil, fmt.Errorf("decode outcome: %w", err)
	}
	return at, o, nil
}
