package audit_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/hashchain"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
)

var schema = store.Schema{Service: "things", Version: 1}

func appendN(t *testing.T, db *store.DB, n int) {
	t.Helper()
	log := audit.New(db, clock.Real{})
	for range n {
		if err := log.Append(audit.Entry{Actor: "ops", Method: "/things.v1/Put", Code: "OK"}); err != nil {
			t.Fatal(err)
		}
	}
}

func verifyFile(db *store.DB) (rep audit.Report, err error) {
	_ = db.View(func(tx *bolt.Tx) error { rep, err = audit.VerifyFileTx(tx); return nil })
	return rep, err
}

// TestPrepareFileCopiesAnOldChainsHead: a chain written before head copies
// existed fails verification until a service of this version opens the
// file, which copies its head once; a broken chain's head is not copied.
func TestPrepareFileCopiesAnOldChainsHead(t *testing.T) {
	db := storetest.Open(t, schema)
	appendN(t, db, 3)
	dropCopy := func() {
		if err := db.Update(func(tx *bolt.Tx) error {
			return store.BucketTx(tx, store.BucketMeta).Delete([]byte("audit_head"))
		}); err != nil {
			t.Fatal(err)
		}
	}
	dropCopy()
	var ie *audit.IntegrityError
	if _, err := verifyFile(db); !errors.As(err, &ie) || !strings.Contains(err.Error(), "holds no copy of its head") {
		t.Fatalf("a chain without its head copy: %v", err)
	}
	if err := audit.PrepareFile(db); err != nil {
		t.Fatal(err)
	}
	rep, err := verifyFile(db)
	if err != nil || rep.Entries != 3 || rep.Service != "things" {
		t.Fatalf("after PrepareFile: %+v, %v", rep, err)
	}

	// Break entry 2, then lose the copy: PrepareFile refuses to vouch.
	dropCopy()
	if err := db.Update(func(tx *bolt.Tx) error {
		return store.BucketTx(tx, store.BucketAudit).Delete(store.Uint64Key(2))
	}); err != nil {
		t.Fatal(err)
	}
	var ve *hashchain.VerifyError
	if err := audit.PrepareFile(db); !errors.As(err, &ve) {
		t.Fatalf("PrepareFile on a broken chain = %v, want a *hashchain.VerifyError", err)
	}
}

// TestAnchorCoversTheChainUpToIt: an anchor of a chain holds as the chain
// grows, and fails once the chain no longer reaches it or holds another
// entry there.
func TestAnchorCoversTheChainUpToIt(t *testing.T) {
	db := storetest.Open(t, schema)
	appendN(t, db, 2)
	var anchor audit.Anchor
	if err := db.View(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		if anchor, ok, err = audit.HeadTx(tx, time.Now()); err == nil && !ok {
			err = errors.New("no head")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if anchor.File != "things" || anchor.Seq != 2 || anchor.Validate() != nil {
		t.Fatalf("anchor = %+v", anchor)
	}
	check := func(a audit.Anchor) error {
		return db.View(func(tx *bolt.Tx) error { return audit.CheckAnchorTx(tx, a) })
	}
	appendN(t, db, 2)
	if err := check(anchor); err != nil {
		t.Fatalf("a grown chain against an earlier anchor: %v", err)
	}
	other := anchor
	other.Hash = strings.Repeat("0", 64)
	if err := check(other); err == nil || !strings.Contains(err.Error(), "differs from its anchor") {
		t.Fatalf("another hash: %v", err)
	}
	ahead := anchor
	ahead.Seq = 5
	if err := check(ahead); err == nil || !strings.Contains(err.Error(), "the chain ends before entry 5") {
		t.Fatalf("an anchor beyond the chain: %v", err)
	}
	for _, bad := range []string{`{"file":"things","seq":0,"hash":"` + anchor.Hash + `"}`, `{"file":"a.b","seq":1,"hash":"` + anchor.Hash + `"}`,
		`{"file":"things","seq":1,"hash":"xyz"}`, `not json`} {
		if _, err := audit.DecodeAnchor([]byte(bad)); !errors.Is(err, audit.ErrNoAnchor) {
			t.Errorf("DecodeAnchor(%s) = %v, want ErrNoAnchor", bad, err)
		}
	}
}
