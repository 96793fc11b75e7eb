package paging_test

import (
	"fmt"
	"testing"

	"go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lethe-privacy/lethe/platform/paging"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
)

type req struct {
	size  int32
	token string
}

func (r req) GetPageSize() int32   { return r.size }
func (r req) GetPageToken() string { return r.token }

var things = store.Bucket("things")

func TestScanWalksEveryKeyOnceAndRejectsForeignTokens(t *testing.T) {
	db := storetest.Open(t, store.Schema{Service: "pagingtest", Version: 1, Buckets: []store.Bucket{things}})
	if err := db.Update(func(tx *bbolt.Tx) error {
		b := store.BucketTx(tx, things)
		for _, tenant := range []string{"clio", "cleura"} {
			for i := range 25 {
				if err := b.Put(fmt.Appendf(nil, "%s/%03d", tenant, i), []byte(tenant)); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	var seen []string
	var clioToken string
	err := db.View(func(tx *bbolt.Tx) error {
		b := store.BucketTx(tx, things)
		r := req{size: 10}
		for pages := 0; ; pages++ {
			p, err := paging.Scan(b, []byte("clio/"), r, "clio")
			if err != nil {
				return err
			}
			for i, k := range p.Keys {
				if string(p.Values[i]) != "clio" {
					t.Fatalf("page leaked key %s of another tenant", k)
				}
				seen = append(seen, string(k))
			}
			if pages == 0 {
				clioToken = p.NextToken
			}
			if p.NextToken == "" {
				if pages != 2 {
					t.Errorf("25 keys in pages of 10 took %d pages, want 3", pages+1)
				}
				return nil
			}
			r.token = p.NextToken
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 25 || seen[0] != "clio/000" || seen[24] != "clio/024" {
		t.Fatalf("walked %d keys from %s to %s, want all 25 in order", len(seen), seen[0], seen[len(seen)-1])
	}

	for name, r := range map[string]struct {
		req    req
		prefix string
		query  string
	}{
		"token of another tenant": {req{token: clioToken}, "cleura/", "cleura"},
		"token of another filter": {req{token: clioToken}, "clio/", "clio,active"},
		"garbage token":           {req{token: "not-a-token"}, "clio/", "clio"},
		"negative page size":      {req{size: -1}, "clio/", "clio"},
	} {
		err := db.View(func(tx *bbolt.Tx) error {
			_, err := paging.Scan(store.BucketTx(tx, things), []byte(r.prefix), r.req, r.query)
			return err
		})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestSliceWalksEveryKeyOnce(t *testing.T) {
	keys := make([]string, 25)
	for i := range keys {
		keys[i] = fmt.Sprintf("user.k%02d", i)
	}
	var seen []string
	r := req{size: 10}
	for {
		start, end, next, err := paging.Slice(keys, r, "clio")
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, keys[start:end]...)
		if next == "" {
			break
		}
		r.token = next
	}
	if len(seen) != 25 || seen[24] != "user.k24" {
		t.Fatalf("walked %v", seen)
	}
	if _, _, _, err := paging.Slice(keys, req{token: r.token}, "cleura"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("token of another query: %v", err)
	}
}
