package hashchain

import (
	"bytes"
	"testing"
)

// FuzzDecodeEntry checks that decoding arbitrary bytes never panics and that
// whatever decodes encodes back to the same bytes, so an entry has exactly
// one encoding.
func FuzzDecodeEntry(f *testing.F) {
	f.Add(encodeEntry(Entry{Seq: 1, Time: t0, Payload: []byte("event-1")}))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEntry(data)
		if err != nil {
			return
		}
		if got := encodeEntry(e); !bytes.Equal(got, data) {
			t.Fatalf("decode then encode changed %x to %x", data, got)
		}
	})
}
