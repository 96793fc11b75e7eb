package main

import (
	"net"
	"strings"
	"testing"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
)

// TestEventsTailFollowsAcrossARestart: `lethe events tail` keeps following
// when the NATS server restarts (lethe dev stopped and started again), and
// resumes after the last event it printed: nothing missed, nothing twice.
func TestEventsTailFollowsAcrossARestart(t *testing.T) {
	store := t.TempDir()
	server := brokertest.StartAt(t, store, false)
	port := server.Server().Addr().(*net.TCPAddr).Port
	publish := func(server *broker.Embedded, subject string) {
		t.Helper()
		_, js := brokertest.Connect(t, server)
		if _, err := broker.EnsureStream(ctxT(t), js, broker.DefaultStreamConfig()); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctxT(t), subject, []byte("not an event")); err != nil {
			t.Fatal(err)
		}
	}
	publish(server, "lethe.clio.erasure.requested")

	stdout, stderr := &logbuf.Buffer{}, &logbuf.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"events", "tail", "--all", "--count", "2", "--nats-url", server.ClientURL()}, stdout, stderr)
	}()
	cliPoll.Succeeds(t, "the first event printed", func() error {
		return unless(strings.Count(stdout.String(), "lethe.clio.erasure.requested") == 1, stdout.String()+stderr.String())
	})

	server.Shutdown()
	cliPoll.Succeeds(t, "the tail waiting for the platform", func() error {
		return unless(strings.Contains(stderr.String(), "waiting for the platform to come back"), stdout.String()+stderr.String())
	})
	again, err := broker.StartEmbedded(broker.EmbeddedConfig{Host: "127.0.0.1", Port: port, StoreDir: store, ServerName: "lethe-test"},
		brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(again.Shutdown)
	publish(again, "lethe.clio.consent.withdrawn")

	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("events tail exited %d\n%s", code, stderr)
		}
	case <-ctxT(t).Done():
		t.Fatalf("events tail did not print the event published after the restart\n%s%s", stdout, stderr)
	}
	out := stdout.String()
	if strings.Count(out, "lethe.clio.erasure.requested") != 1 || strings.Count(out, "lethe.clio.consent.withdrawn") != 1 {
		t.Errorf("want each event once, got\n%s", out)
	}
	if !strings.Contains(stderr.String(), "following again") {
		t.Errorf("the tail did not say it follows again:\n%s", stderr)
	}
}
