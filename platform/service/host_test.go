package service

import (
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/server"
)

// A production start refuses with every missing piece named in one error,
// the listener's and the outgoing connections' alike (docs/security.md),
// so that an operator does not find --tls-ca missing only on the second
// attempt. Nothing is started.
func TestProductionRefusalNamesEveryMissingPiece(t *testing.T) {
	f := Factory{Name: "dsar", Neighbours: neighbours, New: func(Deps) (Service, error) {
		t.Fatal("a refused start built the service")
		return nil, nil
	}}
	args := []string{"--profile", "production", "--dev-tokens", "tokens.json", "--nats-user", "dsar",
		"--nats-url", "nats://dsar:s3cret@nats:4222", "--data", t.TempDir()}
	c, err := parseFlags(f, "127.0.0.1:0", args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = startOne(context.Background(), f, c)
	want := []string{
		"set --tls-cert and --tls-key",
		"refuses static tokens",
		"needs an authorization policy",
		"set --tls-ca",
		"refuses credentials in --nats-url",
		"--nats-user and --nats-password-file go together",
		"--consent-addr (LETHE_CONSENT_ADDR), --retention-addr (LETHE_RETENTION_ADDR)",
	}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("refusal does not say %q:\n%v", w, err)
		}
	}
	// Refusals, which a deployment's tests run on a manifest, names the
	// same pieces without starting anything.
	refused := Refusals(f, args)
	for _, w := range want {
		if refused == nil || !strings.Contains(refused.Error(), w) {
			t.Errorf("Refusals does not say %q:\n%v", w, refused)
		}
	}
}

// neighbours are the services a DSAR-like factory calls.
var neighbours = []Neighbour{{Name: "consent", DevAddr: "127.0.0.1:7401"}, {Name: "retention", DevAddr: "127.0.0.1:7403"}}

// A neighbour's address comes from its flag or its LETHE_ variable, the
// development profile falls back to the neighbour's own default address,
// production to none; --help lists the flags.
func TestNeighbourAddresses(t *testing.T) {
	f := Factory{Name: "dsar", Neighbours: neighbours}
	t.Setenv("LETHE_RETENTION_ADDR", "lethe-retention:7403")
	c, err := parseFlags(f, "", []string{"--consent-addr", "lethe-consent:7401"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, profile := range []string{server.ProfileDev, server.ProfileProduction} {
		addrs, refused := c.neighbours.resolve(profile, f.Neighbours)
		if len(refused) > 0 || addrs["consent"] != "lethe-consent:7401" || addrs["retention"] != "lethe-retention:7403" {
			t.Errorf("%s: addresses %v, refusals %v", profile, addrs, refused)
		}
	}
	t.Setenv("LETHE_RETENTION_ADDR", "")
	c, err = parseFlags(f, "", nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if addrs, refused := c.neighbours.resolve(server.ProfileDev, f.Neighbours); len(refused) > 0 || addrs["consent"] != "127.0.0.1:7401" {
		t.Errorf("dev: addresses %v, refusals %v; want the development defaults", addrs, refused)
	}
	if _, refused := c.neighbours.resolve(server.ProfileProduction, f.Neighbours); len(refused) != 1 ||
		!strings.Contains(refused[0].Error(), "--consent-addr (LETHE_CONSENT_ADDR), --retention-addr (LETHE_RETENTION_ADDR)") {
		t.Errorf("production without addresses: refusals %v, want one naming both", refused)
	}
	var help strings.Builder
	if _, err := parseFlags(f, "", []string{"--help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, name := range []string{"-consent-addr", "-retention-addr", "-registry-addr", "-tls-ca"} {
		if !strings.Contains(help.String(), name) {
			t.Errorf("--help does not list %s", name)
		}
	}
}

// The erasure ledger's max age comes from its flag or
// LETHE_ERASURE_LEDGER_MAX_AGE, and a value shorter than the platform
// stream's is refused before anything is provisioned.
func TestErasureLedgerMaxAge(t *testing.T) {
	f := Factory{Name: "consent"}
	c, err := parseFlags(f, "", nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.stream.ErasureLedgerMaxAge; got != broker.DefaultErasureLedgerMaxAge {
		t.Errorf("default erasure ledger max age = %s, want %s", got, broker.DefaultErasureLedgerMaxAge)
	}
	t.Setenv("LETHE_ERASURE_LEDGER_MAX_AGE", "9000h")
	if c, err = parseFlags(f, "", nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got := c.stream.ErasureLedgerMaxAge; got != 9000*time.Hour {
		t.Errorf("LETHE_ERASURE_LEDGER_MAX_AGE=9000h gave %s", got)
	}
	if c, err = parseFlags(f, "", []string{"--erasure-ledger-max-age", "24h"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := c.stream.Validate(); !errors.Is(err, broker.ErrInvalidStreamConfig) || !strings.Contains(err.Error(), "ErasureLedgerMaxAge") {
		t.Errorf("a ledger kept one day beside a 30-day stream: Validate() = %v", err)
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
