package subscriber_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// TestRunRidesOutALostPull: when the server stops confirming a pull (the
// NATS node holding the consumer died while the connection, on another
// node, stayed up), Run does not give up: it pulls again and handles the
// events that follow. Here a proxy holds back everything the server sends
// for longer than two heartbeats while the connection stays open, which
// the client cannot tell from a lost pull.
func TestRunRidesOutALostPull(t *testing.T) {
	s := sdktest.StartServer(t)
	proxy := startStallingProxy(t, s.Addr().String())
	nc, err := nats.Connect("nats://"+proxy.addr, nats.PingInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), sdktest.StreamConfig()); err != nil {
		t.Fatal(err)
	}

	var handled counter
	logs := &syncLog{}
	cfg := config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			handled.add(ev.ID())
			return subscriber.Erased(), nil
		},
	})
	cfg.Heartbeat = 500 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	sdktest.Run(t, cfg)

	publish(t, js, newEvent("ev-1", contract.KindErasureRequested, 1), "ev-1")
	eventually.True(t, "the first event handled", func() bool { return handled.get("ev-1") == 1 })

	proxy.stall(true)
	eventually.True(t, "the lost pull noticed", func() bool { return strings.Contains(logs.String(), "no heartbeat") })
	proxy.stall(false)

	publish(t, js, newEvent("ev-2", contract.KindErasureRequested, 2), "ev-2")
	eventually.True(t, "the event after the lost pull handled", func() bool { return handled.get("ev-2") == 1 })
}

// stallingProxy forwards TCP connections to a server and can hold back
// what the server sends, without closing anything.
type stallingProxy struct {
	addr string
	mu   sync.Mutex
	gate *sync.Cond
	held bool
}

func startStallingProxy(t *testing.T, target string) *stallingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallingProxy{addr: ln.Addr().String()}
	p.gate = sync.NewCond(&p.mu)
	var conns sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.stall(false)
		conns.Wait()
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				return
			}
			conns.Go(func() {
				_, _ = io.Copy(server, client)
				server.Close()
			})
			conns.Go(func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := server.Read(buf)
					p.mu.Lock()
					for p.held {
						p.gate.Wait()
					}
					p.mu.Unlock()
					if n > 0 {
						if _, werr := client.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				client.Close()
			})
		}
	}()
	return p
}

// stall holds back (true) or releases (false) what the server sends.
func (p *stallingProxy) stall(held bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = held
	p.gate.Broadcast()
}

// syncLog is a log destination tests read while the subscriber writes.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
