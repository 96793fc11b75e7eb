package subscriber_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// The crashing subscriber runs in a child process: the test binary run
// again with these variables set.
const (
	envCrashChild = "LETHE_TEST_CRASH_CHILD"
	envNATSURL    = "LETHE_TEST_NATS_URL"
	envLedgerPath = "LETHE_TEST_LEDGER_PATH"
	crashCode     = 3
)

var effects = []byte("effects")

// eraser is a handler whose side effect counts itself in the ledger's
// database, recorded in the same transaction as its outcome. With crash
// set it exits the process once that transaction committed, before the
// subscriber can report the outcome or acknowledge the event.
func eraser(l *ledger.Ledger, crash bool) subscriber.Handler {
	return func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
		out := subscriber.Erased()
		err := l.DB().Update(func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(effects)
			if err != nil {
				return err
			}
			if _, err := b.NextSequence(); err != nil {
				return err
			}
			return ev.Record(tx, out)
		})
		if err != nil {
			return subscriber.Outcome{}, err
		}
		if crash {
			os.Exit(crashCode)
		}
		return out, nil
	}
}

func countEffects(t *testing.T, l *ledger.Ledger) uint64 {
	t.Helper()
	var n uint64
	err := l.DB().View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(effects); b != nil {
			n = b.Sequence()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCrashBetweenSideEffectAndAck(t *testing.T) {
	if os.Getenv(envCrashChild) != "" {
		crashingSubscriber(t)
		return
	}
	s := sdktest.StartServer(t)
	_, js := sdktest.Connect(t, s)
	if _, err := js.CreateStream(context.Background(), sdktest.StreamConfig()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "newsletter.db")
	publish(t, js, newEvent("ev-1", contract.KindErasureRequested, 1), "")

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashBetweenSideEffectAndAck$", "-test.v")
	cmd.Env = append(os.Environ(), envCrashChild+"=1", envNATSURL+"="+s.ClientURL(), envLedgerPath+"="+path)
	out, err := cmd.CombinedOutput()
	if exit := (*exec.ExitError)(nil); !errors.As(err, &exit) || exit.ExitCode() != crashCode {
		t.Fatalf("the child subscriber ended with %v, want exit code %d; its output:\n%s", err, crashCode, out)
	}

	l, err := ledger.Open(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	recorded, found, err := l.Lookup("ev-1")
	if err != nil || !found {
		t.Fatalf("the crashed subscriber's outcome is not in the ledger: %v", err)
	}
	if got := sdktest.Outcomes(t, js, outcomeSubject); len(got) != 0 {
		t.Fatalf("%d outcomes published before the restart, want none", len(got))
	}

	// Restarted, the subscriber gets the event again once its AckWait
	// expires.
	cfg := config(t, js, l, map[contract.Kind]subscriber.Handler{contract.KindErasureRequested: eraser(l, false)})
	cfg.AckWait = 200 * time.Millisecond
	sub := sdktest.Run(t, cfg)
	got := sdktest.WaitOutcomes(t, js, outcomeSubject, 1)[0].Outcome
	info := waitSettled(t, js, sub.ConsumerName(contract.KindErasureRequested))

	if n := countEffects(t, l); n != 1 {
		t.Errorf("the side effect happened %d times, want once", n)
	}
	if !proto.Equal(got, recorded) {
		t.Errorf("published %v, want the outcome recorded with the side effect %v", got, recorded)
	}
	if info.NumRedelivered != 0 || info.Delivered.Consumer != 2 {
		t.Errorf("consumer delivered %d times with %d still redelivering, want 2 and 0", info.Delivered.Consumer, info.NumRedelivered)
	}
}

// crashingSubscriber is the child process: it handles the event with a
// handler that exits right after committing.
func crashingSubscriber(t *testing.T) {
	nc, err := nats.Connect(os.Getenv(envNATSURL))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(os.Getenv(envLedgerPath), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := config(t, js, l, map[contract.Kind]subscriber.Handler{contract.KindErasureRequested: eraser(l, true)})
	cfg.AckWait = 200 * time.Millisecond
	sub, err := subscriber.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = sub.Run(ctx)
	t.Fatalf("Run returned (%v) without the handler being called", err)
}
