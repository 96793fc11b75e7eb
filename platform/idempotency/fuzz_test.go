package idempotency

import (
	"bytes"
	"testing"
)

// FuzzDecodeRecord checks that decoding arbitrary bytes never panics and that
// whatever decodes encodes back to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(Record{RequestHash: hashA, Response: []byte("ok"), CreatedAt: t0, ExpiresAt: t0.Add(DefaultTTL)}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data)
		if err != nil {
			return
		}
		if got := encodeRecord(r); !bytes.Equal(got, data) {
			t.Fatalf("decode then encode changed %x to %x", data, got)
		}
	})
}
