package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"
)

// BucketTx returns bucket b of tx. Open creates every bucket the code uses,
// so a missing one is a programming error (a bucket left out of the Schema)
// and BucketTx panics rather than make every caller handle it.
func BucketTx(tx *bbolt.Tx, b Bucket) *bbolt.Bucket {
	bk := tx.Bucket(b)
	if bk == nil {
		panic(fmt.Sprintf("store: bucket %q does not exist; is it in the Schema passed to Open?", b))
	}
	return bk
}

// Uint64Key encodes n as 8 big-endian bytes, so that bbolt's byte order of
// keys is numeric order.
func Uint64Key(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n)
}

// KeyUint64 decodes the first 8 bytes of k, as written by Uint64Key. It
// panics if k is shorter.
func KeyUint64(k []byte) uint64 { return binary.BigEndian.Uint64(k) }

// maxUnixNano is the last instant whose UnixNano fits an int64 (year 2262).
var maxUnixNano = time.Unix(0, math.MaxInt64)

// TimeKey encodes t as 8 big-endian bytes of nanoseconds since 1970, so that
// byte order is time order. Times before 1970 clamp to 0, because the key is
// unsigned and no Lethe deadline lies before 1970; times after 2262 clamp to
// the last representable nanosecond.
func TimeKey(t time.Time) []byte {
	switch {
	case t.Before(time.Unix(0, 0)):
		return Uint64Key(0)
	case t.After(maxUnixNano):
		return Uint64Key(math.MaxInt64)
	default:
		return Uint64Key(uint64(t.UnixNano()))
	}
}

// Key joins ids into a key, each followed by a NUL byte, so that the keys
// under one id ("clio") never share a prefix with another ("clio2"). Ids
// must not contain NUL (tenant, subject and object ids never do).
func Key(ids ...string) []byte {
	n := 0
	for _, id := range ids {
		n += len(id) + 1
	}
	b := make([]byte, 0, n)
	for _, id := range ids {
		b = append(append(b, id...), 0)
	}
	return b
}

// SplitKey returns the ids that Key joined into k, and false when k is not
// such a key (it does not end in NUL). It splits the whole of k: to read
// the ids after a known prefix, pass the rest of the key.
func SplitKey(k []byte) ([]string, bool) {
	if len(k) == 0 || k[len(k)-1] != 0 {
		return nil, false
	}
	parts := bytes.Split(k[:len(k)-1], []byte{0})
	ids := make([]string, len(parts))
	for i, p := range parts {
		ids[i] = string(p)
	}
	return ids, true
}

// AppendBucketTx returns bucket b of tx, set to fill its pages whole, for
// buckets whose keys only grow: sequence numbers, times. bbolt splits a
// full page in two halves by default, which suits keys that land anywhere;
// when every key lands at the end, the left half is never filled again, so
// the bucket takes twice the pages and each commit writes twice as many. As
// etcd does for its revisions. The setting lasts for tx.
func AppendBucketTx(tx *bbolt.Tx, b Bucket) *bbolt.Bucket {
	bk := BucketTx(tx, b)
	bk.FillPercent = 1.0
	return bk
}
