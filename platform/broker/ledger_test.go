package broker_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// publish publishes data on subject with id as its Nats-Msg-Id, as the
// outbox relay does.
func publish(t *testing.T, ctx context.Context, js jetstream.JetStream, subject, id string) {
	t.Helper()
	if _, err := js.Publish(ctx, subject, []byte(id), jetstream.WithMsgID(id)); err != nil {
		t.Fatalf("publish %s on %s: %v", id, subject, err)
	}
}

// ledgerHolds waits until the erasure ledger has copied the message id
// (the ledger copies in the platform stream's order, so everything
// published before id has then been considered) and returns the ids it
// holds, in order.
func ledgerHolds(t *testing.T, ctx context.Context, js jetstream.JetStream, id string) []string {
	t.Helper()
	ledger, err := js.Stream(ctx, broker.ErasureLedgerStreamName(contract.StreamName))
	if err != nil {
		t.Fatalf("erasure ledger: %v", err)
	}
	var ids []string
	eventually.Succeeds(t, "the erasure ledger copies "+id, func() error {
		info, err := ledger.Info(ctx)
		if err != nil {
			t.Fatalf("erasure ledger info: %v", err)
		}
		ids = nil
		for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
			msg, err := ledger.GetMsg(ctx, seq)
			if err != nil {
				t.Fatalf("erasure ledger message %d: %v", seq, err)
			}
			ids = append(ids, msg.Header.Get(jetstream.MsgIDHeader))
		}
		if len(ids) == 0 || ids[len(ids)-1] != id {
			return fmt.Errorf("it holds %v", ids)
		}
		return nil
	})
	return ids
}

// TestErasureLedgerKeepsErasuresOnly: the ledger beside the platform
// stream copies every tenant's erasure directives, and only them, once
// each however often the relay published them; provisioning it again
// changes nothing and copies nothing twice.
func TestErasureLedgerKeepsErasuresOnly(t *testing.T) {
	ctx := testContext(t)
	_, js := brokertest.Connect(t, brokertest.Start(t))
	cfg := broker.DefaultStreamConfig()
	cfg.ErasureLedgerMaxAge = 90 * 24 * time.Hour
	if _, err := broker.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	if got := broker.ErasureLedgerStreamName(cfg.Name); got != contract.ErasureLedgerStream {
		t.Fatalf("the broker names the ledger %q, the SDK reads %q", got, contract.ErasureLedgerStream)
	}

	publish(t, ctx, js, "lethe.clio.erasure.requested", "erase-1")
	publish(t, ctx, js, "lethe.clio.erasure.requested", "erase-1") // the relay's retry
	publish(t, ctx, js, "lethe.clio.consent.withdrawn", "withdrawn-1")
	publish(t, ctx, js, "lethe.clio.rectification.requested", "rectify-1")
	publish(t, ctx, js, "lethe.clio.outcome.newsletter", "erase-1/newsletter")
	publish(t, ctx, js, "lethe.cleura.erasure.requested", "erase-2")
	publish(t, ctx, js, "lethe.clio.erasure.requested.extra", "not-a-directive")
	publish(t, ctx, js, "lethe.ufo.erasure.requested", "erase-3")
	if got, want := ledgerHolds(t, ctx, js, "erase-3"), []string{"erase-1", "erase-2", "erase-3"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("the ledger holds %v, want %v", got, want)
	}

	ledger, err := js.Stream(ctx, contract.ErasureLedgerStream)
	if err != nil {
		t.Fatal(err)
	}
	got := ledger.CachedInfo().Config
	if got.Storage != jetstream.FileStorage || got.Retention != jetstream.LimitsPolicy || got.MaxAge != cfg.ErasureLedgerMaxAge ||
		got.Duplicates != cfg.Duplicates || got.Replicas != 1 || len(got.Subjects) != 0 ||
		len(got.Sources) != 1 || got.Sources[0].Name != cfg.Name || got.Sources[0].FilterSubject != broker.ErasureLedgerFilter {
		t.Fatalf("ledger config = %+v, want file storage, limits retention, MaxAge %s, no subjects, sourcing %s filtered to %s",
			got, cfg.ErasureLedgerMaxAge, cfg.Name, broker.ErasureLedgerFilter)
	}

	// Every service provisions the streams at start.
	if _, err := broker.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatalf("second EnsureStream: %v", err)
	}
	again, err := js.Stream(ctx, contract.ErasureLedgerStream)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.CachedInfo().Config, got) || !again.CachedInfo().Created.Equal(ledger.CachedInfo().Created) {
		t.Fatalf("the second EnsureStream changed the ledger:\n got %+v\nwant %+v", again.CachedInfo().Config, got)
	}
	publish(t, ctx, js, "lethe.clio.erasure.requested", "erase-4")
	if got, want := ledgerHolds(t, ctx, js, "erase-4"), []string{"erase-1", "erase-2", "erase-3", "erase-4"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after provisioning again the ledger holds %v, want %v", got, want)
	}
}

// TestErasureLedgerCopiesTheBacklog: a ledger provisioned after the
// platform stream (an upgrade, or a ledger deleted by hand) copies the
// erasures the platform stream still holds.
func TestErasureLedgerCopiesTheBacklog(t *testing.T) {
	ctx := testContext(t)
	_, js := brokertest.Connect(t, brokertest.Start(t))
	cfg := broker.DefaultStreamConfig()
	if _, err := broker.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	if err := js.DeleteStream(ctx, contract.ErasureLedgerStream); err != nil {
		t.Fatal(err)
	}
	publish(t, ctx, js, "lethe.clio.erasure.requested", "erase-1")
	publish(t, ctx, js, "lethe.clio.consent.withdrawn", "withdrawn-1")
	publish(t, ctx, js, "lethe.clio.erasure.requested", "erase-2")
	if _, err := broker.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatalf("EnsureStream again: %v", err)
	}
	if got, want := ledgerHolds(t, ctx, js, "erase-2"), []string{"erase-1", "erase-2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("the ledger holds %v, want %v", got, want)
	}
}

// TestServicesProvisionTheLedgerAtOnce: the four services start together
// and each provisions the streams; none fails for another's creation.
func TestServicesProvisionTheLedgerAtOnce(t *testing.T) {
	ctx := testContext(t)
	e := brokertest.Start(t)
	errs := make(chan error, 4)
	for range 4 {
		_, js := brokertest.Connect(t, e)
		go func() {
			_, err := broker.EnsureStream(ctx, js, broker.DefaultStreamConfig())
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("EnsureStream: %v", err)
		}
	}
}
