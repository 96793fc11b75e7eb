package mutation_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/idempotency"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
)

// values holds "<tenant>/<key>" → "<revision> <value>", as the kit's test
// service does; the handler below is written here so that each test can
// count its runs and make it fail.
var values = store.Bucket("values")

var schema = store.Schema{Service: "mutationtest", Version: 1, Buckets: []store.Bucket{values}}

var epoch = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

type fixture struct {
	db      *store.DB
	clock   *clock.Fake
	mutator *mutation.Mutator
	audit   *audit.Log
	path    string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{clock: clock.NewFake(epoch), path: filepath.Join(t.TempDir(), "mutation.db")}
	f.open(t)
	return f
}

// open opens (or opens again, after a close: a restart) the fixture's file.
func (f *fixture) open(t *testing.T) {
	t.Helper()
	f.db = storetest.OpenAt(t, f.path, schema)
	f.mutator = mutation.New(f.db, idempotency.New(f.clock, idempotency.DefaultTTL))
	f.audit = audit.New(f.db, f.clock)
}

// put is a handler in the shape the package documents: it writes the value
// under the next revision and answers with that revision. runs counts the
// times its function ran; fail, when set, makes the function fail after
// writing, as a handler that finds a conflict late does.
func (f *fixture) put(ctx context.Context, req *kittestv1.PutRequest, runs *int, fail error) (*kittestv1.PutResponse, error) {
	return mutation.Apply(ctx, f.mutator, req, func(tx *bolt.Tx) (*kittestv1.PutResponse, error) {
		if runs != nil {
			*runs++
		}
		b := store.BucketTx(tx, values)
		rev, err := b.NextSequence()
		if err != nil {
			return nil, err
		}
		if err := b.Put([]byte(req.TenantId+"/"+req.Key), []byte(strconv.FormatUint(rev, 10)+" "+req.Value)); err != nil {
			return nil, err
		}
		if fail != nil {
			return nil, fail
		}
		return &kittestv1.PutResponse{Revision: rev}, nil
	})
}

// stored returns what the file holds under tenant/key, "" when nothing.
func (f *fixture) stored(t *testing.T, tenant, key string) string {
	t.Helper()
	var v string
	if err := f.db.View(func(tx *bolt.Tx) error {
		v = string(store.BucketTx(tx, values).Get([]byte(tenant + "/" + key)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// count returns the number of keys in a top-level bucket.
func (f *fixture) count(t *testing.T, b store.Bucket) int {
	t.Helper()
	var n int
	if err := f.db.View(func(tx *bolt.Tx) error {
		n = store.BucketTx(tx, b).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// fileDigest hashes the bbolt file as it is on disk: a write transaction
// that committed anything changes at least its meta page.
func (f *fixture) fileDigest(t *testing.T) [32]byte {
	t.Helper()
	data, err := os.ReadFile(f.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// txID returns the id of the last committed write transaction.
func (f *fixture) txID(t *testing.T) int {
	t.Helper()
	var id int
	if err := f.db.View(func(tx *bolt.Tx) error {
		id = tx.ID()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// entries returns the audit entries of the file, in order.
func (f *fixture) entries(t *testing.T) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	if err := f.audit.Range(1, func(_ uint64, e audit.Entry) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := f.audit.Verify(); err != nil || n != uint64(len(out)) {
		t.Fatalf("audit chain: %d entries, %v; want %d intact", n, err, len(out))
	}
	return out
}

// audited returns ctx carrying an audit call as the server's audit slot
// starts one for a tenant-scoped mutation.
func (f *fixture) audited(tenant, requestID string) (context.Context, *audit.Call) {
	call := &audit.Call{Entry: audit.Entry{
		Actor: "spiffe://lethe.example/system/newsletter", Method: "/lethe.kittest.v1.KitTestService/Put",
		TenantID: tenant, RequestID: requestID, Code: codes.OK.String(),
	}}
	return audit.NewContext(context.Background(), f.audit, call), call
}

// wantInvalid fails unless err is InvalidArgument with a single violation
// of field.
func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("error = %v, want InvalidArgument", err)
	}
	v := apierror.Violations(err)
	if len(v) != 1 || v[0].Field != field {
		t.Fatalf("violations = %+v, want one naming %s", v, field)
	}
}

// TestReplayReturnsTheFirstAnswer: a request sent again under its request
// id gets the first response without running again, also after the process
// restarted; the id is scoped to the tenant and the kind of mutation, so
// another tenant or another mutation may use it.
func TestReplayReturnsTheFirstAnswer(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	req := &kittestv1.PutRequest{RequestId: "r-1", TenantId: "clio", Key: "colour", Value: "blue"}
	runs := 0
	first, err := f.put(ctx, req, &runs, nil)
	if err != nil || first.Revision != 1 {
		t.Fatalf("first put = %v, %v; want revision 1", first, err)
	}
	// A later change, so that a second run would answer differently.
	if _, err := f.put(ctx, &kittestv1.PutRequest{RequestId: "r-2", TenantId: "clio", Key: "size", Value: "large"}, nil, nil); err != nil {
		t.Fatal(err)
	}

	again, err := f.put(ctx, req, &runs, nil)
	if err != nil || again.Revision != 1 || runs != 1 {
		t.Fatalf("replay = %v, %v after %d runs; want the first revision 1 and no second run", again, err, runs)
	}
	if got := f.stored(t, "clio", "colour"); got != "1 blue" {
		t.Fatalf("stored = %q after the replay, want the first write %q", got, "1 blue")
	}

	// The record is in the file, not in memory.
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	f.open(t)
	again, err = f.put(ctx, req, &runs, nil)
	if err != nil || again.Revision != 1 || runs != 1 {
		t.Fatalf("replay after a restart = %v, %v after %d runs; want revision 1 and no second run", again, err, runs)
	}

	// Another tenant, and another kind of mutation, may use the same id.
	other, err := f.put(ctx, &kittestv1.PutRequest{RequestId: "r-1", TenantId: "cleura", Key: "colour", Value: "blue"}, &runs, nil)
	if err != nil || other.Revision != 3 || runs != 2 {
		t.Fatalf("the same id for another tenant = %v, %v after %d runs; want a new revision 3", other, err, runs)
	}
	touched := false
	if _, err := mutation.Apply(ctx, f.mutator, &kittestv1.TouchRequest{RequestId: "r-1", TenantId: "clio"}, func(*bolt.Tx) (*kittestv1.TouchResponse, error) {
		touched = true
		return &kittestv1.TouchResponse{}, nil
	}); err != nil || !touched {
		t.Fatalf("the same id for another kind of mutation: ran %v, %v; want it to run", touched, err)
	}
}

// TestRequestIDReusedForAnotherRequest: the same id with a different
// request is refused as InvalidArgument naming request_id, and changes
// nothing, whatever differs (the value, the key, a dry-run flag).
func TestRequestIDReusedForAnotherRequest(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.put(ctx, &kittestv1.PutRequest{RequestId: "r-1", TenantId: "clio", Key: "colour", Value: "blue"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	before := f.fileDigest(t)
	for _, req := range []*kittestv1.PutRequest{
		{RequestId: "r-1", TenantId: "clio", Key: "colour", Value: "red"},
		{RequestId: "r-1", TenantId: "clio", Key: "size", Value: "blue"},
	} {
		runs := 0
		actx, call := f.audited("clio", "r-1")
		_, err := f.put(actx, req, &runs, nil)
		wantInvalid(t, err, "request_id")
		if runs != 0 || call.Recorded() {
			t.Fatalf("%v: ran %d times, recorded %v; want neither", req, runs, call.Recorded())
		}
	}
	if f.fileDigest(t) != before {
		t.Fatal("a refused reuse changed the file")
	}
	if got := f.stored(t, "clio", "colour"); got != "1 blue" {
		t.Fatalf("stored = %q, want the first write", got)
	}
}

// TestRequestIDChecked: a request id is 1 to 128 printable ASCII
// characters without spaces; anything else is refused, naming request_id,
// before the handler runs, by Apply and ApplyFact alike.
func TestRequestIDChecked(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	before := f.fileDigest(t)
	for name, id := range map[string]string{
		"missing":           "",
		"one byte too long": strings.Repeat("r", mutation.MaxRequestIDLength+1),
		"space":             "r 1",
		"newline":           "r-1\nforged audit line",
		"NUL":               "r\x00",
		"escape":            "\x1b[2Jr-1",
		"DEL":               "r\x7f",
		"non-ASCII":         "réquest",
	} {
		t.Run(name, func(t *testing.T) {
			req := &kittestv1.PutRequest{RequestId: id, TenantId: "clio", Key: "colour", Value: "blue"}
			runs := 0
			_, err := f.put(ctx, req, &runs, nil)
			wantInvalid(t, err, "request_id")
			_, err = mutation.ApplyFact(ctx, f.mutator, req, func(*bolt.Tx) (*kittestv1.PutResponse, error) {
				runs++
				return &kittestv1.PutResponse{}, nil
			})
			wantInvalid(t, err, "request_id")
			req.ValidateOnly = true
			_, err = f.put(ctx, req, &runs, nil)
			wantInvalid(t, err, "request_id")
			if runs != 0 {
				t.Fatalf("the handler ran %d times for a refused request id", runs)
			}
		})
	}
	if f.fileDigest(t) != before {
		t.Fatal("refused request ids changed the file")
	}

	// The bounds themselves are accepted.
	for i, id := range []string{"!", strings.Repeat("~", mutation.MaxRequestIDLength), "0123-abcd_EFGH.ijkl:/+="} {
		if _, err := f.put(ctx, &kittestv1.PutRequest{RequestId: id, TenantId: "clio", Key: "k" + strconv.Itoa(i), Value: "v"}, nil, nil); err != nil {
			t.Errorf("request id %q refused: %v", id, err)
		}
	}
}

// TestValidateOnlyWritesNothing: a dry run runs the handler, answers as the
// real call would, and leaves the file byte for byte as it was: no state,
// no idempotency record, no audit entry. A dry run that fails fails as the
// real call would.
func TestValidateOnlyWritesNothing(t *testing.T) {
	f := newFixture(t)
	if _, err := f.put(context.Background(), &kittestv1.PutRequest{RequestId: "r-1", TenantId: "clio", Key: "colour", Value: "blue"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	before := f.fileDigest(t)
	entriesBefore := len(f.entries(t))

	dry := &kittestv1.PutRequest{RequestId: "r-2", TenantId: "clio", Key: "colour", Value: "red", ValidateOnly: true}
	ctx, call := f.audited("clio", "r-2")
	runs := 0
	resp, err := f.put(ctx, dry, &runs, nil)
	if err != nil || resp.Revision != 2 || runs != 1 {
		t.Fatalf("dry run = %v, %v after %d runs; want the answer of the real call, revision 2", resp, err, runs)
	}
	if !call.Recorded() {
		t.Fatal("a dry run left its audit call to be recorded: it changed nothing, so there is nothing to record")
	}
	if f.fileDigest(t) != before {
		t.Fatal("a dry run changed the file")
	}
	if got := f.stored(t, "clio", "colour"); got != "1 blue" {
		t.Fatalf("stored = %q after a dry run, want %q", got, "1 blue")
	}
	if n := len(f.entries(t)); n != entriesBefore {
		t.Fatalf("audit entries = %d after a dry run, want %d", n, entriesBefore)
	}
	// Dry again: not a replay, it runs again and answers the same.
	if resp, err := f.put(ctx, dry, &runs, nil); err != nil || resp.Revision != 2 || runs != 2 {
		t.Fatalf("second dry run = %v, %v after %d runs; want it to run again", resp, err, runs)
	}

	// A dry run fails where the real call would, and writes nothing either.
	conflict := apierror.FailedPrecondition("COLOUR_LOCKED", "the colour is locked")
	if _, err := f.put(context.Background(), dry, nil, conflict); !errors.Is(err, conflict) {
		t.Fatalf("failing dry run = %v, want the handler's %v", err, conflict)
	}
	if f.fileDigest(t) != before {
		t.Fatal("a failing dry run changed the file")
	}

	// No record was kept under the dry run's id: the real call runs.
	commit := &kittestv1.PutRequest{RequestId: "r-2", TenantId: "clio", Key: "colour", Value: "red"}
	if resp, err := f.put(context.Background(), commit, &runs, nil); err != nil || resp.Revision != 2 || runs != 3 {
		t.Fatalf("the real call after dry runs = %v, %v after %d runs; want it to run and commit revision 2", resp, err, runs)
	}
	if got := f.stored(t, "clio", "colour"); got != "2 red" {
		t.Fatalf("stored = %q, want %q", got, "2 red")
	}
}

// TestHandlerErrorWritesNothing: when the handler fails after writing, its
// writes, the idempotency record and the audit entry are all rolled back,
// and the same request id may be used again for the retry.
func TestHandlerErrorWritesNothing(t *testing.T) {
	f := newFixture(t)
	before := f.fileDigest(t)
	req := &kittestv1.PutRequest{RequestId: "r-1", TenantId: "clio", Key: "colour", Value: "blue"}
	conflict := apierror.FailedPrecondition("COLOUR_LOCKED", "the colour is locked")
	ctx, call := f.audited("clio", "r-1")
	_, err := f.put(ctx, req, nil, conflict)
	var domain *apierror.Error
	if !errors.As(err, &domain) || domain.Code() != codes.FailedPrecondition {
		t.Fatalf("error = %v, want the handler's FailedPrecondition unchanged", err)
	}
	if call.Recorded() {
		t.Fatal("a failed call was marked recorded")
	}
	if f.fileDigest(t) != before {
		t.Fatal("a failed mutation changed the file")
	}
	if n := f.count(t, store.BucketIdempotency); n != 0 {
		t.Fatalf("%d idempotency records after a failure, want 0", n)
	}

	ctx, call = f.audited("clio", "r-1")
	resp, err := f.put(ctx, req, nil, nil)
	if err != nil || resp.Revision != 1 {
		t.Fatalf("retry = %v, %v; want it to run and commit revision 1 (the failure's sequence rolled back too)", resp, err)
	}
	if !call.Recorded() || len(f.entries(t)) != 1 {
		t.Fatalf("retry: recorded %v with %d entries, want one entry", call.Recorded(), len(f.entries(t)))
	}
}

// TestAuditEntryCommitsWithTheChange: a mutation's audit entry, with its
// tenant and request id, is appended in the mutation's transaction, once:
// a replay records nothing more and tells the slot so.
func TestAuditEntryCommitsWithTheChange(t *testing.T) {
	f := newFixture(t)
	req := &kittestv1.PutRequest{RequestId: "r-1", TenantId: "clio", Key: "colour", Value: "blue"}
	ctx, call := f.audited("clio", "r-1")
	call.Target = "colour"
	if _, err := f.put(ctx, req, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !call.Recorded() {
		t.Fatal("the call was not marked recorded: the audit slot would record it a second time")
	}
	entries := f.entries(t)
	want := call.Entry
	if len(entries) != 1 {
		t.Fatalf("audit entries = %+v, want one", entries)
	}
	got := entries[0]
	if !got.Time.Equal(epoch) {
		t.Errorf("entry time = %v, want the log's clock %v", got.Time, epoch)
	}
	got.Time = time.Time{}
	if got != want {
		t.Fatalf("audit entry = %+v, want %+v", got, want)
	}

	ctx, call = f.audited("clio", "r-1")
	if _, err := f.put(ctx, req, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !call.Recorded() || len(f.entries(t)) != 1 {
		t.Fatalf("replay: recorded %v with %d entries; want it counted as recorded and no new entry", call.Recorded(), len(f.entries(t)))
	}

	// Without an audit slot (a call from inside the process) the change
	// commits without an entry.
	if _, err := f.put(context.Background(), &kittestv1.PutRequest{RequestId: "r-2", TenantId: "clio", Key: "size", Value: "large"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(f.entries(t)); n != 1 {
		t.Fatalf("audit entries = %d after an unaudited call, want 1", n)
	}
}

// TestApplyFact: a fact keeps no record under its request id, so the id
// may come again with the same or another request and the handler runs
// each time; each call is audited.
func TestApplyFact(t *testing.T) {
	f := newFixture(t)
	signal := func(req *kittestv1.PutRequest, runs *int) (*kittestv1.PutResponse, error) {
		ctx, call := f.audited(req.TenantId, req.RequestId)
		resp, err := mutation.ApplyFact(ctx, f.mutator, req, func(tx *bolt.Tx) (*kittestv1.PutResponse, error) {
			*runs++
			// A fact merges: recording it again changes nothing.
			k := []byte(req.TenantId + "/" + req.Key)
			b := store.BucketTx(tx, values)
			if b.Get(k) == nil {
				if err := b.Put(k, []byte(req.Value)); err != nil {
					return nil, err
				}
			}
			return &kittestv1.PutResponse{Revision: uint64(b.Stats().KeyN)}, nil
		})
		if err == nil && !call.Recorded() {
			t.Fatal("a fact's call was not marked recorded")
		}
		return resp, err
	}
	runs := 0
	req := &kittestv1.PutRequest{RequestId: "s-1", TenantId: "clio", Key: "last-seen", Value: "2026-03-02"}
	for range 2 {
		if _, err := signal(req, &runs); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := signal(&kittestv1.PutRequest{RequestId: "s-1", TenantId: "clio", Key: "first-seen", Value: "2026-01-05"}, &runs); err != nil {
		t.Fatalf("the same id with another fact: %v, want it recorded", err)
	}
	if runs != 3 {
		t.Fatalf("the handler ran %d times, want 3: a fact is never replayed from a record", runs)
	}
	if n := f.count(t, store.BucketIdempotency); n != 0 {
		t.Fatalf("%d idempotency records, want none", n)
	}
	if got := f.stored(t, "clio", "first-seen"); got != "2026-01-05" {
		t.Fatalf("stored = %q, want the second fact", got)
	}
	entries := f.entries(t)
	if len(entries) != 3 {
		t.Fatalf("audit entries = %d, want one per call", len(entries))
	}
	for _, e := range entries {
		if e.TenantID != "clio" || e.RequestID != "s-1" {
			t.Fatalf("audit entry = %+v, want tenant clio and request s-1", e)
		}
	}

	// A failing fact writes nothing.
	before := f.fileDigest(t)
	boom := errors.New("boom")
	if _, err := mutation.ApplyFact(context.Background(), f.mutator, req, func(tx *bolt.Tx) (*kittestv1.PutResponse, error) {
		if err := store.BucketTx(tx, values).Put([]byte("clio/half"), []byte("written")); err != nil {
			return nil, err
		}
		return nil, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("failing fact = %v, want %v", err, boom)
	}
	if f.fileDigest(t) != before {
		t.Fatal("a failing fact changed the file")
	}
}

// TestConcurrentMutations runs many mutations at once, so that they share
// group-commit transactions: distinct requests, retries of one request
// racing each other, and requests whose handler fails after writing. Each
// caller gets the answer of its own request, a retry the one answer of its
// request, a failure its own error and nothing written; every change has
// exactly one audit entry.
func TestConcurrentMutations(t *testing.T) {
	f := newFixture(t)
	const (
		distinct = 48 // requests of their own
		failing  = 8  // whose handler fails after writing
		retried  = 4  // requests each sent by retries callers at once
		retries  = 6
	)
	type result struct {
		req  *kittestv1.PutRequest
		resp *kittestv1.PutResponse
		err  error
		call *audit.Call
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
		start   = make(chan struct{})
	)
	run := func(req *kittestv1.PutRequest, fail error) {
		defer wg.Done()
		ctx, call := f.audited(req.TenantId, req.RequestId)
		<-start
		resp, err := f.put(ctx, req, nil, fail)
		mu.Lock()
		results = append(results, result{req, resp, err, call})
		mu.Unlock()
	}
	tenants := []string{"clio", "cleura", "clicklearn"}
	for i := range distinct {
		wg.Add(1)
		go run(&kittestv1.PutRequest{RequestId: fmt.Sprintf("d-%d", i), TenantId: tenants[i%3], Key: fmt.Sprintf("key-%d", i), Value: fmt.Sprintf("value-%d", i)}, nil)
	}
	for i := range failing {
		wg.Add(1)
		go run(&kittestv1.PutRequest{RequestId: fmt.Sprintf("f-%d", i), TenantId: "clio", Key: fmt.Sprintf("bad-%d", i), Value: "x"},
			apierror.FailedPrecondition("LOCKED", fmt.Sprintf("locked %d", i)))
	}
	for i := range retried {
		for range retries {
			wg.Add(1)
			go run(&kittestv1.PutRequest{RequestId: fmt.Sprintf("r-%d", i), TenantId: "cleura", Key: fmt.Sprintf("retried-%d", i), Value: "v"}, nil)
		}
	}
	txBefore := f.txID(t)
	close(start)
	wg.Wait()
	// The point of the test is that calls shared transactions: with this
	// many callers released at once they queue behind the first commit's
	// fsync (measured: 1 to 3 write transactions for the 52 changes).
	if txs := f.txID(t) - txBefore; txs >= distinct+retried {
		t.Fatalf("%d write transactions for %d changes: no transaction was shared, so batching was not exercised", txs, distinct+retried)
	}

	revisions := map[uint64]string{}
	retriedAnswer := map[string]uint64{}
	for _, r := range results {
		if strings.HasPrefix(r.req.Key, "bad-") {
			want := "locked " + strings.TrimPrefix(r.req.Key, "bad-")
			if status.Code(r.err) != codes.FailedPrecondition || r.err.Error() != want || r.call.Recorded() {
				t.Errorf("%s: %v (recorded %v), want its own error %q and nothing recorded", r.req.Key, r.err, r.call.Recorded(), want)
			}
			if got := f.stored(t, r.req.TenantId, r.req.Key); got != "" {
				t.Errorf("%s: a failed mutation left %q", r.req.Key, got)
			}
			continue
		}
		if r.err != nil {
			t.Errorf("%s: %v", r.req.RequestId, r.err)
			continue
		}
		if !r.call.Recorded() {
			t.Errorf("%s: call not marked recorded", r.req.RequestId)
		}
		// The answer is the revision that the file holds under this
		// request's own key: not another batch member's.
		if got, want := f.stored(t, r.req.TenantId, r.req.Key), fmt.Sprintf("%d %s", r.resp.Revision, r.req.Value); got != want {
			t.Errorf("%s answered revision %d, but the file holds %q for its key", r.req.RequestId, r.resp.Revision, got)
		}
		if strings.HasPrefix(r.req.RequestId, "r-") {
			if first, ok := retriedAnswer[r.req.RequestId]; ok && first != r.resp.Revision {
				t.Errorf("%s: retries answered revisions %d and %d, want one answer", r.req.RequestId, first, r.resp.Revision)
			}
			retriedAnswer[r.req.RequestId] = r.resp.Revision
		}
		if other, ok := revisions[r.resp.Revision]; ok && other != r.req.RequestId {
			t.Errorf("revision %d answered both %s and %s", r.resp.Revision, other, r.req.RequestId)
		}
		revisions[r.resp.Revision] = r.req.RequestId
	}
	if len(results) != distinct+failing+retried*retries {
		t.Fatalf("%d results, want %d", len(results), distinct+failing+retried*retries)
	}
	if n := f.count(t, values); n != distinct+retried {
		t.Fatalf("%d values stored, want %d: one per distinct request and one per retried request", n, distinct+retried)
	}
	if n := f.count(t, store.BucketIdempotency); n != distinct+retried {
		t.Fatalf("%d idempotency records, want %d", n, distinct+retried)
	}
	audited := map[string]int{}
	for _, e := range f.entries(t) {
		audited[e.TenantID+" "+e.RequestID]++
	}
	if len(audited) != distinct+retried {
		t.Fatalf("audit entries for %d requests, want %d", len(audited), distinct+retried)
	}
	for k, n := range audited {
		if n != 1 || strings.Contains(k, " f-") {
			t.Errorf("request %s audited %d times, want once and never for a failure", k, n)
		}
	}
}
