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
