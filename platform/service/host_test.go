package service

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/server"
)

// A production start refuses with every missing piece named in one error,
// the listener's and the outgoing connections' alike (docs/security.md),
// so that an operator does not find --tls-ca missing only on the second
// attempt. Nothing is started.
func TestProductionRefusalNamesEveryMissingPiece(t *testing.T) {
	f := Factory{Name: "dsar", New: func(Deps) (Service, error) {
		t.Fatal("a refused start built the service")
		return nil, nil
	}}
	cfg := server.Config{Profile: server.ProfileProduction, Addr: "127.0.0.1:0", TokensFile: "tokens.json"}
	err := startOne(context.Background(), f, cfg, Outgoing{NATSUser: "dsar"}, t.TempDir(),
		"nats://dsar:s3cret@nats:4222", "127.0.0.1:7404", broker.DefaultStreamConfig(), BackupConfig{})
	for _, want := range []string{
		"set --tls-cert and --tls-key",
		"refuses static tokens",
		"needs an authorization policy",
		"set --tls-ca",
		"refuses credentials in --nats-url",
		"--nats-user and --nats-password-file go together",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not say %q:\n%v", want, err)
		}
	}
}

func TestStoppedCleanly(t *testing.T) {
	failure := errors.New("store locked by another process")
	if err := StoppedCleanly(context.Background(), failure); !errors.Is(err, failure) {
		t.Fatalf("a failure nobody asked for = %v, want it kept", err)
	}
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if err := StoppedCleanly(stopped, failure); err != nil {
		t.Fatalf("a failure caused by the requested stop = %v, want nil", err)
	}
}

// A service process runs two Ps per CPU unless GOMAXPROCS in the
// environment chose the number, which it keeps.
func TestProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "")
	if got, want := Procs(), procsPerCPU*defaultProcs; got != want {
		t.Errorf("Procs() without GOMAXPROCS = %d, want %d", got, want)
	}
	t.Setenv("GOMAXPROCS", "3")
	if got := Procs(); got != defaultProcs {
		t.Errorf("Procs() with GOMAXPROCS set = %d, want the runtime's %d", got, defaultProcs)
	}
}
