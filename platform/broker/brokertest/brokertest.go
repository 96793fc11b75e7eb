// Package brokertest runs a real embedded NATS server with JetStream inside
// a test, as nats-server's own test.RunServer does: a random port, a store
// under the test's temporary folder, shutdown at cleanup. Tests exercise the
// same broker code as production; there is no mock broker.
package brokertest

import (
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/lethe-privacy/lethe/platform/broker"
)

// LeakOptions are the goleak options of a test binary that runs embedded
// NATS servers. A stream that sources another (the erasure ledger sources
// the platform stream) sets its source up in a goroutine that waits for
// the server's answer with a timeout of its own and is not stopped by
// Shutdown; a test that ends within that wait leaves it running. It
// belongs to nats-server and ends by itself.
var LeakOptions = []goleak.Option{
	goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"),
}

// Start runs an embedded server on 127.0.0.1 with a random port and a fresh
// store, and shuts it down when the test ends.
//
// Writes are not synced to disk (SyncAlways off): tests gain an order of
// magnitude in publish speed and lose nothing, since a test never survives
// a power failure. This is for tests only; see [broker.EmbeddedConfig].
func Start(t testing.TB) *broker.Embedded {
	t.Helper()
	return StartAt(t, t.TempDir(), false)
}

// StartAt runs an embedded server on storeDir, so that a test can shut a
// server down and start another on the same store to check what survives a
// restart. The server listens on a new random port each time and is shut
// down when the test ends (shutting it down earlier is fine).
func StartAt(t testing.TB, storeDir string, syncAlways bool) *broker.Embedded {
	t.Helper()
	e, err := broker.StartEmbedded(broker.EmbeddedConfig{
		Host:       "127.0.0.1",
		Port:       -1,
		StoreDir:   storeDir,
		ServerName: "lethe-test",
		SyncAlways: syncAlways,
	}, Logger(t))
	if err != nil {
		t.Fatalf("start embedded NATS server: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

// Run starts a nats-server from opts as they are (a configuration file
// the test read, with its TLS, accounts and cluster block), quiet and
// without signal handlers, and shuts it down when the test ends.
func Run(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	return s
}

// Connect opens a client connection to e, and its JetStream context, and
// closes the connection when the test ends. The connection is established
// when Connect returns.
func Connect(t testing.TB, e *broker.Embedded) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := broker.Connect(e.ClientURL(), t.Name(), Logger(t))
	if err != nil {
		t.Fatalf("connect to embedded NATS server: %v", err)
	}
	t.Cleanup(nc.Close)
	// broker.Connect retries in the background rather than fail; a test
	// wants the failure now.
	if !nc.IsConnected() {
		t.Fatalf("connect to embedded NATS server at %s: not connected: %v", e.ClientURL(), nc.LastError())
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("JetStream context: %v", err)
	}
	return nc, js
}

// Logger returns a logger that writes Info and above to the test's log, so
// that server and connection messages appear beside a failure; in a
// benchmark, whose log is always printed, only Warn and above. Messages
// logged after the test has finished (a connection's closed callback runs
// asynchronously) are dropped: testing panics on a late t.Log.
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	level := slog.LevelInfo
	if _, ok := t.(*testing.B); ok {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// testWriter forwards one slog record per Write to t.Log.
type testWriter struct {
	t testing.TB

	mu   sync.Mutex
	done bool
}

// Write implements io.Writer for the slog handler.
func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// stop runs at cleanup, while t.Log is still allowed; holding the lock, it
// waits out a Write in progress.
func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}

// FreePort returns a loopback TCP port that nothing listens on, for a test
// that must restart a server on the same address.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
