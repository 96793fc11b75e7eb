package outbox_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store"
)

// The crash child is this test binary re-executed with these variables:
// it writes state and events in a loop from several goroutines, printing
// "ack <id>" after each commit returned, while a relay publishes.
const (
	crashChildEnv   = "LETHE_OUTBOX_CRASH_CHILD" // the database path
	crashNATSEnv    = "LETHE_OUTBOX_CRASH_NATS"
	crashPrefixEnv  = "LETHE_OUTBOX_CRASH_PREFIX"
	crashDrainedMsg = "drained"
)

func crashChild() int {
	db, err := store.Open(store.Options{Path: os.Getenv(crashChildEnv), Schema: schema})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ob, err := outbox.New(db, outbox.Config{Source: "lethe/crash", MaxBacklog: 5000})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	nc, err := nats.Connect(os.Getenv(crashNATSEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	relay, err := outbox.NewRelay(ob, nc, fastRelay)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = relay.Run(ctx) }()

	prefix := os.Getenv(crashPrefixEnv)
	if prefix == "" { // drain mode: publish what earlier runs left, then exit
		for ob.Depth() > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Println(crashDrainedMsg)
		return 0
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	err = concurrentWriters(ctx, 8, db, ob, prefix, func(id string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(out, "ack", id)
		_ = out.Flush()
	})
	fmt.Fprintln(os.Stderr, err)
	return 1
}

// TestCrashLosesNothingAcknowledged kills a writer process with SIGKILL at
// random points, twenty times, restarting it on the same file each time.
// Afterwards every write acknowledged to the caller is in the file and its
// event reached the stream; an effect applied by event id happens exactly
// once per event.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs child processes")
	}
	ns := brokertest.Start(t)
	_, js := brokertest.Connect(t, ns)
	if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	dbPath := t.TempDir() + "/crash.db"
	acked := map[string]bool{}

	run := func(prefix string, kill time.Duration) []string {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dbPath, crashNATSEnv+"="+ns.ClientURL(), crashPrefixEnv+"="+prefix)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The kill is timed from the first acknowledged write, so that it
		// lands while the child writes and publishes, not while it starts.
		var lines []string
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			if len(lines) == 0 && kill > 0 {
				timer := time.AfterFunc(kill, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
				defer timer.Stop()
			}
			lines = append(lines, scanner.Text())
		}
		err = cmd.Wait()
		if kill == 0 && err != nil {
			t.Fatalf("child: %v\n%s", err, stderr.String())
		}
		return lines
	}

	for i := range 20 {
		// A kill lands anywhere: in a batch commit, a publish, a delete.
		for _, line := range run(fmt.Sprintf("run%02d", i), time.Duration(1+rand.IntN(100))*time.Millisecond) {
			if id, ok := strings.CutPrefix(line, "ack "); ok {
				acked[id] = true
			}
		}
	}
	if len(acked) < 100 {
		t.Fatalf("only %d writes were acknowledged across 20 runs; the test exercised too little", len(acked))
	}
	if lines := run("", 0); len(lines) == 0 || lines[len(lines)-1] != crashDrainedMsg {
		t.Fatalf("drain run printed %v", lines)
	}

	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stored := map[string]bool{}
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketState).ForEach(func(k, _ []byte) error {
			stored[string(k)] = true
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	for id := range acked {
		if !stored[id] {
			t.Fatalf("acknowledged write %s is missing from the file", id)
		}
	}

	// Every committed write — acknowledged or committed just before a kill —
	// has its event in the stream, applied once when de-duplicated by id.
	events := collect(t, js, len(stored))
	effects := map[string]int{}
	for _, msgs := range events {
		ev := &eventsv1.Event{}
		err := proto.Unmarshal(msgs[0].Data(), ev)
		if err != nil {
			t.Fatal(err)
		}
		effects[ev.GetCause().GetId()]++
	}
	for id := range stored {
		if effects[id] != 1 {
			t.Fatalf("write %s took effect %d times, want exactly once", id, effects[id])
		}
	}
	t.Logf("%d writes acknowledged, %d committed, %d distinct events delivered", len(acked), len(stored), len(events))
}
