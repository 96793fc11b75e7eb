package paging

import (
	"bytes"
	"testing"
)

func FuzzDecodeToken(f *testing.F) {
	fp := fingerprint([]byte("clio/"), []string{"clio"})
	f.Add(encodeToken([]byte("clio/007"), fp))
	f.Add("")
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, tok string) {
		key, err := decodeToken(tok, fp)
		if err != nil {
			return
		}
		if again, err := decodeToken(encodeToken(key, fp), fp); err != nil || !bytes.Equal(again, key) {
			t.Fatalf("token for key %q does not round-trip: %q, %v", key, again, err)
		}
	})
}
