package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// entry is one staged publication.
type entry struct {
	natsSubject string
	committed   time.Time
	// headers are the message's NATS headers: Nats-Msg-Id, the CloudEvents
	// attributes and the trace context of the committing call.
	headers map[string]string
	payload []byte
}

// entryFormat versions the encoding below.
const entryFormat = 1

// encode lays an entry out as
//
//	format(1) | committed UnixNano(8) | NATS subject | header count | (key | value)* | payload
//
// with every string prefixed by its uvarint length and the payload taking
// the rest.
func (e entry) encode() []byte {
	n := 1 + 8 + 2*binary.MaxVarintLen64 + len(e.natsSubject) + len(e.payload)
	for k, v := range e.headers {
		n += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	b := make([]byte, 0, n)
	b = append(b, entryFormat)
	b = binary.BigEndian.AppendUint64(b, uint64(e.committed.UnixNano()))
	b = appendString(b, e.natsSubject)
	b = binary.AppendUvarint(b, uint64(len(e.headers)))
	for k, v := range e.headers {
		b = appendString(appendString(b, k), v)
	}
	return append(b, e.payload...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

var errCorrupt = errors.New("outbox: corrupt entry")

// decodeEntry decodes an encoded entry. The payload is copied, so the entry
// outlives the transaction it was read in.
func decodeEntry(b []byte) (entry, error) {
	if len(b) < 9 {
		return entry{}, errCorrupt
	}
	if b[0] != entryFormat {
		return entry{}, fmt.Errorf("outbox: entry format %d unknown", b[0])
	}
	e := entry{committed: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9]))).UTC()}
	rest := b[9:]
	var ok bool
	if e.natsSubject, rest, ok = readString(rest); !ok {
		return entry{}, errCorrupt
	}
	count, n := binary.Uvarint(rest)
	if n <= 0 || count > uint64(len(rest)) {
		return entry{}, errCorrupt
	}
	rest = rest[n:]
	if count > 0 {
		e.headers = make(map[string]string, count)
	}
	for range count {
		var k, v string
		if k, rest, ok = readString(rest); !ok {
			return entry{}, errCorrupt
		}
		if v, rest, ok = readString(rest); !ok {
			return entry{}, errCorrupt
		}
		e.headers[k] = v
	}
	e.payload = append([]byte(nil), rest...)
	return e, nil
}

func readString(b []byte) (string, []byte, bool) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return "", nil, false
	}
	return string(b[n : n+int(l)]), b[n+int(l):], true
}
