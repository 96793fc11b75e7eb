package service

import (
	"context"
	"errors"
	"testing"
)

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
