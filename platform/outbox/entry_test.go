package outbox

import (
	"maps"
	"testing"
	"time"
)

func FuzzDecodeEntry(f *testing.F) {
	f.Add(entry{natsSubject: "lethe.clio.erasure.requested", committed: time.Unix(1, 2).UTC(),
		headers: map[string]string{"Nats-Msg-Id": "id-1", "traceparent": "00-01-02-01"}, payload: []byte{1, 2, 3}}.encode())
	f.Add(entry{natsSubject: "s", committed: time.Unix(0, 0).UTC()}.encode())
	f.Add([]byte{entryFormat, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			return
		}
		again, err := decodeEntry(e.encode())
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if again.natsSubject != e.natsSubject || !again.committed.Equal(e.committed) ||
			!maps.Equal(again.headers, e.headers) || string(again.payload) != string(e.payload) {
			t.Fatalf("round trip changed the entry: %+v != %+v", again, e)
		}
	})
}
