package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/hashchain"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
)

// bucketThings stands for a service's state that only audited mutations
// write (store.Schema.Audited).
var bucketThings = store.Bucket("things")

var thingsSchema = store.Schema{Service: "things", Version: 1, Buckets: []store.Bucket{bucketThings},
	Audited: []store.Bucket{bucketThings}}

// mutate commits n changes as an audited mutation does: each thing with
// its audit entry, in one transaction.
func mutate(t *testing.T, db *store.DB, log *audit.Log, n int) {
	t.Helper()
	for i := range n {
		err := db.Update(func(tx *bolt.Tx) error {
			b := store.BucketTx(tx, bucketThings)
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(store.Uint64Key(seq), []byte("thing")); err != nil {
				return err
			}
			return log.AppendTx(tx, audit.Entry{Actor: "ops", Method: "/things.v1/Put", RequestID: fmt.Sprint("r", i), Code: "OK"})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// thingsFile writes data/things.db with n audited changes and closes it.
func thingsFile(t *testing.T, n int) (data string) {
	t.Helper()
	data = t.TempDir()
	db, err := store.Open(store.Options{Path: filepath.Join(data, "things.db"), Schema: thingsSchema})
	if err != nil {
		t.Fatal(err)
	}
	mutate(t, db, audit.New(db, clock.Real{}), n)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return data
}

// tamper edits a closed file directly, as someone with the file would.
func tamper(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// cutTail removes the chain's last k entries and rewrites its own head
// record to the entry left last, so that the chain is consistent in
// itself; with copyToo, the head copy in the meta bucket as well.
func cutTail(k int, copyToo bool) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b := tx.Bucket(store.BucketAudit)
		seq, _, err := hashchain.New(store.BucketAudit).HeadTx(tx)
		if err != nil {
			return err
		}
		for i := range uint64(k) {
			if err := b.Delete(store.Uint64Key(seq - i)); err != nil {
				return err
			}
		}
		last, ok, err := hashchain.New(store.BucketAudit).EntryTx(tx, seq-uint64(k))
		if err != nil || !ok {
			return fmt.Errorf("entry %d: %v", seq-uint64(k), err)
		}
		head := hashchain.EncodeHead(last.Seq, last.Hash)
		if err := b.Put([]byte("head"), head); err != nil {
			return err
		}
		if copyToo {
			return tx.Bucket(store.BucketMeta).Put([]byte("audit_head"), head)
		}
		return nil
	}
}

func verify(t *testing.T, args ...string) (code int, out string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code = runAudit(append([]string{"verify"}, args...), &stdout, &stderr)
	return code, stdout.String() + stderr.String()
}

// TestAuditVerifyInsideTheFile: a file's audit log is held to what the rest
// of the file records of it. Wiping, dropping or cutting short the chain
// fails verification; an intact file and a fresh one pass.
func TestAuditVerifyInsideTheFile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(tx *bolt.Tx) error
		want   string // "" for intact
	}{
		{name: "intact"},
		{name: "wiped bucket", want: "head copy in _meta records 3: entries were removed (the audit bucket was emptied)",
			tamper: func(tx *bolt.Tx) error {
				b := tx.Bucket(store.BucketAudit)
				for k, _ := b.Cursor().First(); k != nil; k, _ = b.Cursor().First() {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				return nil
			}},
		{name: "wiped bucket and head copy", want: "the chain is empty but bucket _idempotency holds entries",
			tamper: func(tx *bolt.Tx) error {
				if err := tx.DeleteBucket(store.BucketAudit); err != nil {
					return err
				}
				if _, err := tx.CreateBucket(store.BucketAudit); err != nil {
					return err
				}
				// State only audited calls write: an idempotency record.
				if err := tx.Bucket(store.BucketIdempotency).Put([]byte("k"), []byte("v")); err != nil {
					return err
				}
				return tx.Bucket(store.BucketMeta).Delete([]byte("audit_head"))
			}},
		{name: "wiped bucket, head copy and idempotency records", want: "the chain is empty but bucket things holds entries",
			tamper: func(tx *bolt.Tx) error {
				for _, b := range []store.Bucket{store.BucketAudit, store.BucketIdempotency} {
					if err := tx.DeleteBucket(b); err != nil {
						return err
					}
					if _, err := tx.CreateBucket(b); err != nil {
						return err
					}
				}
				return tx.Bucket(store.BucketMeta).Delete([]byte("audit_head"))
			}},
		{name: "dropped bucket", want: "the audit bucket _audit is missing",
			tamper: func(tx *bolt.Tx) error { return tx.DeleteBucket(store.BucketAudit) }},
		{name: "truncated chain", want: "the chain has 2 entries, its head copy in _meta records 3: entries were removed",
			tamper: cutTail(1, false)},
		{name: "no service record", want: "no service record",
			tamper: func(tx *bolt.Tx) error { return tx.Bucket(store.BucketMeta).Delete([]byte("service")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := thingsFile(t, 3)
			if tc.tamper != nil {
				tamper(t, filepath.Join(data, "things.db"), tc.tamper)
			}
			code, out := verify(t, "--data", data)
			if tc.want == "" {
				if code != exitOK || !strings.Contains(out, "intact") {
					t.Fatalf("exit %d, want 0:\n%s", code, out)
				}
				return
			}
			if code != exitNo || !strings.Contains(out, "BROKEN") || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want 1 and %q:\n%s", code, tc.want, out)
			}
		})
	}

	t.Run("fresh file", func(t *testing.T) {
		data := thingsFile(t, 0)
		if code, out := verify(t, "--data", data); code != exitOK || !strings.Contains(out, "intact") {
			t.Fatalf("exit %d, want 0:\n%s", code, out)
		}
	})
}

// TestAuditVerifyAgainstAnchors: a service publishes its chain's head on
// the platform stream and in its log while it runs and when it stops.
// Cutting the chain's tail together with both head records leaves a file
// consistent in itself, which only the anchors show to be cut back; the
// same holds for a file rewritten, or removed, after its anchor.
func TestAuditVerifyAgainstAnchors(t *testing.T) {
	e := brokertest.Start(t)
	nc, js := brokertest.Connect(t, e)
	ctx := context.Background()
	if _, err := broker.EnsureStream(ctx, js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	var logBuf logbuf.Buffer
	// run runs the service for n audited changes; a clean stop publishes
	// the head reached.
	run := func(n int) {
		base, err := service.OpenBase(service.Deps{DataDir: data, NATS: nc, JetStream: js,
			Logger: slog.New(slog.NewJSONHandler(&logBuf, nil))}, thingsSchema)
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- base.Run(runCtx) }()
		mutate(t, base.DB, base.Audit, n)
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := base.Close(); err != nil {
			t.Fatal(err)
		}
	}
	run(3)
	between := time.Now().UTC().Format(time.RFC3339Nano)
	run(2)
	url := "--nats-url=" + e.ClientURL()

	// The stream holds the head of the five entries.
	stream, err := js.Stream(ctx, "LETHE")
	if err != nil {
		t.Fatal(err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, audit.AnchorSubject("things"))
	if err != nil {
		t.Fatal(err)
	}
	var anchor audit.Anchor
	if err := json.Unmarshal(last.Data, &anchor); err != nil || anchor.Seq != 5 {
		t.Fatalf("last anchor %s (%v), want seq 5", last.Data, err)
	}
	// The log's anchor lines are an anchors file as they stand.
	var lines []string
	for _, l := range strings.Split(logBuf.String(), "\n") {
		if strings.Contains(l, `"msg":"`+audit.AnchorLogMessage+`"`) {
			lines = append(lines, l)
		}
	}
	anchorsFile := filepath.Join(t.TempDir(), "anchors.jsonl")
	if err := os.WriteFile(anchorsFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	if code, out := verify(t, "--data", data, "--anchors", "stream", url); code != exitOK || !strings.Contains(out, "intact") {
		t.Fatalf("intact file against the stream: exit %d:\n%s", code, out)
	}

	// Two entries cut off with both head records: consistent in itself.
	path := filepath.Join(data, "things.db")
	tamper(t, path, cutTail(2, true))
	if code, out := verify(t, "--data", data); code != exitOK {
		t.Fatalf("a file cut consistently passes on its own, exit %d:\n%s", code, out)
	}
	// The verifier names the first anchored entry the file lacks: 5, or 4
	// when the second run's first anchor (published as its Run starts, in
	// a goroutine racing the appends) came after its first append.
	for _, from := range []string{"stream", anchorsFile} {
		code, out := verify(t, "--data", data, "--anchors", from, url)
		if code != exitNo || !(strings.Contains(out, "the chain ends before entry 5") || strings.Contains(out, "the chain ends before entry 4")) {
			t.Fatalf("cut file against %s: exit %d, want 1 naming entry 4 or 5:\n%s", from, code, out)
		}
	}
	// The same file is what a backup taken between the runs restores: it
	// holds against the anchors published up to then.
	if code, out := verify(t, "--data", data, "--anchors", "stream", url, "--until", between); code != exitOK || !strings.Contains(out, "intact") {
		t.Fatalf("against the anchors until %s: exit %d, want 0:\n%s", between, code, out)
	}

	// The whole file replaced by another of the same length: every anchor's
	// entry differs.
	other := thingsFile(t, 5)
	copyFile(t, filepath.Join(other, "things.db"), path)
	if code, out := verify(t, "--data", data, "--anchors", "stream", url); code != exitNo || !strings.Contains(out, "differs from its anchor") {
		t.Fatalf("rewritten file: exit %d, want 1:\n%s", code, out)
	}

	// The file removed: its anchors name it.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	thingsDir := thingsFile(t, 0) // the folder must hold some file
	copyFile(t, filepath.Join(thingsDir, "things.db"), filepath.Join(data, "other.db"))
	// other.db is a fresh "things" file: it stands for things.db wiped by
	// deleting it and letting the service create it anew.
	if code, out := verify(t, "--data", data, "--anchors", "stream", url); code != exitNo || !strings.Contains(out, "the chain ends before entry") {
		t.Fatalf("recreated file: exit %d, want 1:\n%s", code, out)
	}
	if err := os.Remove(filepath.Join(data, "other.db")); err != nil {
		t.Fatal(err)
	}
	reg, err := store.Open(store.Options{Path: filepath.Join(data, "unrelated.db"), Schema: store.Schema{Service: "unrelated", Version: 1}})
	if err != nil {
		t.Fatal(err)
	}
	_ = reg.Close()
	if code, out := verify(t, "--data", data, "--anchors", "stream", url); code != exitNo || !strings.Contains(out, "MISSING: anchored at entry 5") {
		t.Fatalf("removed file: exit %d, want 1:\n%s", code, out)
	}

	// Without the stream, --anchors stream cannot pass.
	e.Shutdown()
	if code, out := verify(t, "--data", data, "--anchors", "stream", url, "--timeout=2s"); code != exitPlatform {
		t.Fatalf("stream down: exit %d, want %d:\n%s", code, exitPlatform, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
