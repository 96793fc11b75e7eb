package broker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
)

// TestMain checks that every server and connection the tests start is gone
// when they end. No goroutine needs to be ignored: Embedded.Shutdown waits
// for nats-server's goroutines, and goleak retries while closed client
// connections finish their own.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, brokertest.LeakOptions...)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEnsureStreamIsIdempotentAndDeduplicates(t *testing.T) {
	ctx := testContext(t)
	_, js := brokertest.Connect(t, brokertest.Start(t))
	cfg := broker.DefaultStreamConfig()

	first, err := broker.EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatalf("first EnsureStream: %v", err)
	}
	second, err := broker.EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatalf("second EnsureStream: %v", err)
	}
	if got, want := second.CachedInfo().Config, first.CachedInfo().Config; !reflect.DeepEqual(got, want) {
		t.Errorf("second EnsureStream changed the config:\n got %+v\nwant %+v", got, want)
	}
	got := second.CachedInfo().Config
	if got.Storage != jetstream.FileStorage || got.Retention != jetstream.LimitsPolicy ||
		got.Discard != jetstream.DiscardOld || got.MaxAge != cfg.MaxAge || got.Duplicates != cfg.Duplicates {
		t.Errorf("stream config = %+v, want file storage, limits retention, discard old, MaxAge %s, Duplicates %s",
			got, cfg.MaxAge, cfg.Duplicates)
	}

	// The outbox relay's retry: the same event id published twice.
	const subject = broker.SubjectPrefix + ".clio.erasure.requested"
	for i, wantDuplicate := range []bool{false, true} {
		ack, err := js.Publish(ctx, subject, []byte("event"), jetstream.WithMsgID("evt-1"))
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if ack.Duplicate != wantDuplicate {
			t.Errorf("publish %d: Duplicate = %v, want %v", i, ack.Duplicate, wantDuplicate)
		}
	}
	info, err := second.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestStreamSurvivesRestart(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	cfg := broker.DefaultStreamConfig()
	const subject = broker.SubjectPrefix + ".clio.consent.withdrawn"

	e := brokertest.StartAt(t, dir, false)
	nc, js := brokertest.Connect(t, e)
	if _, err := broker.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, subject, fmt.Appendf(nil, "event %d", i), jetstream.WithMsgID(fmt.Sprint("evt-", i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	nc.Close()
	e.Shutdown()
	e.Shutdown() // a second call is a no-op

	e = brokertest.StartAt(t, dir, false)
	_, js = brokertest.Connect(t, e)
	stream, err := js.Stream(ctx, cfg.Name)
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	if got := stream.CachedInfo().State.Msgs; got != 3 {
		t.Errorf("stream holds %d messages after restart, want 3", got)
	}
	if _, err := broker.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatalf("EnsureStream after restart: %v", err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatalf("last message: %v", err)
	}
	if got := string(msg.Data); got != "event 2" {
		t.Errorf("last message = %q, want %q", got, "event 2")
	}
}

func TestStreamConfigValidate(t *testing.T) {
	valid := broker.DefaultStreamConfig()
	tests := []struct {
		name   string
		modify func(*broker.StreamConfig)
		want   string // substring of the error; empty means valid
	}{
		{"default", func(*broker.StreamConfig) {}, ""},
		{"zero replicas means one", func(c *broker.StreamConfig) { c.Replicas = 0 }, ""},
		{"duplicates equal to max age", func(c *broker.StreamConfig) { c.Duplicates = c.MaxAge }, ""},
		{"empty name", func(c *broker.StreamConfig) { c.Name = "" }, "name is empty"},
		{"no subjects", func(c *broker.StreamConfig) { c.Subjects = nil }, "captures no subjects"},
		{"empty subject", func(c *broker.StreamConfig) { c.Subjects = []string{"lethe.>", ""} }, "subject 1 is empty"},
		{"zero max age", func(c *broker.StreamConfig) { c.MaxAge = 0 }, "MaxAge must be positive"},
		{"negative max age", func(c *broker.StreamConfig) { c.MaxAge = -time.Hour }, "MaxAge must be positive"},
		{"zero duplicates", func(c *broker.StreamConfig) { c.Duplicates = 0 }, "Duplicates must be positive"},
		{"duplicates beyond max age", func(c *broker.StreamConfig) { c.MaxAge, c.Duplicates = time.Hour, 2*time.Hour }, "exceeds MaxAge"},
		{"negative replicas", func(c *broker.StreamConfig) { c.Replicas = -1 }, "Replicas must not be negative"},
		{"erasure ledger as long as the stream", func(c *broker.StreamConfig) { c.ErasureLedgerMaxAge = c.MaxAge }, ""},
		{"zero erasure ledger max age", func(c *broker.StreamConfig) { c.ErasureLedgerMaxAge = 0 }, "ErasureLedgerMaxAge (0s) must be at least MaxAge"},
		{"erasure ledger shorter than the stream", func(c *broker.StreamConfig) { c.ErasureLedgerMaxAge = c.MaxAge - time.Hour }, "must be at least MaxAge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			cfg.Subjects = append([]string(nil), valid.Subjects...)
			tt.modify(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
			if !errors.Is(err, broker.ErrInvalidStreamConfig) {
				t.Errorf("Validate() = %v, does not wrap ErrInvalidStreamConfig", err)
			}
			// EnsureStream validates before it sends anything, so it
			// needs no server to refuse a bad config.
			if _, err := broker.EnsureStream(t.Context(), nil, cfg); !errors.Is(err, broker.ErrInvalidStreamConfig) {
				t.Errorf("EnsureStream() = %v, want ErrInvalidStreamConfig", err)
			}
		})
	}
}

func TestConnectRetriesUntilServerStarts(t *testing.T) {
	port := brokertest.FreePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)

	nc, err := broker.Connect(url, t.Name(), brokertest.Logger(t), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatalf("Connect with no server listening: %v", err)
	}
	t.Cleanup(nc.Close)
	if nc.IsConnected() {
		t.Fatal("connected before any server was started")
	}

	e, err := broker.StartEmbedded(broker.EmbeddedConfig{
		Host:     "127.0.0.1",
		Port:     port,
		StoreDir: t.TempDir(),
	}, brokertest.Logger(t))
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(e.Shutdown)

	eventually.Succeeds(t, "connected after the server started", func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("not connected; last error: %v", nc.LastError())
		}
		return nil
	})
}

func TestStartEmbeddedSyncsAlwaysByDefaultAndLogsThroughSlog(t *testing.T) {
	var logs logbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := broker.DefaultEmbeddedConfig(t.TempDir())
	cfg.Port = -1
	e, err := broker.StartEmbedded(cfg, logger)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(e.Shutdown)

	js := e.Server().JetStreamConfig()
	if js == nil || !js.SyncAlways {
		t.Errorf("JetStream config = %+v, want SyncAlways", js)
	}
	if !strings.HasPrefix(e.ClientURL(), "nats://127.0.0.1:") {
		t.Errorf("ClientURL() = %q, want loopback", e.ClientURL())
	}
	if out := logs.String(); !strings.Contains(out, "Server is ready") || !strings.Contains(out, "component=nats-server") {
		t.Errorf("server logs did not reach slog; got:\n%s", out)
	}
}

func TestStartEmbeddedReportsFailure(t *testing.T) {
	t.Run("no store dir", func(t *testing.T) {
		_, err := broker.StartEmbedded(broker.EmbeddedConfig{Host: "127.0.0.1", Port: -1}, brokertest.Logger(t))
		if err == nil || !strings.Contains(err.Error(), "StoreDir is required") {
			t.Fatalf("StartEmbedded() = %v, want StoreDir error", err)
		}
	})
	t.Run("port in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		start := time.Now()
		_, err = broker.StartEmbedded(broker.EmbeddedConfig{
			Host:     "127.0.0.1",
			Port:     l.Addr().(*net.TCPAddr).Port,
			StoreDir: t.TempDir(),
		}, brokertest.Logger(t))
		if err == nil || !strings.Contains(err.Error(), "did not start") {
			t.Fatalf("StartEmbedded() = %v, want a startup error", err)
		}
		// The fatal error is reported as it happens, not after the
		// readiness timeout.
		if elapsed := time.Since(start); elapsed > 5*time.Second {
			t.Errorf("StartEmbedded took %s to report the failure", elapsed)
		}
	})
}

// BenchmarkPublish measures acknowledged JetStream publishes per second with
// and without SyncAlways, the trade-off documented on
// broker.EmbeddedConfig.SyncAlways. Publishes are asynchronous with up to
// 256 awaiting their acknowledgement, as a relay draining a backlog would
// send them; one publish at a time mostly measures round trips.
func BenchmarkPublish(b *testing.B) {
	for _, syncAlways := range []bool{true, false} {
		b.Run(fmt.Sprintf("SyncAlways=%t", syncAlways), func(b *testing.B) {
			ctx := b.Context()
			_, js := brokertest.Connect(b, brokertest.StartAt(b, b.TempDir(), syncAlways))
			if _, err := broker.EnsureStream(ctx, js, broker.DefaultStreamConfig()); err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, 256)
			n := 0
			for b.Loop() {
				if _, err := js.PublishAsync("lethe.bench.erasure.requested", payload, jetstream.WithMsgID(fmt.Sprint(n))); err != nil {
					b.Fatal(err)
				}
				n++
				if n%256 == 0 {
					<-js.PublishAsyncComplete()
				}
			}
			<-js.PublishAsyncComplete()
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// A service starts with the NATS cluster: its first provisioning request
// reaches a node whose cluster has no meta leader yet, which leaves it
// unanswered. EnsureStream asks again, so the stream is provisioned once
// the cluster has elected its leader, within the caller's deadline,
// instead of failing when the one request's deadline ends.
func TestEnsureStreamWaitsForTheClusterToElectItsLeader(t *testing.T) {
	const nodes = 3
	var routes []*url.URL
	var clusterPorts []int
	for range nodes {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		clusterPorts = append(clusterPorts, port)
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", port)})
	}
	start := func(i int) *server.Server {
		return brokertest.Run(t, &server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "lethe-test", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:  routes,
		})
	}
	first := start(0)
	nc, err := nats.Connect(first.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	cfg := broker.DefaultStreamConfig()
	cfg.Replicas = nodes
	done := make(chan error, 1)
	go func() {
		_, err := broker.EnsureStream(ctx, js, cfg)
		done <- err
	}()
	// The first request is on its way to a cluster of one node, which has
	// no leader; only then do the others start.
	eventually.True(t, "the first request is sent", func() bool { return nc.Stats().OutMsgs > 0 })
	for i := 1; i < nodes; i++ {
		start(i)
	}
	if err := <-done; err != nil {
		t.Fatalf("EnsureStream with the cluster electing its leader: %v", err)
	}
}
