package tenants_test

import (
	"context"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/tenants"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.LeakOptions...) }

// TestDirectoryFollowsTheRegistry publishes tenant events the way the
// registry does — through its outbox — and watches another service's
// directory follow them, including an older event arriving after a newer
// one.
func TestDirectoryFollowsTheRegistry(t *testing.T) {
	ns := brokertest.Start(t)
	nc, js := brokertest.Connect(t, ns)
	if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	registryDB := storetest.Open(t, store.Schema{Service: "registry", Version: 1})
	clk := clock.NewFake(time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC))
	ob, err := outbox.New(registryDB, outbox.Config{Source: "lethe/registry", Clock: clk, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	relay, err := outbox.NewRelay(ob, nc, outbox.RelayConfig{PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(tenant string, body any) {
		t.Helper()
		ev := &eventsv1.Event{TenantId: tenant, Cause: &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONFIGURATION, Id: tenant}}
		switch b := body.(type) {
		case *eventsv1.TenantRegistered:
			ev.Body = &eventsv1.Event_TenantRegistered{TenantRegistered: b}
		case *eventsv1.TenantChanged:
			ev.Body = &eventsv1.Event_TenantChanged{TenantChanged: b}
		case *eventsv1.TenantRemoved:
			ev.Body = &eventsv1.Event_TenantRemoved{TenantRemoved: b}
		}
		if err := registryDB.Update(func(tx *bolt.Tx) error { return ob.AddTx(context.Background(), tx, ev) }); err != nil {
			t.Fatal(err)
		}
	}

	serviceDB := storetest.Open(t, store.Schema{Service: "consent", Version: 1})
	dir := tenants.New(serviceDB, "consent", "", brokertest.Logger(t))
	var changed []string // tenants whose settings changed, in the directory's transactions
	dir.OnSettingsChangedTx(func(_ *bolt.Tx, tenant string) error {
		changed = append(changed, tenant)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- relay.Run(ctx) }()
	go func() { done <- dir.Run(ctx, js) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}()

	publish("clio", &eventsv1.TenantRegistered{DisplayName: "Clio ApS"})
	// Clevenio starts on the calendar year, spelled out, and moves to a
	// financial year ending 30 June: one change.
	publish("clevenio", &eventsv1.TenantRegistered{DisplayName: "Clevenio", FinancialYearEnd: "12-31"})
	publish("clevenio", &eventsv1.TenantChanged{DisplayName: "Clevenio"})
	publish("clevenio", &eventsv1.TenantChanged{DisplayName: "Clevenio", FinancialYearEnd: "06-30"})
	// Cleura was removed at 11:00, but the stream delivers the removal
	// before its registration at 10:00: it must end removed.
	clk.Set(time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC))
	publish("cleura", &eventsv1.TenantRemoved{})
	clk.Set(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	publish("cleura", &eventsv1.TenantRegistered{DisplayName: "Cleura AB"})
	clk.Set(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	publish("marker", &eventsv1.TenantRegistered{DisplayName: "the last event"})

	eventually.Succeeds(t, "the directory learns of the last tenant", func() error { return dir.Require("marker") })
	if err := dir.Require("clio"); err != nil {
		t.Fatalf("registered tenant: %v", err)
	}
	err = serviceDB.View(func(tx *bolt.Tx) error {
		for tenant, want := range map[string]string{"clio": "12-31", "clevenio": "06-30"} {
			got, err := dir.FinancialYearEndTx(tx, tenant)
			if err != nil || got.String() != want {
				t.Errorf("%s financial year end = %v, %v; want %s", tenant, got, err, want)
			}
		}
		if _, err := dir.FinancialYearEndTx(tx, "cleura"); status.Code(err) != codes.NotFound {
			t.Errorf("financial year end of a removed tenant: %v, want NotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || changed[0] != "clevenio" {
		t.Errorf("settings changes seen: %v, want [clevenio] once", changed)
	}
	for _, tenant := range []string{"cleura", "nobody"} {
		if err := dir.Require(tenant); status.Code(err) != codes.NotFound {
			t.Errorf("tenant %s = %v, want NotFound", tenant, err)
		}
	}
}

// TestStopDuringStartUpIsNotAFailure: a directory told to stop while it
// still creates its consumer stops cleanly.
func TestStopDuringStartUpIsNotAFailure(t *testing.T) {
	ns := brokertest.Start(t)
	_, js := brokertest.Connect(t, ns)
	if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	dir := tenants.New(storetest.Open(t, store.Schema{Service: "consent", Version: 1}), "consent", "", brokertest.Logger(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := dir.Run(ctx, js); err != nil {
		t.Fatalf("Run with a stopped context = %v, want nil", err)
	}
}

// TestDirectoryOutlivesItsConsumer: a directory whose consumer is lost (a
// NATS node's store lost, an operator's mistake) sets it up again and
// goes on learning tenants, instead of stopping its service.
func TestDirectoryOutlivesItsConsumer(t *testing.T) {
	ns := brokertest.Start(t)
	_, js := brokertest.Connect(t, ns)
	ctx := context.Background()
	if _, err := broker.EnsureStream(ctx, js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	d := tenants.New(storetest.Open(t, store.Schema{Service: "consent", Version: 1}), "consent", "", brokertest.Logger(t))
	register := func(tenant string) {
		t.Helper()
		ev := &eventsv1.Event{Id: tenant, TenantId: tenant, Body: &eventsv1.Event_TenantRegistered{TenantRegistered: &eventsv1.TenantRegistered{DisplayName: tenant}}}
		data, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		natsSubject, err := contract.KindSubject(tenant, contract.KindTenantRegistered)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, natsSubject, data); err != nil {
			t.Fatal(err)
		}
	}
	learned := func(tenant string) {
		t.Helper()
		eventually.Succeeds(t, "the directory learns of "+tenant, func() error { return d.Require(tenant) })
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx, js) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	register("clio")
	learned("clio")
	if err := js.DeleteConsumer(ctx, broker.DefaultStreamConfig().Name, "lethe-consent-tenants"); err != nil {
		t.Fatal(err)
	}
	register("cleura")
	learned("cleura")
}
