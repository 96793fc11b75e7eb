package broker_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
)

// TestConsumeAsksForHeartbeats reads the pull request broker.Consume sends
// off the wire: it asks the server for a heartbeat every PullHeartbeat,
// so that a lost request is sent again after two missed ones.
func TestConsumeAsksForHeartbeats(t *testing.T) {
	ctx := testContext(t)
	nc, js := brokertest.Connect(t, brokertest.Start(t))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PULLS", Subjects: []string{"pulls.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "PULLS", jetstream.ConsumerConfig{Durable: "reader", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	requests, err := nc.SubscribeSync("$JS.API.CONSUMER.MSG.NEXT.PULLS.reader")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cc, err := broker.Consume(cons, func(jetstream.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	msg, err := requests.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no pull request: %v", err)
	}
	var req struct {
		Heartbeat time.Duration `json:"idle_heartbeat"`
	}
	if err := json.Unmarshal(msg.Data, &req); err != nil {
		t.Fatalf("pull request %q: %v", msg.Data, err)
	}
	if req.Heartbeat != broker.PullHeartbeat {
		t.Errorf("the pull request asks for a heartbeat every %s, want %s: %s", req.Heartbeat, broker.PullHeartbeat, msg.Data)
	}
}
