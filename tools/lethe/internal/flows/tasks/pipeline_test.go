// The tasks pipeline end to end: a tracker run as an owning service runs
// it (platform/tasks/taskstest) and the SDK's subscribers answering its
// events as the systems at the other end of the wire. These tests live
// here, not beside the tracker, because the kit may not import the SDK's
// client side, in tests either (docs/design.md § Boundaries).
package tasks_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/platform/tasks/taskstest"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.LeakOptions...) }

// fixture is a running tracker that SDK subscribers answer.
type fixture struct{ *taskstest.Fixture }

func start(t testing.TB) *fixture { return startWith(t, taskstest.Options{}) }

func startWith(t testing.TB, opts taskstest.Options) *fixture {
	t.Helper()
	return &fixture{taskstest.Start(t, opts)}
}

// calls counts handler calls per (system, event).
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) add(system, eventID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[system+"/"+eventID]++
}

func (c *calls) get(system, eventID string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[system+"/"+eventID]
}

// subscribe runs an SDK subscriber for system until the test ends.
func (f *fixture) subscribe(t testing.TB, system string, handlers map[contract.Kind]subscriber.Handler, tune func(*subscriber.Config)) {
	t.Helper()
	l, err := ledger.Open(filepath.Join(t.TempDir(), system+"-ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := subscriber.Config{
		SystemID: system, Tenant: "clio", JetStream: f.JS, Ledger: l, Handlers: handlers,
		BackOff: []time.Duration{5 * time.Millisecond}, Logger: brokertest.Logger(t),
	}
	if tune != nil {
		tune(&cfg)
	}
	sub, err := subscriber.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("subscriber %s: %v", system, err)
		}
		_ = l.Close()
	})
}

func retainedUnderAccountingLaw() subscriber.Outcome {
	return subscriber.Retained(&eventsv1.Retention{
		Categories:  []*commonv1.DataCategory{{Id: "user.financial.invoice"}},
		LegalBasis:  commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION,
		BasisDetail: "Swedish Accounting Act (1999:1078), ch. 7 § 2",
		Until:       timestamppb.New(time.Date(2031, 12, 31, 0, 0, 0, 0, time.UTC)),
		Exemption:   eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_OBLIGATION,
		Law:         "Bokföringslagen (1999:1078) 7 kap. 2 §",
	})
}

// TestPipelineEndToEnd follows one erasure from the committed change
// through the relay, JetStream and three SDK subscribers back to the
// tracker, which reports the cause complete once every system answered.
func TestPipelineEndToEnd(t *testing.T) {
	f := start(t)
	var c calls
	handle := func(system string, outcome subscriber.Outcome) map[contract.Kind]subscriber.Handler {
		return map[contract.Kind]subscriber.Handler{
			contract.KindErasureRequested: func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
				c.add(system, ev.ID())
				return outcome, nil
			},
		}
	}
	f.subscribe(t, "crm", handle("crm", subscriber.Erased()), nil)
	f.subscribe(t, "newsletter", handle("newsletter", subscriber.NotFound()), nil)
	f.subscribe(t, "billing", handle("billing", retainedUnderAccountingLaw()), nil)

	ev := taskstest.Erasure("req-e2e")
	f.Publish(t, ev, taskstest.SDK("crm", "newsletter", "billing"))
	if got, want := f.WaitCompleted(t, "req-e2e"), "billing=RETAINED,crm=ERASED,newsletter=NOT_FOUND"; got != want {
		t.Fatalf("completion = %q, want %q", got, want)
	}
	for _, system := range []string{"crm", "newsletter", "billing"} {
		if n := c.get(system, ev.Id); n != 1 {
			t.Errorf("%s's handler ran %d times, want once", system, n)
		}
	}
	billing, err := f.Tracker.List(tasks.Filter{SystemID: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	o, err := billing[0].OutcomeProto()
	if err != nil || len(o.GetRetained()) != 1 || !strings.Contains(o.Retained[0].BasisDetail, "Accounting Act") {
		t.Fatalf("billing's outcome = %v, %v; want the retention and its basis", o, err)
	}
}

// TestPoisonedSystemFailsItsTask: a handler that always fails ends with
// its task FAILED after the configured deliveries, visible to an operator.
func TestPoisonedSystemFailsItsTask(t *testing.T) {
	f := start(t)
	var c calls
	f.subscribe(t, "flaky", map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			c.add("flaky", ev.ID())
			return subscriber.Outcome{}, errors.New("database unreachable")
		},
	}, func(cfg *subscriber.Config) { cfg.MaxDeliver = 3 })

	ev := taskstest.Erasure("req-poison")
	f.Publish(t, ev, taskstest.SDK("flaky"))
	f.WaitCompleted(t, "req-poison")
	failed, err := f.Tracker.List(tasks.Filter{TenantID: "clio", State: tasks.StateFinal, SystemID: "flaky"})
	if err != nil || len(failed) != 1 {
		t.Fatalf("operator listing = %v, %v; want the failed task", failed, err)
	}
	o, err := failed[0].OutcomeProto()
	if err != nil || o.Kind != eventsv1.OutcomeKind_OUTCOME_KIND_FAILED || !strings.Contains(o.Reason, "database unreachable") {
		t.Fatalf("outcome = %v, %v; want FAILED with the handler's error", o, err)
	}
	if n := c.get("flaky", ev.Id); n != 3 {
		t.Fatalf("handler ran %d times, want the 3 configured deliveries", n)
	}
}
