package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
)

// TestAuditAnchorsArePublished: while a service runs, the head of each of
// its files' audit chains reaches the platform stream and the log once it
// moves, a second file's under its own name, and an unchanged head is
// published again once a day, so the stream, which keeps 30 days, never
// loses the last anchor of a quiet file.
func TestAuditAnchorsArePublished(t *testing.T) {
	e := brokertest.Start(t)
	nc, js := brokertest.Connect(t, e)
	ctx := context.Background()
	stream, err := broker.EnsureStream(ctx, js, broker.DefaultStreamConfig())
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	var logs logbuf.Buffer
	base, err := service.OpenBase(service.Deps{DataDir: t.TempDir(), Clock: clk, NATS: nc, JetStream: js,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), AnchorEvery: 10 * time.Millisecond},
		store.Schema{Service: "things", Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	journal, err := base.OpenFile(store.Schema{Service: "things-journal", Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- base.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := base.Close(); err != nil {
			t.Error(err)
		}
	}()

	entry := audit.Entry{Actor: "ops", Method: "/things.v1/Put", Code: "OK"}
	for range 2 {
		if err := base.Audit.Append(entry); err != nil {
			t.Fatal(err)
		}
	}
	if err := journal.Update(func(tx *bbolt.Tx) error { return base.Audit.AppendTx(tx, entry) }); err != nil {
		t.Fatal(err)
	}
	// lastAnchor waits for the stream's last anchor of file to satisfy ok.
	lastAnchor := func(file string, ok func(audit.Anchor, uint64) bool) audit.Anchor {
		t.Helper()
		var a audit.Anchor
		eventually.Succeeds(t, "an anchor of "+file+" as expected", func() error {
			msg, err := stream.GetLastMsgForSubject(ctx, audit.AnchorSubject(file))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return err
			}
			if err != nil {
				t.Fatal(err)
			}
			if a, err = audit.DecodeAnchor(msg.Data); err != nil {
				t.Fatal(err)
			}
			if !ok(a, msg.Sequence) {
				return fmt.Errorf("last anchor %+v at sequence %d", a, msg.Sequence)
			}
			return nil
		})
		return a
	}
	var firstSeq uint64
	first := lastAnchor("things", func(a audit.Anchor, seq uint64) bool { firstSeq = seq; return a.Seq == 2 })
	lastAnchor("things-journal", func(a audit.Anchor, _ uint64) bool { return a.Seq == 1 })

	// A day later, the same head is anchored again, at the new time.
	clk.Advance(24 * time.Hour)
	again := lastAnchor("things", func(_ audit.Anchor, seq uint64) bool { return seq > firstSeq })
	if again.Seq != 2 || again.Hash != first.Hash || !again.Time.Equal(first.Time.Add(24*time.Hour)) {
		t.Fatalf("refreshed anchor %+v, first %+v", again, first)
	}

	// The log carries the same heads, as anchors.
	found := map[string]bool{}
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != audit.AnchorLogMessage {
			continue
		}
		a, err := audit.DecodeAnchor([]byte(line))
		if err != nil {
			t.Fatalf("log line %s: %v", line, err)
		}
		if (a.File == "things" && a.Seq == 2 && a.Hash == first.Hash) || (a.File == "things-journal" && a.Seq == 1) {
			found[a.File] = true
		}
	}
	if !found["things"] || !found["things-journal"] {
		t.Fatalf("anchors in the log: %v\n%s", found, logs.String())
	}
}
